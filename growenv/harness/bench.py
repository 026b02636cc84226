"""Compare growth policies over tasks and seeds: the jobs behind ``growenv bench``.

Every (task, policy, seed) episode runs in a worker process (``torch.set_num_threads(1)``
each: with several OpenMP threads per process under load, the tiny matmuls of small nets
become orders of magnitude slower). Results: ``results.csv`` (one row per task, policy, seed
and growth step, columns :data:`growenv.harness.episodes.ROW_FIELDS`), ``summary.json`` (final
metrics per task and policy: mean, IQM, 95 % bootstrap CIs over seeds, paired difference to
the reference policy), a markdown table and PNG plots (see :mod:`~growenv.harness.summary` and
:mod:`~growenv.harness.plots`).
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from growenv.policies import make_policy, policy_entry

__all__ = ["parse_list", "parse_seeds", "run_bench"]

_ENV_CACHE: dict[str, Any] = {}
_POLICY_CACHE: dict[str, Any] = {}


# --------------------------------------------------------------------------- parsing


def parse_list(text: str) -> list[str]:
    """Split ``"a,b, c"`` into ``["a", "b", "c"]`` (empty items dropped)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_seeds(text: str | int) -> list[int]:
    """Seeds from ``"10"`` (0..9), ``"3-7"`` (3..7 inclusive) or ``"1,5,9"``.

    Raises
    ------
    ValueError
        For an empty, negative or malformed spec.
    """
    text = str(text).strip()
    try:
        if "," in text:
            seeds = [int(s) for s in parse_list(text)]
        elif "-" in text:
            lo, hi = (int(s) for s in text.split("-", 1))
            seeds = list(range(lo, hi + 1))
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise ValueError(f"seeds: expected N, A-B or a,b,c, got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise ValueError(f"seeds: expected at least one non-negative seed, got {text!r}")
    return seeds


# --------------------------------------------------------------------------- running


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _env_for(env_kwargs: dict[str, Any]):
    from growenv.env.growth_env import GrowthEnv

    key = json.dumps(env_kwargs, sort_keys=True, default=repr)
    if key not in _ENV_CACHE:
        if len(_ENV_CACHE) >= 4:
            _ENV_CACHE.pop(next(iter(_ENV_CACHE)))
        _ENV_CACHE[key] = GrowthEnv(**env_kwargs)
    return _ENV_CACHE[key]


def _policy_for(spec: str):
    if spec not in _POLICY_CACHE:
        _POLICY_CACHE[spec] = make_policy(spec)
    return _POLICY_CACHE[spec]


def _run_job(job: tuple[str, str, int | tuple[int, ...], dict[str, Any]]) -> list[dict[str, Any]]:
    """One episode (or the oracle run) of ``(task, policy spec, seed, env kwargs)``; with a
    tuple of seeds, all of them in one lockstep vector env."""
    from growenv.harness.baselines import oracle_row
    from growenv.harness.episodes import run_episode, run_lockstep_episodes

    task, spec, seed, env_kwargs = job
    kwargs = {**env_kwargs, "task": task}
    try:
        if spec == "oracle":
            rows = [oracle_row(kwargs, seed)]
        elif isinstance(seed, tuple):
            rows = [r for rs in run_lockstep_episodes(kwargs, spec, list(seed)) for r in rs]
        else:
            rows = run_episode(kwargs, _policy_for(spec), seed, env=_env_for(kwargs))
    except Exception as err:
        raise RuntimeError(f"bench job task={task} policy={spec} seed={seed}: {err}") from err
    for row in rows:  # label by the requested names (e.g. a PPO path, a task distribution)
        row["task"], row["policy"] = task, spec
    return rows


def run_bench(
    tasks: Sequence[str],
    policies: Sequence[str],
    seeds: Sequence[int],
    env_kwargs: Mapping[str, Any] | None = None,
    workers: int = 1,
    oracle: bool = False,
    progress: bool = True,
    vec: str = "auto",
) -> list[dict[str, Any]]:
    """Run every (task, policy, seed) episode and return all rows.

    Parameters
    ----------
    tasks
        Task names of :class:`~growenv.env.growth_env.GrowthEnv` (``task_kwargs`` in ``env_kwargs``
        apply to each).
    policies
        Policy specs of :func:`~growenv.policies.make_policy` (``"greedy"``,
        ``"ppo:PATH"``, ...).
    seeds
        Episode seeds (``env.reset(seed)`` and ``policy.reset(seed)``).
    env_kwargs
        Other :class:`~growenv.env.growth_env.GrowthEnv` arguments (not ``task``).
    workers
        Worker processes (started with "spawn", each with one torch thread; a script that
        calls this with ``workers > 1`` needs the ``if __name__ == "__main__":`` guard).
        ``1`` runs in this process, with one torch thread for the duration.
    oracle
        Also train the teacher architecture from scratch (policy ``"oracle"``) for each
        teacher-student task and seed.
    progress
        Show a tqdm progress bar (on stderr).
    vec
        ``"lockstep"``: the seeds of a (task, policy) run together in one
        :class:`~growenv.env.lockstep.LockstepVecEnv` (one job); ``"single"``: one GrowthEnv per
        episode; ``"auto"`` (default): lockstep for the policies whose registry entry allows
        it (``lockstep`` in :data:`growenv.policies.POLICIES`) on MLPs without augmentation,
        single otherwise.

    Returns
    -------
    list of dict
        Rows ordered by task, policy (oracle last), seed and step; the same for any
        ``workers``.
    """
    from tqdm.auto import tqdm

    env_kwargs = dict(env_kwargs or {})
    if "task" in env_kwargs:
        raise ValueError("env_kwargs: give the task through `tasks`, not env_kwargs['task']")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: expected an int >= 1, got {workers!r}")
    if not tasks or not policies or not seeds:
        raise ValueError("run_bench: tasks, policies and seeds must not be empty")
    if vec not in ("auto", "lockstep", "single"):
        raise ValueError(f"vec: expected 'auto', 'lockstep' or 'single', got {vec!r}")
    specs = list(policies)
    lockstep = {p: policy_entry(p).lockstep for p in specs}
    if vec == "lockstep":
        bad = [p for p in specs if not lockstep[p]]
        if bad:
            raise ValueError(f"vec: policies {bad} query the env and cannot run in lockstep")
    stackable = env_kwargs.get("net", "mlp") == "mlp" and not env_kwargs.get("augment", False)
    if vec == "lockstep" and not stackable:
        raise ValueError("vec: the lockstep env stacks MLPs without augmentation only")
    jobs: list[tuple] = []
    for t in tasks:
        for p in specs:
            if vec != "single" and stackable and lockstep[p]:
                jobs.append((t, p, tuple(int(s) for s in seeds), env_kwargs))
            else:
                jobs += [(t, p, int(s), env_kwargs) for s in seeds]
    if oracle:
        jobs += [(t, "oracle", int(s), env_kwargs) for t in tasks if "teacher" in t for s in seeds]
    _POLICY_CACHE.clear()  # a PPO file may have changed since the last call
    results: list[list[dict[str, Any]] | None] = [None] * len(jobs)
    bar = tqdm(total=len(jobs), desc="bench", unit="job", disable=not progress)
    try:
        if workers == 1:
            import torch

            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                for i, job in enumerate(jobs):
                    results[i] = _run_job(job)
                    bar.update()
            finally:
                torch.set_num_threads(threads)
        else:
            ctx = multiprocessing.get_context("spawn")  # fork after torch init can deadlock
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
                futures = {pool.submit(_run_job, job): i for i, job in enumerate(jobs)}
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.update()
    finally:
        bar.close()
    return [row for rows in results for row in rows]
