"""Static (non-growing) baselines trained like a growth episode.

Each baseline is a fixed network trained from scratch with the environment's task, optimizer,
learning rate, batch size and augmentation for as many optimizer steps as a full-length
episode (``train_steps * (max_steps + 1)``), and reported as one row with the keys of
:data:`growenv.harness.episodes.ROW_FIELDS`:

- :func:`oracle_row`: the teacher's own architecture (teacher-student tasks);
- :func:`fixed_widths_row`: the env's network family at given hidden widths (e.g. the final
  architecture a growth policy reached, trained from scratch);
- :func:`small_cnn_row`: a plain small CNN (``Conv-ReLU-MaxPool`` stages, global average
  pooling, a linear head) of a chosen width, the model a practitioner would write by hand.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from growenv.data.tasks import TeacherNet
from growenv.env.growth_env import GrowthEnv
from growenv.training import evaluate, make_optimizer, train_steps

__all__ = [
    "fixed_widths_row",
    "forward_macs",
    "oracle_row",
    "small_cnn",
    "small_cnn_row",
    "small_cnn_width",
    "static_row",
]

NetBuilder = Callable[[GrowthEnv, torch.Generator], nn.Module]


def forward_macs(net: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-adds of one forward pass of one sample.

    Growing nets report their own count (``net.flops()``); other modules are counted with
    forward hooks on ``Conv2d`` (output positions x in-channels / groups x kernel area per
    output channel) and ``Linear`` layers, on one zero input of ``input_shape``.
    """
    if hasattr(net, "flops"):
        return int(net.flops())
    total = 0

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total += output[0].numel() * module.in_channels // module.groups * k
        else:
            total += module.in_features * module.out_features

    hooks = [
        m.register_forward_hook(count)
        for m in net.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    try:
        p = next(net.parameters())
        with torch.no_grad():
            net(torch.zeros((1, *input_shape), device=p.device, dtype=p.dtype))
    finally:
        for h in hooks:
            h.remove()
    return total


def static_row(
    env_kwargs: Mapping[str, Any],
    seed: int,
    build: NetBuilder,
    policy: str,
    total_steps: int | None = None,
    widths: str | Callable[[GrowthEnv], str] = "",
) -> dict[str, Any]:
    """Train the network ``build(env, generator)`` from scratch like an episode; one row.

    Parameters
    ----------
    env_kwargs
        :class:`~growenv.env.growth_env.GrowthEnv` keyword arguments (task, optimizer, lr,
        batch size,
        augmentation, episode length).
    seed
        The episode's task (:meth:`GrowthEnv.episode_task`: with a task distribution, the one
        ``reset(seed=seed)`` gives), and the seeds of the initialisation and of the
        minibatches (independent of the env's own).
    build
        Returns the network to train, on the env's device and dtype.
    policy
        The row's policy label.
    total_steps
        Optimizer steps; default ``train_steps * (max_steps + 1)``.
    widths
        The row's ``widths`` label, or a function of the env (after reset) that gives it.

    Returns
    -------
    dict
        A row with the keys :data:`growenv.harness.episodes.ROW_FIELDS`: ``step`` = the episode
        length, final losses and accuracies, parameters, forward MACs, and ``compute`` =
        training (3 x forward MACs per sample) plus one validation pass, as the env counts.
    """
    env = GrowthEnv(**env_kwargs)
    task = env.episode_task(seed)
    state = np.random.SeedSequence([int(seed), 0x0AC1E]).generate_state(2, dtype=np.uint32)
    init_gen = torch.Generator().manual_seed(int(state[0]))
    batch_gen = torch.Generator().manual_seed(int(state[1]))
    net = build(env, init_gen)
    steps = env.train_steps * (env.max_steps + 1) if total_steps is None else int(total_steps)
    if steps < 0:
        raise ValueError(f"total_steps: expected an int >= 0, got {total_steps!r}")
    opt = make_optimizer(net, env.optimizer_name, lr=env.lr)
    start = time.perf_counter()
    train_loss = train_steps(
        net,
        opt,
        task.train.x,
        task.train.y,
        task.loss,
        steps,
        env.batch_size,
        batch_gen,
        transform=env.augmentation(),
    )
    seconds_train = time.perf_counter() - start
    val_loss, val_acc = evaluate(net, task.val.x, task.val.y, task.loss)
    test_loss, test_acc = evaluate(net, task.test.x, task.test.y, task.loss)
    seconds_eval = time.perf_counter() - start - seconds_train
    fwd = forward_macs(net, task.input_shape)
    compute = 3 * fwd * steps * min(env.batch_size, len(task.train)) + fwd * len(task.val)
    return {
        "task": task.name,
        "policy": policy,
        "seed": int(seed),
        "step": env.max_steps,
        "action": -1,
        "action_name": policy,
        "grown_site": -1,
        "widths": widths(env) if callable(widths) else widths,
        "params": int(sum(p.numel() for p in net.parameters())),
        "flops": int(fwd),
        "train_loss": float(train_loss),
        "val_loss": float(val_loss),
        "val_accuracy": None if val_acc is None else float(val_acc),
        "test_loss": float(test_loss),
        "test_accuracy": None if test_acc is None else float(test_acc),
        "reward": math.nan,
        "gamma": math.nan,
        "loss_drop": math.nan,
        "compute": float(compute),
        "seconds_train": seconds_train,
        "seconds_statistics": 0.0,
        "seconds_search": 0.0,
        "seconds_evaluate": seconds_eval,
        "seconds_policy": 0.0,
        "seconds": seconds_train + seconds_eval,
    }


def _parse_widths(widths: Sequence[int] | str) -> list[int]:
    if isinstance(widths, str):
        try:
            widths = [int(w) for w in widths.split("-")]
        except ValueError:
            raise ValueError(f"widths: expected e.g. '4-8-16', got {widths!r}") from None
    widths = list(widths)
    if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 0 for w in widths):
        raise ValueError(f"widths: expected non-negative ints, got {widths!r}")
    return widths


def fixed_widths_row(
    env_kwargs: Mapping[str, Any],
    seed: int,
    widths: Sequence[int] | str,
    policy: str = "static",
    total_steps: int | None = None,
) -> dict[str, Any]:
    """The env's network family with fixed hidden ``widths`` (list or ``"4-4-52"`` as in a
    result row), trained from scratch like an episode (see :func:`static_row`)."""
    widths = _parse_widths(widths)
    if len(widths) != int(env_kwargs.get("hidden_layers", 2)):
        raise ValueError(
            f"widths: expected {env_kwargs.get('hidden_layers', 2)} widths (hidden_layers), "
            f"got {widths}"
        )
    label = "-".join(str(w) for w in widths)
    return static_row(
        env_kwargs,
        seed,
        lambda env, gen: env.build_net(widths, gen),
        policy,
        total_steps,
        widths=label,
    )


def small_cnn(in_channels: int, width: int, out_features: int, stages: int = 3) -> nn.Sequential:
    """A plain CNN: ``stages`` x (3x3 conv with padding 1, ReLU, 2x2 max pooling), global
    average pooling and a linear head; every conv has ``width`` channels."""
    sizes = {"in_channels": in_channels, "width": width, "out_features": out_features}
    for name, v in {**sizes, "stages": stages}.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
    layers: list[nn.Module] = []
    channels = in_channels
    for _ in range(stages):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, out_features)]
    return nn.Sequential(*layers)


def small_cnn_width(
    target_params: float, in_channels: int, out_features: int, stages: int = 3
) -> int:
    """The width of :func:`small_cnn` whose parameter count is closest to ``target_params``."""
    if not target_params > 0:
        raise ValueError(f"target_params: expected a positive number, got {target_params!r}")

    def params(w: int) -> int:
        first = in_channels * 9 * w + w
        return first + (stages - 1) * (9 * w * w + w) + w * out_features + out_features

    width = 1
    while params(width + 1) <= target_params:
        width += 1
    up = width + 1
    return up if abs(params(up) - target_params) < abs(params(width) - target_params) else width


def small_cnn_row(
    env_kwargs: Mapping[str, Any],
    seed: int,
    width: int,
    policy: str = "small-cnn",
    stages: int = 3,
    total_steps: int | None = None,
) -> dict[str, Any]:
    """:func:`small_cnn` of ``width`` channels on the env's image task, trained from scratch
    like an episode (see :func:`static_row`)."""

    def build(env: GrowthEnv, gen: torch.Generator) -> nn.Module:
        shape = env.task.input_shape
        if len(shape) != 3:
            raise ValueError(
                f"small_cnn_row: needs image inputs (C, H, W); task {env.task.name!r} has "
                f"inputs of shape {tuple(shape)} (use net='conv' with an image task)"
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(gen.initial_seed()))
            net = small_cnn(shape[0], width, env.task.out_features, stages)
        return net.to(device=env.device, dtype=env.dtype)

    return static_row(
        env_kwargs, seed, build, policy, total_steps, widths="-".join([str(width)] * stages)
    )


def oracle_row(
    env_kwargs: Mapping[str, Any], seed: int, total_steps: int | None = None
) -> dict[str, Any]:
    """Train the teacher's own architecture from scratch: the reference ("oracle") row.

    Builds the environment's teacher-student task (the one ``env.reset(seed=seed)`` gives, so
    with a task distribution it is the episode's teacher), a fresh
    :class:`~growenv.data.tasks.TeacherNet`
    with the teacher's sizes, skip connection and activation, initialised from ``seed``
    (a generator independent of the teacher's), and trains it with the environment's
    optimizer, learning rate and batch size for ``total_steps`` optimizer steps (default
    ``train_steps * (max_steps + 1)``: as many as a full-length episode).

    Parameters
    ----------
    env_kwargs
        :class:`~growenv.env.growth_env.GrowthEnv` keyword arguments; the task must be
        teacher-student.
    seed
        Seed of the initialisation and of the minibatches.
    total_steps
        Optimizer steps; default as above.

    Returns
    -------
    dict
        A row with the keys :data:`~growenv.harness.episodes.ROW_FIELDS`
        (``policy="oracle"``, ``step`` = the episode length, final train/val/test losses,
        parameters, FLOPs). ``compute`` counts training
        (3 x forward MACs per sample) and one validation pass, as the env does.

    Raises
    ------
    ValueError
        When the task is not teacher-student (there is no known architecture).
    """

    def build(env: GrowthEnv, gen: torch.Generator) -> torch.nn.Module:
        task = env.task
        if task.teacher is None or not isinstance(task.teacher, TeacherNet):
            raise ValueError(f"oracle_row: needs a teacher-student task, got {task.name!r}")
        teacher = task.teacher
        return TeacherNet(
            task.in_features,
            [layer.out_features for layer in teacher.hidden],
            task.out_features,
            skip=teacher.skip is not None,
            activation=task.info.get("activation", "selu"),
            generator=gen,
        ).to(device=env.device, dtype=env.dtype)

    def widths(env: GrowthEnv) -> str:
        return "-".join(str(m.out_features) for m in env.task.teacher.hidden)

    return static_row(env_kwargs, seed, build, "oracle", total_steps, widths=widths)
