"""GrowthEnv: the Gymnasium environment for growth decisions."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from growenv.amplitude import AmplitudeResult, amplitude_search, default_gammas
from growenv.data.tasks import TASK_NAMES, Split, Task, TeacherStudentDistribution, make_task
from growenv.env import features
from growenv.nets.conv.net import GrowingConvNet
from growenv.nets.mlp import costs
from growenv.nets.mlp.growth import apply_growth
from growenv.nets.mlp.net import GrowingMLP
from growenv.nets.mlp.report import BottleneckReport, bottleneck
from growenv.training import evaluate, make_optimizer, train_steps
from growenv.validation import boolean, choice, integer, real

TaskSource = str | Task | TeacherStudentDistribution | Callable[[np.random.Generator], Task]
DISTRIBUTION_NAME = "teacher_student_distribution"
# A site whose best neuron would gain less than this fraction of the loss (lambda_1^2 / L) is
# masked: such eigenvalues are rounding noise of float32 statistics, not capacity to add.
GAIN_RESOLUTION = 1e-7
OBS_BOUND = 1e6  # features are logs and symlogs; this bound is never reached in practice
PHASES = ("train", "statistics", "search", "evaluate")  # statistics includes the solve


def _image_shape(task: Task) -> tuple[int, int, int] | None:
    """``(C, H, W)`` of the task's images (inputs of that shape, or flattened ones with
    ``info['image_shape']``), or ``None``."""
    shape = task.input_shape if len(task.input_shape) == 3 else task.info.get("image_shape")
    return None if shape is None or len(shape) != 3 else tuple(int(d) for d in shape)


def _as_images(task: Task) -> Task:
    """The task with inputs shaped as images ``(n, C, H, W)`` (for conv nets)."""
    shape = _image_shape(task)
    if shape is None:
        raise ValueError(
            f"net: 'conv' needs image inputs (C, H, W); task {task.name!r} has inputs of "
            f"shape {task.input_shape} and no info['image_shape']"
        )
    splits = {k: Split(v.x.reshape(len(v), *shape), v.y) for k, v in task.splits().items()}
    return dataclasses.replace(task, input_shape=shape, **splits)


def _cast(task: Task, dtype: torch.dtype) -> Task:
    """The task with floating-point inputs (and regression targets) in ``dtype``."""
    if dtype == torch.float32:
        return task

    def cast(split: Split) -> Split:
        y = split.y.to(dtype) if split.y.is_floating_point() else split.y
        return Split(split.x.to(dtype), y)

    return dataclasses.replace(task, **{k: cast(v) for k, v in task.splits().items()})


class GrowthEnv(gym.Env):
    """Decide where and when a network grows.

    ## Description
    An episode trains a small MLP on a task (default: teacher-student regression, Douka et
    al. 2025: a random SELU teacher 20 -> 50 -> 50 -> 1 with a skip from the input to the
    second hidden state; the student starts at width 1 per hidden layer). Each step the
    agent picks a hidden site to grow by ``neurons_per_growth`` TINY neurons (with the
    amplitude factor found by a line search on the task's statistics split), or skips
    growth, or stops; then the network trains for ``train_steps`` optimizer steps and the
    TINY statistics of every site are measured for the next observation.

    ## Action Space
    ``Discrete(max_sites + 2)``: ``i < max_sites`` grows site ``i`` (hidden state ``i``),
    ``max_sites`` skips growth (train only), ``max_sites + 1`` stops the episode.
    :meth:`action_masks` gives the valid actions (sites that exist, whose best neuron
    gains more than float32 noise, ``lambda_1^2 > 1e-7 L``, and that fit the parameter
    budget); a masked action raises ``ValueError``, or
    with ``invalid_action="skip"`` is replaced by the skip action (``info["invalid_action"]``
    says so; for learners without masks and for SB3's env checker, which samples actions
    blindly).

    ## Observation Space
    ``Box(-1e6, 1e6, (max_sites * 13 + 10,), float32)``: per site (row-major, zero rows
    for sites the net does not have) then global features. Gains are divided by the current
    statistics loss ``L``; ``symlog(x) = sign(x) log(1 + |x|)``.

    | index (per site s: 13 s + i) | feature | range |
    |---|---|---|
    | 0 | site present (mask) | {0, 1} |
    | 1 | log(1 + width) | [0, inf) |
    | 2 | symlog(d / L), best-update gain | [0, inf) |
    | 3-5 | symlog(lambda_k^2 / L), k = 1..3 | [0, inf) |
    | 6 | symlog(sum of significant lambda^2 / L) | [0, inf) |
    | 7 | symlog(Psi / L), bottleneck | [0, inf) |
    | 8 | symlog(gain of the candidate / L) | [0, inf) |
    | 9 | symlog((gain / L) / (added params / params)) | [0, inf) |
    | 10 | symlog(added params / params) | [0, inf) |
    | 11 | symlog(added FLOPs / FLOPs) | [0, inf) |
    | 12 | significant eigenvalues / neurons per growth (<= 4) | [0, 4] |

    | index (13 max_sites + i) | global feature | range |
    |---|---|---|
    | 0 | log train loss (mean of the last training phase) | R |
    | 1 | log validation loss | R |
    | 2 | validation accuracy (0 for regression) | [0, 1] |
    | 3 | log parameters | [0, inf) |
    | 4 | log FLOPs (multiply-adds per sample) | [0, inf) |
    | 5 | compute used / max_compute (log10(MACs) / 20 without a budget) | [0, inf) |
    | 6 | parameter budget left / max_params (1 without a budget) | [0, 1] |
    | 7 | step / max_steps | [0, 1] |
    | 8 | log(val loss / train loss) | R |
    | 9 | symlog of the last step's relative val-loss decrease | R |

    ## Rewards
    ``r = log(L_val(t-1) / L_val(t)) - cost_per_param * added params - cost_per_flop *
    added FLOPs``: the relative (logarithmic) validation-loss decrease minus the cost of
    growth (zero by default, recovering pure loss). Stopping gives 0. The log ratio
    telescopes: an episode's undiscounted return is ``log(L_val(0) / L_val(T))`` minus the
    costs, so maximising it means reaching the lowest final loss at the given budget.
    ``reward="relative"`` gives ``(L_val(t-1) - L_val(t)) / L_val(t-1)`` instead, which does
    not telescope (an agent can collect more of it by delaying growth).

    ## Starting State
    A task (fixed, or drawn from a distribution by the reset seed), a student with
    ``start_width`` neurons per hidden layer, trained ``train_steps`` steps.

    ## Episode End
    Terminated on the stop action or when the compute budget is spent; truncated after
    ``max_steps`` steps.

    ## Arguments
    ``task`` ("teacher_student", "multi_sin", "digits", "cifar10",
    "teacher_student_distribution", a ``Task``, a ``TeacherStudentDistribution`` or a
    callable ``rng -> Task``), ``task_kwargs``, ``device``, ``hidden_layers``,
    ``start_width``, ``activation``, ``max_sites``, ``neurons_per_growth`` (int or "auto":
    the significant ones), ``train_steps``, ``batch_size``, ``optimizer``, ``lr``,
    ``max_steps``, ``max_params``, ``max_compute`` (MACs), ``cost_per_param``,
    ``cost_per_flop``, ``reward`` ("log_ratio" or "relative"), ``method`` ("tiny",
    "gradmax", "random"), ``invalid_action`` ("raise" or "skip"), ``dtype`` ("float32" or
    "float64": network, data and statistics), ``net`` ("mlp", or "conv": a
    :class:`~growenv.nets.conv.net.GrowingConvNet` with ``hidden_layers`` stages of
    ``start_width`` channels, stride 1 then 2, on image tasks), ``kernel`` ("full" or
    "restricted" TINY channels for conv nets), ``augment`` (random crop with padding 4 and
    horizontal flip of the training minibatches of image tasks), ``render_mode``.

    ## Version History
    * v0: initial version.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(
        self,
        task: TaskSource = "teacher_student",
        task_kwargs: dict | None = None,
        device: str | torch.device = "cpu",
        hidden_layers: int = 2,
        start_width: int = 1,
        activation: str = "selu",
        max_sites: int = 4,
        neurons_per_growth: int | str = 4,
        train_steps: int = 100,
        batch_size: int = 128,
        optimizer: str = "adam",
        lr: float = 3e-3,
        max_steps: int = 20,
        max_params: int | None = None,
        max_compute: float | None = None,
        cost_per_param: float = 0.0,
        cost_per_flop: float = 0.0,
        reward: str = "log_ratio",
        method: str = "tiny",
        invalid_action: str = "raise",
        dtype: str | torch.dtype = "float32",
        net: str = "mlp",
        kernel: str = "full",
        augment: bool = False,
        render_mode: str | None = None,
    ) -> None:
        super().__init__()
        self.hidden_layers = integer("hidden_layers", hidden_layers, 1)
        self.max_sites = integer("max_sites", max_sites, 1)
        if self.hidden_layers > self.max_sites:
            raise ValueError(
                f"max_sites: must be >= hidden_layers ({self.hidden_layers}), got {max_sites}"
            )
        self.start_width = integer("start_width", start_width, 0)
        if neurons_per_growth != "auto":
            neurons_per_growth = integer("neurons_per_growth", neurons_per_growth, 1)
        self.neurons_per_growth = neurons_per_growth
        self.train_steps = integer("train_steps", train_steps, 0)
        self.batch_size = integer("batch_size", batch_size, 1)
        self.max_steps = integer("max_steps", max_steps, 1)
        self.max_params = None if max_params is None else integer("max_params", max_params, 1)
        self.max_compute = real("max_compute", max_compute, 1.0, allow_none=True)
        self.cost_per_param = real("cost_per_param", cost_per_param)
        self.cost_per_flop = real("cost_per_flop", cost_per_flop)
        self.reward_kind = choice("reward", reward, ("log_ratio", "relative"))
        self.lr = real("lr", lr, 1e-12)
        self.method = choice("method", method, ("tiny", "gradmax", "random"))
        self.invalid_action = choice("invalid_action", invalid_action, ("raise", "skip"))
        self.net_kind = choice("net", net, ("mlp", "conv"))
        self.kernel = choice("kernel", kernel, ("full", "restricted"))
        self.augment = boolean("augment", augment)
        if net == "conv" and task == "cifar10":
            task_kwargs = {"flatten": False, **(task_kwargs or {})}
        dtypes = {"float32": torch.float32, "float64": torch.float64}
        if isinstance(dtype, str):
            if dtype not in dtypes:
                raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
            dtype = dtypes[dtype]
        if dtype not in dtypes.values():
            raise ValueError(f"dtype: expected torch.float32 or torch.float64, got {dtype!r}")
        self.dtype = dtype
        self.optimizer_name = optimizer
        self.activation = activation
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode: expected one of {self.metadata['render_modes']} or None, "
                f"got {render_mode!r}"
            )
        self.render_mode = render_mode
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device: CUDA was requested but torch.cuda.is_available() is False")
        self._task_source = self._resolve_task_source(task, task_kwargs or {})
        self._fixed_task: Task | None = None

        n_obs = self.max_sites * len(features.SITE_FEATURES) + len(features.GLOBAL_FEATURES)
        self.observation_space = gym.spaces.Box(-OBS_BOUND, OBS_BOUND, (n_obs,), np.float32)
        self.action_space = gym.spaces.Discrete(self.max_sites + 2)
        self.skip_action = self.max_sites
        self.stop_action = self.max_sites + 1
        self.net: GrowingMLP | GrowingConvNet | None = None
        self.task: Task | None = None

    # ------------------------------------------------------------------ tasks
    def _resolve_task_source(self, task: TaskSource, task_kwargs: dict) -> Callable:
        if isinstance(task, Task):
            if task_kwargs:
                raise ValueError("task_kwargs: not used when task is a Task instance")
            return lambda rng: task
        if isinstance(task, TeacherStudentDistribution):
            return lambda rng: task.sample(rng, **task_kwargs)
        if isinstance(task, str):
            if task == DISTRIBUTION_NAME:
                # distribution fields (depth, width, seeds, ...) build the distribution; the
                # rest (n_train, noise_std, ...) are passed to every teacher_student draw
                fields = {f.name for f in dataclasses.fields(TeacherStudentDistribution)}
                dist_kwargs = {k: v for k, v in task_kwargs.items() if k in fields}
                overrides = {k: v for k, v in task_kwargs.items() if k not in fields}
                dist = TeacherStudentDistribution(**dist_kwargs)
                dist.sample(np.random.default_rng(0), **overrides)  # bad overrides fail now
                return lambda rng: dist.sample(rng, **overrides)
            if task not in TASK_NAMES:
                raise ValueError(
                    f"task: expected one of {(*TASK_NAMES, DISTRIBUTION_NAME)}, a Task, a "
                    f"TeacherStudentDistribution or a callable, got {task!r}"
                )
            built = make_task(task, **task_kwargs)  # fixed task: build once, errors early
            return lambda rng: built
        if callable(task):
            return task
        raise TypeError(f"task: expected a name, Task or callable, got {type(task).__name__}")

    # ------------------------------------------------------------------ api
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.net = self._start_episode()
        self.optimizer = make_optimizer(self.net, self.optimizer_name, lr=self.lr)
        self._train_and_measure()
        return self._observation(), self._info()

    def episode_task(self, seed: int) -> Task:
        """The task (on the env's device and dtype) that ``reset(seed=seed)`` gives, drawn
        without training a network (static baselines train their own, see
        :mod:`~growenv.harness.baselines`); afterwards :meth:`build_net` builds nets for it. Call
        :meth:`reset` before stepping."""
        super().reset(seed=int(seed))
        self._start_episode()
        self.net = None
        return self.task

    def _start_episode(self) -> GrowingMLP:
        """Draw the task and the generators from ``np_random``, reset the counters, and
        return the initial student (the lockstep vector env copies it into its stack)."""
        task = self._task_source(self.np_random)
        if not isinstance(task, Task):
            raise TypeError(f"task: the task source returned {type(task).__name__}, not a Task")
        task = _as_images(task) if self.net_kind == "conv" else task.flattened()
        self.task = _cast(task.to(self.device), self.dtype)
        torch_seed = int(self.np_random.integers(2**62))
        self._gen = torch.Generator().manual_seed(torch_seed)
        init_gen = torch.Generator().manual_seed(torch_seed + 1)
        widths = [max(self.start_width, 1 if self.net_kind == "conv" else 0)] * self.hidden_layers
        net = self.build_net(widths, init_gen)
        self.step_count = 0
        self.compute = 0.0
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.compute_by_phase = dict.fromkeys(PHASES, 0.0)
        self.history: list[dict] = []
        self._last_improvement = 0.0
        self._val_loss = None
        self._gamma = 0.0
        self._loss_drop = 0.0
        self._grown_site = -1
        self._input_factors = None
        return net

    def build_net(
        self, widths: list[int], generator: torch.Generator | None = None
    ) -> GrowingMLP | GrowingConvNet:
        """A fresh student with hidden ``widths`` for the current task, built as this env
        builds its episodes' networks (conv: stride 1 then 2; the env's activation, device and
        dtype). Static baselines of a given size use it (:mod:`~growenv.harness.baselines`)."""
        if self.task is None:
            raise RuntimeError("build_net: call reset() first (the task sets the input size)")
        if self.net_kind == "conv":
            channels, height, width = self.task.input_shape
            net = GrowingConvNet(
                channels,
                list(widths),
                self.task.out_features,
                stride=[1] + [2] * (len(widths) - 1),
                activation=self.activation,
                image_size=(height, width),
                device=self.device,
                generator=generator,
            )
        else:
            net = GrowingMLP(
                self.task.in_features,
                list(widths),
                self.task.out_features,
                activation=self.activation,
                device=self.device,
                generator=generator,
            )
        return net.to(self.dtype)

    def step(self, action):
        if self.net is None:
            raise RuntimeError("step: call reset() before step()")
        action, invalid = self._validate_action(action)
        if action == self.stop_action:
            return self._stop()
        before = self._begin_step()
        if action < self.max_sites:
            self._grow(action)
        self._train_and_measure()
        return self._end_step(before, invalid)

    def _validate_action(self, action) -> tuple[int, bool]:
        """The action to take and whether the given one was masked (or raise)."""
        action = int(action)
        if not 0 <= action < self.action_space.n:
            raise ValueError(f"action: expected 0 <= action < {self.action_space.n}, got {action}")
        mask = self.action_masks()
        invalid = not mask[action]
        if invalid and self.invalid_action == "skip":
            action = self.skip_action
        elif invalid:
            raise ValueError(
                f"action: {action} ({self.describe_action(action)}) is masked in this state; "
                f"valid actions are {np.flatnonzero(mask).tolist()} (see action_masks())"
            )
        return action, invalid

    def _stop(self):
        self.step_count += 1
        info = self._info(episode_end=True)
        info["invalid_action"] = False
        return self._observation(), 0.0, True, False, info

    def _begin_step(self) -> tuple[int, int, float]:
        self._gamma, self._loss_drop, self._grown_site = 0.0, 0.0, -1
        return self.net.num_parameters(), self.net.flops(), self._val_loss

    def _end_step(self, before: tuple[int, int, float], invalid: bool):
        params_before, flops_before, prev_val = before
        self.step_count += 1
        added_params = self.net.num_parameters() - params_before
        added_flops = self.net.flops() - flops_before
        prev, now = max(prev_val, 1e-12), max(self._val_loss, 1e-12)
        if self.reward_kind == "log_ratio":
            improvement = float(np.log(prev / now))
        else:
            improvement = (prev - now) / prev
        self._last_improvement = improvement
        reward = improvement - self.cost_per_param * added_params - self.cost_per_flop * added_flops
        terminated = self.max_compute is not None and self.compute >= self.max_compute
        truncated = self.step_count >= self.max_steps and not terminated
        info = self._info(episode_end=terminated or truncated)
        info["invalid_action"] = invalid
        return self._observation(), float(reward), bool(terminated), bool(truncated), info

    def action_masks(self) -> np.ndarray:
        """Valid actions: existing sites whose best neuron gains more than rounding noise
        (``lambda_1^2 > 1e-7 L``) and whose candidate fits the parameter budget."""
        mask = np.zeros(self.action_space.n, dtype=bool)
        mask[self.skip_action] = mask[self.stop_action] = True
        if self.net is None:
            return mask
        budget = None if self.max_params is None else self.max_params - self.net.num_parameters()
        floor = GAIN_RESOLUTION * abs(self._stats_loss)
        for site in range(self.net.num_sites):
            ok = self._site_lambda1[site] ** 2 > floor
            if budget is not None:
                ok = ok and self._added_params[site] <= budget
            mask[site] = ok
        return mask

    def describe_action(self, action: int) -> str:
        if action == self.skip_action:
            return "skip growth"
        if action == self.stop_action:
            return "stop"
        return f"grow site {action}"

    def evaluate_candidates(self) -> dict[str, np.ndarray]:
        """Real loss drop of every candidate after its gamma search (costly: one search each).

        Returns ``{"loss_drop": (max_sites,), "gamma": (max_sites,)}``; invalid sites get
        ``-inf`` drop. The search runs on the statistics split and is counted in compute.
        """
        drops = np.full(self.max_sites, -np.inf)
        gammas = np.zeros(self.max_sites)
        mask = self.action_masks()
        for site in range(self.net.num_sites):
            if not mask[site]:
                continue
            result = self._search(site)
            drops[site], gammas[site] = float(result.loss_drop), float(result.gamma)
        return {"loss_drop": drops, "gamma": gammas}

    # ------------------------------------------------------------------ internals
    def _candidate(self, site: int):
        k = None if self.neurons_per_growth == "auto" else self.neurons_per_growth
        return self.report.sites[site].candidate(k, method=self.method, generator=self._gen)

    def evaluate_candidate(self, site: int) -> AmplitudeResult:
        """One amplitude (gamma) search for site ``site``'s candidate, without growing.

        The search runs on the task's statistics split and is counted in the episode's
        compute (phase ``"search"``) and wall time, as a growth step's search is.

        Parameters
        ----------
        site
            A site of the current network (``0 <= site < net.num_sites``).

        Returns
        -------
        AmplitudeResult
            The chosen ``gamma``, the real ``loss_drop`` at it, and ``candidate`` (the new
            neurons that :func:`~growenv.nets.mlp.growth.apply_growth` would add).
        """
        if self.net is None:
            raise RuntimeError("evaluate_candidate: call reset() first")
        integer("site", site, 0, self.net.num_sites - 1)
        return self._search(int(site))

    def _search(self, site: int) -> AmplitudeResult:
        start = time.perf_counter()
        cand = self._candidate(site)
        stats = self.task.stats
        result = amplitude_search(self.net, cand, stats.x, stats.y, loss=self.task.loss)
        self.seconds["search"] += time.perf_counter() - start
        self._account_search(site)
        result.candidate = cand
        return result

    def _account_search(self, site: int) -> None:
        gammas, n = len(default_gammas()), len(self.task.stats)
        if self.net_kind == "conv":  # upper bound: the whole forward for every amplitude
            macs = self.net.flops() * gammas * n
        else:
            macs = costs.amplitude_macs(self.net.layer_sizes, site, gammas, n)
        self._add_compute("search", macs)

    def _grow(self, site: int) -> None:
        result = self._search(site)
        apply_growth(self.net, result.candidate, result.gamma, optimizer=self.optimizer)
        self._record_growth(site, float(result.gamma), float(result.loss_drop))

    def _record_growth(self, site: int, gamma: float, loss_drop: float) -> None:
        self._gamma, self._loss_drop, self._grown_site = gamma, loss_drop, site

    def _add_compute(self, phase: str, macs: float) -> None:
        self.compute += macs
        self.compute_by_phase[phase] += macs

    def _train_and_measure(self) -> None:
        task = self.task
        t0 = time.perf_counter()
        train_loss = train_steps(
            self.net,
            self.optimizer,
            task.train.x,
            task.train.y,
            task.loss,
            self.train_steps,
            self.batch_size,
            self._gen,
            transform=self.augmentation(),
        )
        t1 = time.perf_counter()
        self.report: BottleneckReport = bottleneck(
            self.net,
            task.stats.x,
            task.stats.y,
            loss=task.loss,
            input_factors=self._input_factors,
            kernel=self.kernel,
            raw_correlation=self.method == "gradmax",
        )
        # the statistics split is fixed for the episode, so is its input covariance
        self._input_factors = self.report.input_factors
        t2 = time.perf_counter()
        val_loss, val_acc = evaluate(self.net, task.val.x, task.val.y, task.loss)
        sites = self.report.sites
        rank = max([s.eigenvalues.numel() for s in sites] + [features.TOP_K])
        rows = [
            torch.cat(
                [
                    torch.stack([s.update_gain, s.bottleneck, s.num_significant.to(s.bottleneck)]),
                    torch.nn.functional.pad(s.eigenvalues, (0, rank - s.eigenvalues.numel())),
                ]
            )
            for s in sites
        ]
        scalars = torch.stack([train_loss.to(val_loss), self.report.loss.to(val_loss), val_loss])
        # one transfer of everything the observation needs
        host = torch.stack(rows).double().cpu().numpy() if rows else np.zeros((0, 3 + rank))
        train_host, stats_host, val_host = scalars.double().cpu().numpy()
        t3 = time.perf_counter()
        self.seconds["train"] += t1 - t0
        self.seconds["statistics"] += t2 - t1
        self.seconds["evaluate"] += t3 - t2
        self._absorb_measurement(
            train_loss=float(train_host),
            stats_loss=float(stats_host),
            val_loss=float(val_host),
            val_acc=None if val_acc is None else float(val_acc),
            site_table=host,
            ranks=np.array([s.eigenvalues.numel() for s in sites], dtype=float),
        )

    def augmentation(self) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None:
        """The transform of training minibatches, ``(x, generator) -> x``: random crop
        (padding 4) and horizontal flip when ``augment=True`` (image tasks), else ``None``.
        Static baselines train with it so that they see the data the env's nets see."""
        if not self.augment:
            return None
        shape = _image_shape(self.task)
        if shape is None:
            raise ValueError(f"augment: task {self.task.name!r} has no image inputs to augment")
        from growenv.data.cifar import augment

        return lambda xb, gen: augment(xb, gen, image_shape=shape)

    _augmentation = augmentation  # alias until the policies and harness use the public name

    def _absorb_measurement(
        self,
        train_loss: float,
        stats_loss: float,
        val_loss: float,
        val_acc: float | None,
        site_table: np.ndarray,
        ranks: np.ndarray,
    ) -> None:
        """Book the compute of a train + measure phase and store what the observation needs.

        ``site_table`` rows (one per site): update gain d, bottleneck Psi, number of
        significant eigenvalues, then the eigenvalues (zero padded); ``ranks``: how many
        eigenvalues each site has (the most neurons one growth can add there).
        """
        sizes, task = self.net.layer_sizes, self.task
        samples = self.train_steps * min(self.batch_size, len(task.train))
        if self.net_kind == "conv":
            from growenv.nets.conv.statistics import conv_statistics_macs

            forward = self.net.flops()
            self._add_compute("train", 3 * forward * samples)
            stats = conv_statistics_macs(self.net, len(task.stats), self.kernel)
            self._add_compute("statistics", stats)
            self._add_compute("evaluate", forward * len(task.val))
        else:
            self._add_compute("train", costs.training_macs(sizes, samples))
            self._add_compute(
                "statistics",
                costs.statistics_macs(sizes, len(task.stats)) + costs.solve_macs(sizes),
            )
            self._add_compute("evaluate", costs.forward_macs(sizes) * len(task.val))
        self._stats_loss = stats_loss
        self._train_loss = train_loss if self.train_steps else stats_loss
        self._val_loss = val_loss
        self._val_acc = val_acc
        n = site_table.shape[0]
        self._update_gain, self._psi, self._num_sig = site_table.T[:3]
        lam = site_table[:, 3:]
        self._lam = lam
        self._site_lambda1 = lam[:, 0] if n else np.zeros(0)
        k = (
            self._num_sig
            if self.neurons_per_growth == "auto"
            else np.full(n, float(self.neurons_per_growth))
        )
        # a candidate adds min(K, rank) neurons: rank(N) <= width of the next layer
        k = np.maximum(np.minimum(k, ranks), 1)
        self._neurons = k
        net = self.net
        self._added_params = np.array([net.added_parameters(j, int(k[j])) for j in range(n)])
        self._added_flops = np.array([net.added_flops(j, int(k[j])) for j in range(n)])
        first_k = np.arange(lam.shape[1])[None, :] < k[:, None]
        self._gains = self._update_gain + self.net.slope0 * (lam**2 * first_k).sum(1)
        self.history.append(
            {
                "step": self.step_count,
                "params": self.net.num_parameters(),
                "val_loss": self._val_loss,
                "widths": list(self.net.hidden_widths),
            }
        )

    def _observation(self) -> np.ndarray:
        n = self.net.num_sites
        site = features.site_features(
            widths=np.array(self.net.hidden_widths, dtype=float),
            update_gain=self._update_gain,
            eigenvalues=self._lam,
            num_significant=self._num_sig,
            bottleneck=self._psi,
            candidate_gain=self._gains,
            added_params=self._added_params,
            added_flops=self._added_flops,
            loss=self._stats_loss,
            params=self.net.num_parameters(),
            flops=self.net.flops(),
            neurons=int(np.max(self._neurons)) if n else 1,
            max_sites=self.max_sites,
        )
        params = self.net.num_parameters()
        compute_used = (
            self.compute / self.max_compute
            if self.max_compute
            else np.log10(max(self.compute, 1.0)) / 20.0
        )
        budget_left = (
            1.0 if self.max_params is None else max(self.max_params - params, 0) / self.max_params
        )
        glob = features.global_features(
            self._train_loss,
            self._val_loss,
            self._val_acc,
            params,
            self.net.flops(),
            compute_used,
            budget_left,
            self.step_count / self.max_steps,
            self._last_improvement,
        )
        obs = np.concatenate([site.reshape(-1), glob]).astype(np.float32)
        return np.clip(np.nan_to_num(obs, nan=0.0), -OBS_BOUND, OBS_BOUND)

    def _info(self, episode_end: bool = False) -> dict[str, Any]:
        gains = np.full(self.max_sites, -np.inf)
        gains[: self.net.num_sites] = self._gains
        mask = self.action_masks()
        gains[~mask[: self.max_sites]] = -np.inf
        info = {
            "params": self.net.num_parameters(),
            "flops": self.net.flops(),
            "widths": list(self.net.hidden_widths),
            "train_loss": self._train_loss,
            "stats_loss": self._stats_loss,
            "val_loss": self._val_loss,
            "val_accuracy": self._val_acc,
            "candidate_gains": gains,
            "candidate_params": np.pad(
                self._added_params, (0, self.max_sites - len(self._added_params))
            ),
            "gamma": self._gamma,
            "loss_drop": self._loss_drop,
            "grown_site": self._grown_site,
            "compute": self.compute,
            "compute_by_phase": dict(self.compute_by_phase),
            "step": self.step_count,
            "action_mask": mask,
        }
        if episode_end:
            # wall-clock time is not reproducible, so it is reported once, at the end of the
            # episode (and always in ``env.seconds``); per-step info stays deterministic
            info["seconds"] = dict(self.seconds)
        return info

    # ------------------------------------------------------------------ render
    def render(self):
        if self.render_mode is None or self.net is None:
            return None
        if self.render_mode == "ansi":
            return self._render_ansi()
        return self._render_rgb()

    def _render_ansi(self) -> str:
        lines = [
            f"step {self.step_count}/{self.max_steps}  params {self.net.num_parameters()}  "
            f"val loss {self._val_loss:.4g}",
            f"{'site':>4} {'width':>6} {'lambda_1':>10} {'gain':>10} {'bottleneck':>11}",
        ]
        for j, width in enumerate(self.net.hidden_widths):
            lines.append(
                f"{j:>4} {width:>6} {self._site_lambda1[j]:10.3e} {self._gains[j]:10.3e} "
                f"{self._psi[j]:11.3e}"
            )
        lines.append(f"architecture: {' -> '.join(str(s) for s in self.net.layer_sizes)}")
        return "\n".join(lines) + "\n"

    def _render_rgb(self) -> np.ndarray:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5, 3.5), dpi=80)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        params = [h["params"] for h in self.history]
        vals = [h["val_loss"] for h in self.history]
        ax.plot(params, vals, marker="o")
        ax.set_xlabel("parameters")
        ax.set_ylabel("validation loss")
        ax.set_yscale("log")
        ax.set_title(f"{self.task.name}: {'-'.join(str(s) for s in self.net.layer_sizes)}")
        fig.tight_layout()
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
