"""Compare growth policies over tasks and seeds: the jobs behind ``growenv bench``.

Every (task, policy, seed) episode runs in a worker process (``torch.set_num_threads(1)``
each: with several OpenMP threads per process under load, the tiny matmuls of small nets
become orders of magnitude slower). Results: ``results.csv`` (one row per task, policy, seed
and growth step, columns :data:`growenv.harness.episodes.ROW_FIELDS`), ``summary.json`` (final
metrics per task and policy: mean, IQM, 95 % bootstrap CIs over seeds, paired difference to
the reference policy), a markdown table and PNG plots (see :mod:`~growenv.harness.summary` and
:mod:`~growenv.harness.plots`).

The work is a list of :class:`BenchJob` s (:func:`plan_jobs`: one episode, or a lockstep group
of at most :data:`MAX_LOCKSTEP` seeds), each run by :func:`run_job`. With an output
directory, every finished job's episodes go to its store
(:class:`~growenv.harness.store.BenchStore`) at once, so an interrupted or killed bench
keeps them and a re-run with ``resume=True`` runs only the missing episodes. The backend
``"ray"`` (:mod:`~growenv.harness.ray_backend`) runs the same jobs as Ray tasks, on this
machine or a cluster, and the driver appends them to the same store as they complete.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from growenv.data.tasks import TEACHER_TASK_NAMES
from growenv.env.config import EnvConfig
from growenv.errors import UserError
from growenv.harness.lifecycle import RunInterrupted, stop_signals
from growenv.harness.pool import run_pool
from growenv.harness.store import BenchStore, EpisodeKey
from growenv.policies import make_policy, policy_entry

__all__ = [
    "BACKENDS",
    "MAX_LOCKSTEP",
    "BenchJob",
    "parse_list",
    "parse_seeds",
    "plan_jobs",
    "run_bench",
    "run_job",
]

MAX_LOCKSTEP = 64
"""Default most seeds in one lockstep env (``run_bench(max_lockstep=...)``)."""

BACKENDS = ("local", "ray")
"""Where :func:`run_bench` runs its jobs: local worker processes, or Ray tasks."""

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
        raise UserError(f"seeds: expected N, A-B or a,b,c, got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise UserError(f"seeds: expected at least one non-negative seed, got {text!r}")
    return seeds


# --------------------------------------------------------------------------- running


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


@dataclass(frozen=True)
class BenchJob:
    """One unit of bench work: a single episode, or a lockstep group of seeds.

    The unit a worker (a local process, or a remote task) runs and the store records at
    once; its episodes are identified by :attr:`keys`.
    """

    task: str
    policy: str
    seeds: tuple[int, ...]
    lockstep: bool = False

    @property
    def keys(self) -> list[EpisodeKey]:
        """``(task, policy, seed)`` of each episode of the job."""
        return [(self.task, self.policy, s) for s in self.seeds]

    def pending(self, done: Set[EpisodeKey]) -> BenchJob | None:
        """This job reduced to its episodes not in ``done`` (``None`` when all are): what a
        resumed run still has to do."""
        rest = tuple(s for s in self.seeds if (self.task, self.policy, s) not in done)
        return dataclasses.replace(self, seeds=rest) if rest else None

    def describe(self) -> str:
        """``task=... policy=... seed(s)=...`` with long seed lists shortened."""
        s = self.seeds
        if len(s) == 1:
            seeds = f"seed={s[0]}"
        elif len(s) <= 4:
            seeds = f"seeds={list(s)}"
        else:
            seeds = f"seeds={s[0]}..{s[-1]} ({len(s)} seeds)"
        return f"task={self.task} policy={self.policy} {seeds}"


def plan_jobs(
    tasks: Sequence[str],
    policies: Sequence[str],
    seeds: Sequence[int],
    env_kwargs: Mapping[str, Any] | None = None,
    oracle: bool = False,
    vec: str = "auto",
    max_lockstep: int = MAX_LOCKSTEP,
) -> list[BenchJob]:
    """The jobs of a bench, in the order of its results (see :func:`run_bench`).

    Lockstep groups hold at most ``max_lockstep`` seeds, consecutive in the order given
    (the same seeds always make the same groups, so a resumed run repeats the plan).

    Raises
    ------
    ValueError
        For empty lists, an unknown ``vec``, a policy that cannot run in lockstep with
        ``vec="lockstep"`` or not on the env's net family, or ``max_lockstep < 1``.
    """
    env_kwargs = dict(env_kwargs or {})
    if not tasks or not policies or not seeds:
        raise UserError("run_bench: tasks, policies and seeds must not be empty")
    if vec not in ("auto", "lockstep", "single"):
        raise UserError(f"vec: expected 'auto', 'lockstep' or 'single', got {vec!r}")
    if isinstance(max_lockstep, bool) or not isinstance(max_lockstep, int) or max_lockstep < 1:
        raise UserError(f"max_lockstep: expected an int >= 1, got {max_lockstep!r}")
    specs = list(policies)
    net = EnvConfig.from_kwargs(**env_kwargs).net
    for p in specs:
        policy_entry(p).check_net(net)  # "policy: 'restricted' runs on envs with net='dag'"
    lockstep = {p: policy_entry(p).lockstep for p in specs}
    if vec == "lockstep":
        bad = [p for p in specs if not lockstep[p]]
        if bad:
            raise UserError(f"vec: policies {bad} query the env and cannot run in lockstep")
    obstacle = EnvConfig.from_kwargs(**env_kwargs).lockstep_obstacle()
    stackable = obstacle is None
    if vec == "lockstep" and not stackable:
        raise UserError(f"vec: expected settings the lockstep env can batch; {obstacle}")
    seeds = [int(s) for s in seeds]
    jobs: list[BenchJob] = []
    for t in tasks:
        for p in specs:
            if vec != "single" and stackable and lockstep[p]:
                for i in range(0, len(seeds), max_lockstep):
                    jobs.append(BenchJob(t, p, tuple(seeds[i : i + max_lockstep]), True))
            else:
                jobs += [BenchJob(t, p, (s,)) for s in seeds]
    if oracle:
        jobs += [
            BenchJob(t, "oracle", (s,)) for t in tasks if t in TEACHER_TASK_NAMES for s in seeds
        ]
    return jobs


def run_job(job: BenchJob, env_kwargs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Run one job; return the rows of its episodes (by seed, then step), labelled with the
    job's task and policy spec.

    Raises
    ------
    UserError
        Naming the job, for bad input found by the episode (chained).
    RuntimeError
        Naming the job, for any other error of the episode (chained).
    """
    from growenv.harness.baselines import oracle_row
    from growenv.harness.episodes import run_episode, run_lockstep_episodes

    kwargs = {**env_kwargs, "task": job.task}
    try:
        if job.policy == "oracle":
            rows = [oracle_row(kwargs, job.seeds[0])]
        elif job.lockstep:
            rows = [
                r for rs in run_lockstep_episodes(kwargs, job.policy, list(job.seeds)) for r in rs
            ]
        else:
            policy = _policy_for(job.policy)
            rows = run_episode(kwargs, policy, job.seeds[0], env=_env_for(kwargs))
    except UserError as err:  # bad input found only mid-run: still one line, the user's
        raise UserError(f"bench job {job.describe()}: {err}") from err
    except Exception as err:
        raise RuntimeError(f"bench job {job.describe()}: {err}") from err
    for row in rows:  # label by the requested names (e.g. a PPO path, a task distribution)
        row["task"], row["policy"] = job.task, job.policy
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
    out: str | Path | None = None,
    resume: bool = False,
    force: bool = False,
    max_lockstep: int = MAX_LOCKSTEP,
    backend: str = "local",
    address: str | None = None,
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
        ``1`` runs in this process, with one torch thread for the duration. With
        ``backend="ray"`` and no ``address``: the CPUs of the local Ray started for the run.
    oracle
        Also train the teacher architecture from scratch (policy ``"oracle"``) for each
        teacher-student task and seed.
    progress
        Show a tqdm progress bar (on stderr).
    vec
        ``"lockstep"``: the seeds of a (task, policy) run together in
        :class:`~growenv.env.lockstep.LockstepVecEnv` groups of at most ``max_lockstep``
        seeds (one job each); ``"single"``: one GrowthEnv per episode; ``"auto"`` (default):
        lockstep for the policies whose registry entry allows it (``lockstep`` in
        :data:`growenv.policies.POLICIES`) on MLPs without augmentation, single otherwise.
    out
        A results directory: each finished job's episodes are appended to its store
        (:class:`~growenv.harness.store.BenchStore`, ``episodes.jsonl``) as the job finishes,
        so an interrupted or killed run keeps them. ``None``: nothing is written.
    resume
        With ``out``: skip the episodes already stored there (same ``env_kwargs``
        required) and run the others; the rows returned are those of an uninterrupted run
        (up to the ``seconds*`` columns), read back from the store.
    force
        With ``out``: remove a previous bench's files there first
        (:func:`~growenv.harness.store.clear_bench_dir`). Without ``resume`` or ``force`` a
        non-empty ``out`` is refused.
    max_lockstep
        Most seeds in one lockstep env (memory grows with it; the results of a seed agree
        with those of any other grouping up to float rounding).
    backend
        ``"local"`` (default): this process or local worker processes. ``"ray"``: every job
        is a Ray task of one CPU with one torch thread
        (:func:`~growenv.harness.ray_backend.run_on_ray`), its rows appended by this process
        as it completes; a task whose worker dies is re-run (its rows are stored once). The
        rows equal the local backend's but for the ``seconds*`` columns. Needs
        ``pip install -e ".[ray]"``.
    address
        With ``backend="ray"``: a running Ray cluster to join (``HOST:PORT``, ``"auto"``);
        ``None`` starts a local Ray with ``workers`` CPUs (or uses the one this process is
        connected to already).

    Returns
    -------
    list of dict
        Rows ordered by task, policy (oracle last), seed (in the order given) and step; the
        same for any ``workers`` and backend.

    Raises
    ------
    RunInterrupted
        On SIGINT or SIGTERM: the running jobs are abandoned, finished ones stay in the
        store (a :class:`KeyboardInterrupt`; its message says how to resume).
    """
    from tqdm.auto import tqdm

    env_kwargs = dict(env_kwargs or {})
    if "task" in env_kwargs:
        raise UserError("env_kwargs: give the task through `tasks`, not env_kwargs['task']")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UserError(f"workers: expected an int >= 1, got {workers!r}")
    if out is None and (resume or force):
        raise UserError("out: resume and force need a results directory (out)")
    if backend not in BACKENDS:
        raise UserError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    if address is not None and backend != "ray":
        raise UserError(f"address: a Ray cluster's address needs backend='ray', not {backend!r}")
    jobs = plan_jobs(tasks, policies, seeds, env_kwargs, oracle, vec, max_lockstep)
    keys = [key for job in jobs for key in job.keys]  # the order of the rows returned
    store = None if out is None else BenchStore.open(out, env_kwargs, resume=resume, force=force)
    results: list[list[dict[str, Any]] | None] = [None] * len(jobs)
    if store is not None:
        # a job partly stored (an earlier run grouped its seeds otherwise) runs the rest only
        done = store.done()
        pending = [job.pending(done) for job in jobs]
        jobs = [job if rest is None else rest for job, rest in zip(jobs, pending, strict=True)]
        todo = [i for i, rest in enumerate(pending) if rest is not None]
    else:
        todo = list(range(len(jobs)))

    def finished(i: int, rows: list[dict[str, Any]]) -> None:
        if store is not None:
            store.append(rows)
        results[i] = rows
        bar.update()

    _POLICY_CACHE.clear()  # a PPO file may have changed since the last call
    bar = tqdm(
        total=len(jobs),
        initial=len(jobs) - len(todo),
        desc="bench",
        unit="job",
        disable=not progress,
    )
    try:
        with stop_signals():
            if backend == "ray":
                from growenv.harness.ray_backend import ray_session, run_on_ray

                with ray_session(address, workers):
                    calls = [(jobs[i], env_kwargs) for i in todo]
                    run_on_ray(
                        run_job, calls, lambda k, rows: finished(todo[k], rows), name="bench_job"
                    )
            else:
                calls = [(jobs[i], env_kwargs) for i in todo]
                run_pool(run_job, calls, workers, lambda k, rows: finished(todo[k], rows))
    except KeyboardInterrupt:
        kept = len(jobs) - sum(results[i] is None for i in todo)
        where = f"kept in {store.path}; re-run with resume (--resume)" if store else "not kept"
        raise RunInterrupted(
            f"bench interrupted: {kept} of {len(jobs)} jobs finished, {where}",
            None if store is None else store.dir,
        ) from None
    finally:
        bar.close()
    if store is not None:
        return store.rows(keys)
    return [row for rows in results if rows is not None for row in rows]
