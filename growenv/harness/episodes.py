"""Run policies on growth episodes: one row per step, in a single env or all seeds in lockstep.

The statistics over seeds are :mod:`growenv.harness.stats`; static baselines (the oracle, fixed
widths, a small CNN) are :mod:`growenv.harness.baselines`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from growenv.env import features
from growenv.env.config import EnvConfig
from growenv.env.growth_env import GrowthEnv
from growenv.policies import Policy, make_policy, policy_entry
from growenv.policies.ppo import run_settings
from growenv.training import evaluate

__all__ = [
    "ROW_FIELDS",
    "check_policy_fits",
    "observation_shape",
    "run_episode",
    "run_lockstep_episodes",
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


def observation_shape(config: EnvConfig) -> tuple[int, ...]:
    """The observation shape of envs of ``config``, without building one (the env's
    ``observation_space.shape``): site rows of an MLP/conv chain, or a DAG's expansion and
    node rows, then the global features."""
    if config.expansions:
        return (features.dag_observation_size(config.num_slots, config.max_nodes),)
    return (features.observation_size(config.num_slots),)


def _slots(settings: Mapping[str, Any]) -> str:
    net = settings.get("net", EnvConfig.net)
    if net == "dag":
        return f"net='dag', max_nodes={settings.get('max_nodes', EnvConfig.max_nodes)}"
    return f"net={net!r}, max_sites={settings.get('max_sites', EnvConfig.max_sites)}"


def check_policy_fits(policy: Policy, env: GrowthEnv | EnvConfig | Mapping[str, Any]) -> None:
    """Before an episode: a learned policy (one with ``policy.model.observation_space``, as
    a trained MaskablePPO agent) must expect the observations of ``env``.

    Parameters
    ----------
    policy
        The policy; others than learned ones always fit.
    env
        The env, its config, or its settings (GrowthEnv keywords): compared by their
        actual observation shape (:func:`observation_shape`), for any net family.

    Raises
    ------
    ValueError
        One line. Both chains of sites: naming ``max_sites`` (``"max_sites: expected 6
        (policy 'ppo:run' was trained on observations of shape (88,), from envs with
        max_sites=6), got 4"``); otherwise naming both shapes and the settings they come
        from (the agent's from its run's ``config.json`` when it has one).
    """
    space = getattr(getattr(policy, "model", None), "observation_space", None)
    if space is None:
        return
    if isinstance(env, GrowthEnv):
        config, shape = env.config, tuple(env.observation_space.shape)
    else:
        config = env if isinstance(env, EnvConfig) else EnvConfig.from_kwargs(**env)
        shape = observation_shape(config)
    expected = tuple(int(n) for n in space.shape)
    if expected == shape:
        return
    name = f"policy {getattr(policy, 'name', type(policy).__name__)!r}"
    path = getattr(policy, "path", None)
    saved = run_settings(path) if path is not None else None
    trained = (saved or {}).get("env_kwargs")
    if not config.expansions and (trained or {}).get("net", "mlp") != "dag":
        features.check_observation_shape(expected, config.max_sites, name)  # names max_sites
    origin = f", trained on envs with {_slots(trained)}" if trained is not None else ""
    here = _slots(dataclasses.asdict(config))
    raise ValueError(
        f"observation: {name} expects shape {expected}{origin}; these envs ({here}) give "
        f"{shape}: evaluate it with its run's env settings"
    )


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
    check_policy_fits(policy, env)
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


def run_lockstep_episodes(
    env_kwargs: Mapping[str, Any],
    spec: str,
    seeds: Sequence[int],
) -> list[list[dict[str, Any]]]:
    """One episode per seed of policy ``spec``, all seeds in one :class:`LockstepVecEnv`.

    Parameters
    ----------
    env_kwargs
        Keyword arguments of every env (``task`` and ``device`` included), as for
        :func:`run_episode`.
    spec
        A policy spec whose registry entry runs in lockstep
        (:data:`growenv.policies.POLICIES`).
    seeds
        One episode per seed.

    Returns
    -------
    list of list of dict
        Per seed, the same rows as :func:`run_episode` (test loss measured by one batched
        pass per step). Envs that finish early idle with "skip" until all are done; their
        extra steps are not recorded.
    """
    from growenv.env.lockstep import LockstepVecEnv

    if not policy_entry(spec).lockstep:
        raise ValueError(f"spec: policy {spec!r} queries the env and cannot run in lockstep")
    vec = LockstepVecEnv(len(seeds), **env_kwargs)
    vec.seed_each([int(s) for s in seeds])
    policies = [make_policy(spec) for _ in seeds]
    check_policy_fits(policies[0], vec.envs[0])
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
        # named before the step: a finished DAG env is auto-reset, its node names gone
        names = [env.describe_action(int(a)) for env, a in zip(vec.envs, actions, strict=True)]
        obs, rewards, dones, step_infos = vec.step(actions)
        test = vec.evaluate_split("test")
        for e, seed in enumerate(seeds):
            if not active[e]:
                continue
            info = step_infos[e]
            row = _row(
                vec.envs[e],
                info,
                name[e],
                seed,
                int(actions[e]),
                float(rewards[e]),
                policy_seconds[e],
                (test[0][e], test[1][e]) if not dones[e] else vec.last_test[e],
            )
            row["action_name"] = names[e]
            rows[e].append(row)
            if dones[e]:
                active[e] = False
        infos = step_infos
    return rows
