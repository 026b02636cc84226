"""Run policies on growth episodes and summarise results over seeds (IQM, bootstrap CIs).

Statistics follow Agarwal et al. (2021, "Deep RL at the edge of the statistical precipice"):
the interquartile mean (IQM) and percentile-bootstrap confidence intervals over seeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from growenv.env.growth_env import GrowthEnv
from growenv.policies.base import Policy
from growenv.training import evaluate

__all__ = [
    "ROW_FIELDS",
    "bootstrap_ci",
    "iqm",
    "oracle_row",
    "paired_difference",
    "run_episode",
]

ROW_FIELDS = (
    "task",
    "policy",
    "seed",
    "step",
    "action",
    "action_name",
    "grown_site",
    "widths",
    "params",
    "flops",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
    "reward",
    "gamma",
    "loss_drop",
    "compute",
    "seconds_train",
    "seconds_statistics",
    "seconds_search",
    "seconds_evaluate",
    "seconds_policy",
    "seconds",
)
"""Columns of one result row (one per task, policy, seed and growth step)."""


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _test_metrics(env: GrowthEnv) -> tuple[float, float | None]:
    loss, acc = evaluate(env.net, env.task.test.x, env.task.test.y, env.task.loss)
    return float(loss), _float_or_none(acc)


def _row(
    env: GrowthEnv,
    info: dict,
    policy: str,
    seed: int,
    action: int,
    reward: float,
    policy_seconds: float,
    test: tuple[float, float | None] | None = None,
) -> dict[str, Any]:
    test_loss, test_acc = _test_metrics(env) if test is None else test
    seconds = info.get("seconds", env.seconds)  # cumulative; in info at the episode end
    return {
        "task": env.task.name,
        "policy": policy,
        "seed": seed,
        "step": int(info["step"]),
        "action": action,
        "action_name": "reset" if action < 0 else env.describe_action(action),
        "grown_site": int(info["grown_site"]),
        "widths": "-".join(str(w) for w in info["widths"]),
        "params": int(info["params"]),
        "flops": int(info["flops"]),
        "train_loss": float(info["train_loss"]),
        "val_loss": float(info["val_loss"]),
        "val_accuracy": _float_or_none(info["val_accuracy"]),
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        "reward": reward,
        "gamma": float(info["gamma"]),
        "loss_drop": float(info["loss_drop"]),
        "compute": float(info["compute"]),
        **{f"seconds_{phase}": float(seconds[phase]) for phase in seconds},
        "seconds_policy": policy_seconds,
        "seconds": float(sum(seconds.values())) + policy_seconds,
    }


def run_episode(
    env_kwargs: Mapping[str, Any],
    policy: Policy,
    seed: int,
    env: GrowthEnv | None = None,
) -> list[dict[str, Any]]:
    """Run one episode of ``policy`` and return one row per growth step.

    Parameters
    ----------
    env_kwargs
        Keyword arguments of :class:`~growenv.env.growth_env.GrowthEnv` (``task`` included).
    policy
        The policy; ``policy.reset(seed)`` is called before the episode.
    seed
        Seed of ``env.reset`` and of the policy.
    env
        An existing environment to reuse instead of building one from ``env_kwargs`` (saves
        building the task again; ``reset(seed=seed)`` makes the episode independent of
        earlier ones). Wrappers are removed (policies get the unwrapped env).

    Returns
    -------
    list of dict
        Rows with the keys :data:`ROW_FIELDS`: row 0 is the state after ``reset`` (action
        -1), then one row per step. ``test_loss`` / ``test_accuracy`` are measured on the
        task's test split at every row (not counted in ``compute``); accuracies are ``None``
        for regression. ``seconds_*`` are cumulative env phase times; ``seconds_policy`` is the
        cumulative wall time of ``policy.act`` minus the env time it caused.
    """
    env = (GrowthEnv(**env_kwargs) if env is None else env).unwrapped
    obs, info = env.reset(seed=int(seed))
    policy.reset(int(seed))
    name = getattr(policy, "name", type(policy).__name__)
    policy_seconds = 0.0
    rows = [_row(env, info, name, seed, -1, 0.0, policy_seconds)]
    done = False
    while not done:
        env_seconds = sum(env.seconds.values())
        start = time.perf_counter()
        action = int(policy.act(obs, info, env))
        elapsed = time.perf_counter() - start
        policy_seconds += max(elapsed - (sum(env.seconds.values()) - env_seconds), 0.0)
        obs, reward, terminated, truncated, info = env.step(action)
        rows.append(_row(env, info, name, seed, action, float(reward), policy_seconds))
        done = terminated or truncated
    return rows


# Policies that only read the observation and info (no amplitude searches through the env):
# these run their seeds in one LockstepVecEnv.
LOCKSTEP_POLICIES = ("greedy", "round-robin", "random", "periodic")


def supports_lockstep(spec: str) -> bool:
    """Whether the policy ``spec`` can run its episodes in a :class:`LockstepVecEnv`."""
    return spec in LOCKSTEP_POLICIES or spec.startswith("ppo:")


def run_lockstep_episodes(
    env_kwargs: Mapping[str, Any],
    spec: str,
    seeds: Sequence[int],
    device: str = "cpu",
) -> list[list[dict[str, Any]]]:
    """One episode per seed of policy ``spec``, all seeds in one :class:`LockstepVecEnv`.

    Returns, per seed, the same rows as :func:`run_episode` (test loss measured by one
    batched pass per step). Envs that finish early idle with "skip" until all are done;
    their extra steps are not recorded.
    """
    from growenv.env.lockstep import LockstepVecEnv
    from growenv.policies.base import make_policy

    kwargs = dict(env_kwargs)
    vec = LockstepVecEnv(len(seeds), device=device, **kwargs)
    vec.seed_each([int(s) for s in seeds])
    policies = [make_policy(spec) for _ in seeds]
    obs = vec.reset()
    infos = list(vec.reset_infos)
    rows: list[list[dict[str, Any]]] = [[] for _ in seeds]
    policy_seconds = [0.0] * len(seeds)
    for pol, seed in zip(policies, seeds, strict=True):
        pol.reset(int(seed))
    name = [getattr(p, "name", spec) for p in policies]
    test = vec.evaluate_split("test")
    for e, seed in enumerate(seeds):
        rows[e].append(
            _row(vec.envs[e], infos[e], name[e], seed, -1, 0.0, 0.0, (test[0][e], test[1][e]))
        )
    active = [True] * len(seeds)
    while any(active):
        actions = np.full(len(seeds), vec.envs[0].skip_action)
        for e, env in enumerate(vec.envs):
            if active[e]:
                start = time.perf_counter()
                actions[e] = int(policies[e].act(obs[e], infos[e], env))
                policy_seconds[e] += time.perf_counter() - start
        obs, rewards, dones, step_infos = vec.step(actions)
        test = vec.evaluate_split("test")
        for e, seed in enumerate(seeds):
            if not active[e]:
                continue
            info = step_infos[e]
            rows[e].append(
                _row(
                    vec.envs[e],
                    info,
                    name[e],
                    seed,
                    int(actions[e]),
                    float(rewards[e]),
                    policy_seconds[e],
                    (test[0][e], test[1][e]) if not dones[e] else vec.last_test[e],
                )
            )
            if dones[e]:
                active[e] = False
        infos = step_infos
    return rows


# --------------------------------------------------------------------------- statistics


def iqm(values: Sequence[float] | np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """Interquartile mean: the mean of the middle half of the sorted values.

    ``floor(n / 4)`` values are cut from each end (as ``scipy.stats.trim_mean(x, 0.25)``, the
    IQM of rliable); for ``n < 4`` it is the mean. ``axis=None`` flattens.

    Examples
    --------
    >>> iqm([1, 2, 3, 4, 5, 6, 7, 8])  # mean of 3, 4, 5, 6
    4.5
    """
    x = np.asarray(values, dtype=float)
    if axis is None:
        x, axis = x.reshape(-1), 0
    x = np.sort(np.moveaxis(x, axis, -1), axis=-1)
    n = x.shape[-1]
    if n == 0:
        return np.full(x.shape[:-1], np.nan) if x.ndim > 1 else float("nan")
    cut = n // 4
    out = x[..., cut : n - cut].mean(-1)
    return float(out) if out.ndim == 0 else out


Statistic = Callable[..., Any]


def _resolve_stat(stat: str | Statistic) -> Statistic:
    if isinstance(stat, str):
        table = {"mean": np.mean, "iqm": iqm, "median": np.median}
        if stat not in table:
            raise ValueError(f"stat: expected one of {sorted(table)} or a callable, got {stat!r}")
        return table[stat]
    return stat


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    stat: str | Statistic = "mean",
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of ``stat`` over ``values``.

    Parameters
    ----------
    values
        One value per seed (NaNs are dropped).
    stat
        ``"mean"``, ``"iqm"``, ``"median"`` or a callable ``stat(array, axis=-1)``.
    n_boot
        Bootstrap resamples.
    alpha
        ``1 - alpha`` is the coverage (0.05: a 95 % interval).
    seed
        Seed of the resampling.

    Returns
    -------
    (low, high)
        The ``alpha/2`` and ``1 - alpha/2`` quantiles of the resampled statistic; ``(v, v)``
        for a single value or a constant array, ``(nan, nan)`` for no values.
    """
    x = np.asarray(values, dtype=float).reshape(-1)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: expected a number in (0, 1), got {alpha!r}")
    fn = _resolve_stat(stat)
    rng = np.random.default_rng(seed)
    samples = x[rng.integers(0, x.size, size=(int(n_boot), x.size))]
    boot = np.asarray(fn(samples, axis=-1), dtype=float)
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    # quantile interpolation can leave a constant array's interval one ulp off the value
    low, high = max(float(low), float(x.min())), min(float(high), float(x.max()))
    return low, high


def paired_difference(
    values: Mapping[int, float],
    reference: Mapping[int, float],
    stat: str | Statistic = "mean",
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, float]:
    """Difference ``values - reference`` paired by seed, with its bootstrap CI.

    Parameters
    ----------
    values, reference
        ``{seed: value}`` (e.g. final test loss of a policy and of greedy); only seeds in both
        count.

    Returns
    -------
    dict
        ``{"diff": stat of the differences, "low", "high", "n"}`` (NaNs without common seeds).
    """
    seeds = sorted(set(values) & set(reference))
    d = np.array([values[s] - reference[s] for s in seeds], dtype=float)
    d = d[~np.isnan(d)]
    if d.size == 0:
        return {"diff": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    low, high = bootstrap_ci(d, stat, n_boot, alpha, seed)
    return {"diff": float(_resolve_stat(stat)(d)), "low": low, "high": high, "n": int(d.size)}


# --------------------------------------------------------------------------- oracle


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
        A row with the keys :data:`ROW_FIELDS` (``policy="oracle"``, ``step`` = the episode
        length, final train/val/test losses, parameters, FLOPs). ``compute`` counts training
        (3 x forward MACs per sample) and one validation pass, as the env does.

    Raises
    ------
    ValueError
        When the task is not teacher-student (there is no known architecture).
    """
    from growenv.data.tasks import TeacherNet
    from growenv.harness.baselines import static_row

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
