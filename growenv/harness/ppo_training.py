"""Training MaskablePPO growth agents: configuration, vector envs, callbacks, ``train``.

Training runs sb3-contrib's ``MaskablePPO`` on :class:`~growenv.env.growth_env.GrowthEnv` over
a task distribution (a new teacher each episode by default), with observation normalisation
(running mean/std, saved beside the model), periodic checkpoints, TensorBoard logs (when
``tensorboard`` is installed; CSV logs always) and an evaluation callback that runs the
agent and the greedy rule on fixed held-out tasks and logs both. The trained agent is loaded
and run by :mod:`growenv.policies.ppo`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from growenv.harness.lifecycle import RunInterrupted, atomic_path, atomic_write_text, stop_signals
from growenv.policies.ppo import (
    BEST_MODEL_FILE,
    CONFIG_FILE,
    MODEL_FILE,
    NORM_FILE,
    PPOPolicy,
    check_model_file,
    keep_global_rngs,
    norm_path_for,
    read_norm,
)

__all__ = [
    "BEST_MODEL_FILE",
    "CONFIG_FILE",
    "DEFAULT_ENV_KWARGS",
    "SELECTION_METRIC",
    "VEC_KINDS",
    "PPOConfig",
    "check_task_roles",
    "check_test_tasks",
    "checkpoint_steps",
    "evaluate_against_greedy",
    "latest_checkpoint",
    "make_vec_env",
    "teacher_seeds",
    "train",
]

TRAINING_FILE = "training.json"
"""Wall time and timesteps of the run (all sessions)."""
EVAL_FILE = "eval.jsonl"
"""Held-out evaluations against greedy, one JSON line each."""
PROGRESS_FILE = "progress.csv"
"""SB3's CSV log (in ``logs/``), one row per rollout."""
STEP_COLUMN = "time/total_timesteps"
"""The column of ``progress.csv`` that counts env steps."""
CHECKPOINT_DIR = "checkpoints"
SELECTION_METRIC = "agent_over_greedy"
"""The held-out score that selects ``best_model.zip`` (lower is better): the agent's final
validation loss over greedy's, averaged over the selection teachers."""
NOT_SETTINGS = ("sessions", "best", "task_roles")
"""Keys of ``config.json`` that record the run rather than set it."""
VEC_KINDS = ("lockstep", "subproc", "dummy")

# Environment settings of the learned-growth experiments: cheap steps (25 optimizer steps
# between growth decisions), a parameter budget that makes the decision "where" matter, and
# a new teacher (depth 2, widths 10-80) every episode.
DEFAULT_ENV_KWARGS: dict[str, Any] = {
    "task": "teacher_student_distribution",
    "train_steps": 25,
    "max_steps": 12,
    "neurons_per_growth": 4,
    "max_params": 800,
}


@dataclass
class PPOConfig:
    """Everything a training run depends on; saved as ``config.json`` beside the model.

    PPO hyper-parameters are chosen for short episodes (12 decisions): no discount (the
    env's log-ratio rewards then sum to the log of the initial over the final validation
    loss, the quantity to maximise), GAE 0.95, a small entropy bonus so that the agent keeps
    trying sites, and a 64-64 tanh MLP for a ~62-dimensional observation.

    ``device`` is the torch device of the policy network (MaskablePPO's ``device``); the
    environments' device is the env setting ``env_kwargs["device"]`` (default ``"cpu"``).
    ``total_timesteps`` is the total number of env steps of the run (a resumed run trains
    what its checkpoint lacks); ``checkpoint_every`` the env steps between checkpoints
    (see :func:`train`).
    """

    env_kwargs: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_ENV_KWARGS))
    total_timesteps: int = 60_000
    n_envs: int = 32
    vec: str = "lockstep"
    seed: int = 0
    device: str = "cpu"
    n_steps: int = 32
    batch_size: int = 256
    n_epochs: int = 10
    learning_rate: float = 1e-4
    gamma: float = 1.0
    gae_lambda: float = 0.95
    ent_coef: float = 0.01
    clip_range: float = 0.2
    net_arch: tuple[int, ...] = (64, 64)
    normalize_obs: bool = True
    checkpoint_every: int = 5_000
    eval_every: int = 5_000
    eval_tasks: int = 4
    selection_seed_offset: int = 10**6

    def train_task_seeds(self) -> Sequence[int] | None:
        """The teacher seeds training draws from (:func:`teacher_seeds` of ``env_kwargs``)."""
        kwargs = self.env_kwargs
        return teacher_seeds(kwargs.get("task", "teacher_student"), kwargs.get("task_kwargs"))

    def selection_task_seeds(self) -> range:
        """The held-out teachers of the in-training evaluation that selects
        ``best_model.zip``: seeds ``selection_seed_offset .. + eval_tasks - 1``."""
        return range(self.selection_seed_offset, self.selection_seed_offset + self.eval_tasks)

    def validate(self) -> PPOConfig:
        """Check the settings (and build one env from ``env_kwargs``); return ``self``.

        Raises
        ------
        ValueError
            Naming the first bad setting.
        """
        ints = (
            "total_timesteps",
            "n_envs",
            "n_steps",
            "batch_size",
            "n_epochs",
            "checkpoint_every",
        )
        for name in ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
        for name in ("eval_every", "eval_tasks", "selection_seed_offset"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected an int >= 0, got {value!r}")
        if self.vec not in VEC_KINDS:
            raise ValueError(f"vec: expected one of {VEC_KINDS}, got {self.vec!r}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma: expected 0 < gamma <= 1, got {self.gamma}")
        from growenv.env.growth_env import GrowthEnv

        GrowthEnv(**self.env_kwargs)  # unknown or bad env kwargs fail here, clearly
        check_task_roles(
            {
                "train": (self.train_task_seeds(), "env_kwargs task_kwargs"),
                "selection": (self.selection_task_seeds(), "selection_seed_offset, eval_tasks"),
            }
        )
        return self

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (``config.json``)."""
        data = dataclasses.asdict(self)
        data["net_arch"] = list(self.net_arch)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PPOConfig:
        """The config of a ``config.json`` dict (its records :data:`NOT_SETTINGS` are not
        settings); unknown keys are refused."""
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k not in NOT_SETTINGS}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"config: unknown keys {sorted(unknown)}")
        data = dict(data)
        if "net_arch" in data:
            data["net_arch"] = tuple(data["net_arch"])
        return cls(**data)


# --------------------------------------------------------------------------- task roles


def teacher_seeds(task: Any, task_kwargs: Mapping[str, Any] | None = None) -> Sequence[int] | None:
    """The teacher seeds of an env's tasks: a ``teacher_student_distribution``'s ``seeds``
    (default ``0 .. 10^6 - 1``), a ``teacher_student`` task's one ``seed`` (default 0);
    ``None`` for tasks without a teacher."""
    from growenv.data.tasks import TeacherStudentDistribution
    from growenv.env.config import DISTRIBUTION_NAME

    task_kwargs = task_kwargs or {}
    if task == DISTRIBUTION_NAME:
        seeds = task_kwargs.get("seeds", TeacherStudentDistribution.seeds)
        return seeds if isinstance(seeds, range) else [int(s) for s in seeds]
    if task == "teacher_student":
        return [int(task_kwargs.get("seed", 0))]
    return None


def _describe_seeds(seeds: Sequence[int]) -> str:
    if isinstance(seeds, range) and seeds.step == 1:
        return f"{seeds.start}-{seeds.stop - 1}" if len(seeds) > 1 else str(seeds.start)
    if len(seeds) <= 4:
        return ", ".join(map(str, seeds))
    return f"{len(seeds)} seeds in {min(seeds)}-{max(seeds)}"


def _first_common(a: Sequence[int], b: Sequence[int]) -> int | None:
    if isinstance(a, range) and isinstance(b, range) and a.step == b.step == 1:
        lo = max(a.start, b.start)
        return lo if lo < min(a.stop, b.stop) else None
    small, large = sorted((a, b), key=len)
    members = large if isinstance(large, range) else set(large)
    return next((int(s) for s in small if s in members), None)


def check_task_roles(roles: Mapping[str, tuple[Sequence[int] | None, str]]) -> None:
    """The one check that the tasks of different roles share no teacher.

    The three roles: **train** (the teachers training draws from), **selection** (the
    held-out teachers of the in-training evaluation, which picks ``best_model.zip``; a
    sweep selects configurations on them) and **test** (the teachers a bench reports on).

    Parameters
    ----------
    roles
        Role name -> (its teacher seeds, or ``None`` for tasks without teachers; the
        setting that chose them, for the message).

    Raises
    ------
    ValueError
        One line: ``"task roles: expected disjoint teacher seeds, but train (0-999999, from
        env_kwargs task_kwargs) and selection (1000000-1000003, from selection_seed_offset,
        eval_tasks) share teacher 1000000"``.
    """
    named = [(name, seeds, where) for name, (seeds, where) in roles.items() if seeds]
    for i, (a, seeds_a, where_a) in enumerate(named):
        for b, seeds_b, where_b in named[i + 1 :]:
            common = _first_common(seeds_a, seeds_b)
            if common is not None:
                raise ValueError(
                    f"task roles: expected disjoint teacher seeds, but {a} "
                    f"({_describe_seeds(seeds_a)}, from {where_a}) and {b} "
                    f"({_describe_seeds(seeds_b)}, from {where_b}) share teacher {common}"
                )


def check_test_tasks(config: PPOConfig, task: str, task_kwargs: Mapping[str, Any] | None) -> None:
    """Refuse test tasks (a bench's ``task`` and ``task_kwargs``) that share a teacher with
    the training or selection tasks of the run of ``config`` (:func:`check_task_roles`)."""
    check_task_roles(
        {
            "train": (config.train_task_seeds(), "the run's env_kwargs task_kwargs"),
            "selection": (config.selection_task_seeds(), "the run's selection_seed_offset"),
            "test": (teacher_seeds(task, task_kwargs), "the bench's task and task_kwargs"),
        }
    )


# --------------------------------------------------------------------------- environments


def _make_env_fn(env_kwargs: dict[str, Any], threads: int | None):
    def _init():
        import torch
        from sb3_contrib.common.wrappers import ActionMasker  # noqa: F401  (import check)
        from stable_baselines3.common.monitor import Monitor

        from growenv.env.growth_env import GrowthEnv

        if threads is not None:
            # several processes on few cores: one thread each (OpenMP spinning otherwise
            # makes tiny matmuls ~100x slower)
            torch.set_num_threads(threads)
        return Monitor(GrowthEnv(**env_kwargs))

    return _init


def make_vec_env(config: PPOConfig):
    """The training vector env: ``n_envs`` envs seeded ``seed + i`` (SB3's convention).

    ``"lockstep"`` stacks all networks into one batched model (growenv.env.lockstep);
    ``"subproc"``/``"dummy"`` are SB3's vector envs over separate GrowthEnvs. Every kind
    builds its envs from ``config.env_kwargs`` alone (their ``device`` included).
    """
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecMonitor

    if config.vec == "lockstep":
        from growenv.env.lockstep import LockstepVecEnv

        return VecMonitor(LockstepVecEnv(config.n_envs, seed=config.seed, **config.env_kwargs))
    if config.vec == "subproc" and config.n_envs > 1:
        fns = [_make_env_fn(config.env_kwargs, 1) for _ in range(config.n_envs)]
        venv = SubprocVecEnv(fns, start_method="spawn")
    else:
        venv = DummyVecEnv([_make_env_fn(config.env_kwargs, None) for _ in range(config.n_envs)])
    venv.seed(config.seed)
    return venv


def _norm_state(venv) -> dict[str, Any] | None:
    """A copy of the observation statistics (``None`` without normalisation)."""
    from stable_baselines3.common.vec_env import VecNormalize

    if not isinstance(venv, VecNormalize):
        return None
    rms = venv.obs_rms
    return {"mean": rms.mean.copy(), "var": rms.var.copy(), "clip": venv.clip_obs}


def _write_norm(state: dict[str, Any] | None, path: Path) -> None:
    if state is not None:
        with atomic_path(path) as tmp:
            np.savez(tmp, **state)


def _save_model(model, path: Path) -> None:
    with atomic_path(path) as tmp:
        model.save(tmp)


# --------------------------------------------------------------------------- evaluation


def evaluate_against_greedy(
    policy: PPOPolicy, env_kwargs: dict[str, Any], n_tasks: int, seed: int = 10**6
) -> dict[str, float]:
    """Final validation loss of the agent and of greedy on ``n_tasks`` held-out teachers
    (teacher seeds ``seed .. seed + n_tasks - 1``).

    The global random states (python, numpy, torch) are the same after the call as before
    (:func:`~growenv.policies.ppo.keep_global_rngs`): inside training, the evaluation does
    not change the training's streams.
    """
    from growenv.data.tasks import held_out_teachers
    from growenv.harness.episodes import run_episode
    from growenv.policies.heuristics import GreedyPolicy

    kwargs = {k: v for k, v in env_kwargs.items() if k not in ("task", "task_kwargs")}
    agent, greedy = [], []
    with keep_global_rngs():
        for i, task in enumerate(held_out_teachers(n_tasks, seed_offset=seed)):
            for pol, out in ((policy, agent), (GreedyPolicy(), greedy)):
                rows = run_episode({**kwargs, "task": task}, pol, i)
                out.append(rows[-1]["val_loss"])
    return {
        "agent_val_loss": float(np.mean(agent)),
        "greedy_val_loss": float(np.mean(greedy)),
        "agent_over_greedy": float(np.mean(np.array(agent) / np.array(greedy))),
    }


def _appending_csv(path: Path):
    """SB3's CSV log writer, continuing an existing ``progress.csv`` (SB3's own truncates
    it): the header's columns are kept and new rows appended; a new column rewrites the
    file with it, as SB3 does."""
    from stable_baselines3.common.logger import CSVOutputFormat

    class AppendingCSV(CSVOutputFormat):
        def __init__(self, filename: Path) -> None:
            filename.touch()
            self.file = open(filename, "r+")  # noqa: SIM115 (closed by Logger.close)
            header = self.file.readline().rstrip("\n")
            self.keys = header.split(",") if header else []
            self.file.seek(0, 2)
            self.separator = ","
            self.quotechar = '"'

    return AppendingCSV(path)


def _logger(out: Path):
    """The run's logger: ``logs/progress.csv`` (appended to), TensorBoard when installed."""
    from stable_baselines3.common.logger import Logger, make_output_format

    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    outputs = [_appending_csv(logs / PROGRESS_FILE)]
    try:
        import tensorboard  # noqa: F401

        outputs.append(make_output_format("tensorboard", str(logs)))
    except ImportError:
        pass
    return Logger(str(logs), outputs)


def _keep_logs_until(out: Path, timesteps: int) -> None:
    """Drop the log rows after ``timesteps`` (work lost with the session that wrote them;
    the resumed run writes them again) and rows cut short by a kill."""
    progress = out / "logs" / PROGRESS_FILE
    if progress.is_file():
        with progress.open(newline="") as f:
            lines = list(csv.reader(f))
        if lines:
            header, rows = lines[0], lines[1:]
            col = header.index(STEP_COLUMN) if STEP_COLUMN in header else None
            kept = [
                r
                for r in rows
                if len(r) == len(header)
                and col is not None
                and r[col]
                and float(r[col]) <= timesteps
            ]
            with atomic_path(progress) as tmp, tmp.open("w", newline="") as f:
                csv.writer(f, lineterminator="\n").writerows([header, *kept])
    evals = out / EVAL_FILE
    if evals.is_file():
        kept_lines = []
        for line in evals.read_text().splitlines():
            try:
                if json.loads(line)["timesteps"] <= timesteps:
                    kept_lines.append(line + "\n")
            except (ValueError, KeyError):
                continue  # a line cut short by a kill
        atomic_write_text(evals, "".join(kept_lines))


def _callbacks(config: PPOConfig, out: Path, venv, run: _Run, on_eval=None):
    from stable_baselines3.common.callbacks import BaseCallback

    class Lifecycle(BaseCallback):
        """Checkpoint at the start of a rollout (all steps so far trained on) once
        ``config.checkpoint_every`` steps passed since the last one; stop collecting at a
        signal (``run.stop``), remembering the last rollout start for the final save."""

        def __init__(self) -> None:
            super().__init__()
            # a new run saves its start too: a kill before the first interval can resume
            self.last_saved = run.start if run.resumed else None

        def _on_rollout_start(self) -> None:
            run.mark(self.model.num_timesteps, venv)
            steps = self.model.num_timesteps
            if self.last_saved is None or steps - self.last_saved >= config.checkpoint_every:
                run.checkpoint(self.model)
                self.last_saved = steps

        def _on_step(self) -> bool:
            return not run.stop

    class EvalVsGreedy(BaseCallback):
        """Run the agent and greedy on the selection teachers; log both; keep the best
        model (lowest :data:`SELECTION_METRIC`) as ``best_model.zip``."""

        def __init__(self, every: int):
            super().__init__()
            self.every = every

        def _on_step(self) -> bool:
            if self.n_calls % self.every == 0:
                rms = getattr(venv, "obs_rms", None)
                pol = PPOPolicy(
                    self.model,
                    None if rms is None else rms.mean,
                    None if rms is None else rms.var,
                    getattr(venv, "clip_obs", 10.0),
                )
                res = evaluate_against_greedy(
                    pol, config.env_kwargs, config.eval_tasks, config.selection_seed_offset
                )
                run.offer_best(self.model, venv, self.num_timesteps, res)
                for key, value in res.items():
                    self.logger.record(f"eval/{key}", value)
                self.logger.record(f"eval/best_{SELECTION_METRIC}", run.best[SELECTION_METRIC])
                with open(out / EVAL_FILE, "a") as f:
                    f.write(json.dumps({"timesteps": self.num_timesteps, **res}) + "\n")
                if on_eval is not None:
                    on_eval(self.num_timesteps, res)
            return True

    cbs = [Lifecycle()]
    if config.eval_every and config.eval_tasks:
        cbs.append(EvalVsGreedy(max(config.eval_every // config.n_envs, 1)))
    return cbs


def _progress_bar(begin: int, total: int):
    """A tqdm bar over the run's env steps (``begin`` of ``total`` done), on stderr.

    tqdm is the one progress-bar library of growenv (``bench`` too): SB3's own bar is tqdm's
    experimental rich front end, which warns on every run and needs rich besides tqdm.
    """
    from stable_baselines3.common.callbacks import BaseCallback
    from tqdm.auto import tqdm

    class Progress(BaseCallback):
        def _on_training_start(self) -> None:
            self.bar = tqdm(total=total, initial=begin, desc="train", unit="step")

        def _on_step(self) -> bool:
            self.bar.update(min(self.num_timesteps, total) - self.bar.n)
            return True

        def _on_training_end(self) -> None:
            self.bar.close()

    return Progress()


# --------------------------------------------------------------------------- training


def _ppo_settings(config: PPOConfig) -> dict[str, Any]:
    """The MaskablePPO keyword arguments that ``config`` sets (beyond policy and env)."""
    return {
        "learning_rate": config.learning_rate,
        "n_steps": config.n_steps,
        "batch_size": config.batch_size,
        "n_epochs": config.n_epochs,
        "gamma": config.gamma,
        "gae_lambda": config.gae_lambda,
        "ent_coef": config.ent_coef,
        "clip_range": config.clip_range,
    }


def checkpoint_steps(path: str | Path) -> int | None:
    """The steps of a checkpoint named ``model_<steps>_steps.zip``; ``None`` for other
    names."""
    steps = Path(path).stem.removeprefix("model_").removesuffix("_steps")
    return int(steps) if steps.isdigit() else None


def latest_checkpoint(run: str | Path) -> Path | None:
    """The checkpoint a resumed run continues from: the newest of ``run``'s
    ``checkpoints/model_<steps>_steps.zip`` and its final ``model.zip`` (by steps);
    ``None`` when there is neither."""
    run = Path(run)
    found: list[tuple[int, Path]] = []
    for path in (run / CHECKPOINT_DIR).glob("model_*_steps.zip"):
        steps = checkpoint_steps(path)
        if steps is not None:
            found.append((steps, path))
    if (run / MODEL_FILE).is_file():
        try:
            steps = json.loads((run / TRAINING_FILE).read_text())["timesteps"]
        except (OSError, ValueError, KeyError):
            steps = -1
        found.append((int(steps), run / MODEL_FILE))
    return max(found, key=lambda f: f[0])[1] if found else None


def model_to_load(path: str | Path, what: str) -> Path:
    """The model a run starts from: a checkpoint ``.zip``, or a run directory's newest
    checkpoint (or its final model), checked complete (:func:`check_model_file`).

    Raises
    ------
    FileNotFoundError
        ``"resume: expected a run directory with checkpoints/model_*_steps.zip or model.zip,
        or a checkpoint .zip; run holds neither"`` (``what`` starts the message).
    ValueError
        A truncated or corrupt model file.
    """
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(
                f"{what}: expected a run directory with {CHECKPOINT_DIR}/model_*_steps.zip or "
                f"{MODEL_FILE}, or a checkpoint .zip; {path} holds neither"
            )
        path = found
    elif not path.is_file():
        raise FileNotFoundError(
            f"{what}: expected a run directory or a checkpoint .zip, got {path}, which does "
            "not exist"
        )
    check_model_file(path, what)
    return path


def _clear_run(out: Path) -> None:
    """Remove a previous run's files from ``out`` (what a new run there replaces)."""
    for name in (MODEL_FILE, NORM_FILE, CONFIG_FILE, TRAINING_FILE, EVAL_FILE):
        if (out / name).is_file():
            (out / name).unlink()
    _drop_best(out)


def _drop_best(out: Path) -> None:
    for path in (out / BEST_MODEL_FILE, norm_path_for(out / BEST_MODEL_FILE)):
        if path.is_file():
            path.unlink()
    for name in (CHECKPOINT_DIR, "logs"):
        if (out / name).is_dir():
            shutil.rmtree(out / name)


class _Run:
    """One training session in a run directory: its entry in ``config.json``'s
    ``sessions``, its checkpoints and the stop flag that SIGINT/SIGTERM set."""

    def __init__(
        self, config: PPOConfig, out: Path, start: int, origin: dict[str, str | None]
    ) -> None:
        self.config, self.out, self.start = config, out, start
        self.stop = False
        self.resumed = bool(origin.get("resumed_from"))
        self.at, self.norm = start, None
        self.sessions: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        if origin.get("resumed_from") and (out / CONFIG_FILE).is_file():
            saved = json.loads((out / CONFIG_FILE).read_text())
            self.sessions = saved.get("sessions", [])
            self.best = saved.get("best")
            if self.best is not None and self.best.get("timesteps", start + 1) > start:
                # chosen by an evaluation after the checkpoint: that work is redone
                self.best = None
                _drop_best(out)
            for session in self.sessions:
                if session.get("status") == "running":
                    session["status"] = "killed"  # ended without a word: SIGKILL, a crash
        self.session: dict[str, Any] = {
            "start_timesteps": start,
            "end_timesteps": start,
            "total_timesteps": config.total_timesteps,
            "status": "running",
            **{k: v for k, v in origin.items() if v is not None},
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": 0.0,
        }
        self.sessions.append(self.session)
        self.clock = time.perf_counter()
        self.write()

    def write(self) -> None:
        self.session["seconds"] = time.perf_counter() - self.clock
        data = {**self.config.to_json(), "task_roles": self.task_roles(), "sessions": self.sessions}
        if self.best is not None:
            data["best"] = self.best
        atomic_write_text(self.out / CONFIG_FILE, json.dumps(data, indent=2) + "\n")

    def task_roles(self) -> dict[str, str]:
        """The teacher seeds of each role, for ``config.json``."""
        train = self.config.train_task_seeds()
        selection = self.config.selection_task_seeds()
        return {
            "train": "no teachers" if train is None else _describe_seeds(train),
            "selection": _describe_seeds(selection) if selection else "none (no evaluation)",
            "test": "chosen by the bench; checked disjoint from train and selection",
        }

    def offer_best(self, model, venv, timesteps: int, result: dict[str, float]) -> None:
        """After an evaluation: save ``model`` as ``best_model.zip`` (with its statistics)
        when its :data:`SELECTION_METRIC` is the lowest so far; record it in config.json."""
        score = result[SELECTION_METRIC]
        if self.best is not None and not score < self.best[SELECTION_METRIC]:
            return
        path = self.out / BEST_MODEL_FILE
        _write_norm(_norm_state(venv), norm_path_for(path))  # first: the model marks it done
        _save_model(model, path)
        self.best = {"timesteps": int(timesteps), **result, "model": BEST_MODEL_FILE}
        self.write()

    def mark(self, timesteps: int, venv) -> None:
        """A rollout starts: every step so far is trained on; remember this point."""
        self.at, self.norm = int(timesteps), _norm_state(venv)

    def checkpoint(self, model) -> Path:
        """Save the state at the last rollout start (model, observation statistics) as
        ``checkpoints/model_<steps>_steps.zip``; record the session's progress."""
        folder = self.out / CHECKPOINT_DIR
        folder.mkdir(exist_ok=True)
        path = folder / f"model_{self.at}_steps.zip"
        _write_norm(self.norm, norm_path_for(path))  # first: the model file marks it done
        collected, model.num_timesteps = model.num_timesteps, self.at
        try:
            _save_model(model, path)
        finally:
            model.num_timesteps = collected
        self.session["end_timesteps"] = self.at
        self.write()
        return path

    def finish(self, status: str, timesteps: int) -> None:
        self.session["status"], self.session["end_timesteps"] = status, int(timesteps)
        self.write()


def train(
    config: PPOConfig,
    out: str | Path,
    resume: str | Path | None = None,
    force: bool = False,
    progress_bar: bool = True,
    init_from: str | Path | None = None,
    on_eval: Callable[[int, dict[str, float]], Any] | None = None,
) -> Path:
    """Train a MaskablePPO agent; write ``model.zip``, ``obs_norm.npz``, ``config.json``.

    Besides the last model, the run keeps the model of the best in-training held-out
    evaluation (lowest :data:`SELECTION_METRIC` on the selection teachers, seeds
    ``config.selection_task_seeds()``) as ``best_model.zip`` with ``best_obs_norm.npz``; its
    step and scores are ``best`` in ``config.json`` and ``training.json``. ``config.json``'s
    ``task_roles`` records the teacher seeds of training and selection, checked disjoint
    (:func:`check_task_roles`). The same config (seed included) gives the same agent bit
    for bit on the same machine, torch version and thread count: the evaluations do not
    touch the global random states.

    Parameters
    ----------
    config
        The settings. ``config.total_timesteps`` is the **total** number of env steps of the
        run: a resumed run trains only the steps its checkpoint lacks (rounded up to whole
        rollouts of ``n_envs * n_steps`` steps). ``config.checkpoint_every`` (steps) spaces
        the checkpoints, saved at the first rollout start at least that many steps after the
        previous one (a multiple of ``n_envs * n_steps`` gives exact intervals; a new run
        also saves its start).
    out
        Run directory. An existing run there (``config.json`` or ``model.zip``) is never
        replaced unless ``force``, which first removes its files (model, statistics,
        config, logs, checkpoints, evaluations).
    resume
        A checkpoint (``.zip``) or a run directory (its newest checkpoint, see
        :func:`latest_checkpoint`) to continue from, with its ``obs_norm_*.npz``. The log
        rows after the checkpoint (work lost with the interrupted session) are dropped,
        new rows are appended to ``logs/progress.csv`` and ``eval.jsonl``, and the session
        is added to ``config.json``'s ``sessions`` (``start_timesteps``,
        ``end_timesteps``, ``status``: running, completed, interrupted, or killed for a
        session that ended without saving; ``resumed_from``).
    force
        Replace an existing run in ``out``.
    progress_bar
        Show a tqdm progress bar over the run's steps (on stderr).
    init_from
        A trained agent (its run directory or ``model.zip``) to start from instead of random
        weights (fine-tuning, e.g. on a costlier task): its weights and observation
        statistics are loaded, this ``config``'s PPO settings and seed apply, and the
        timesteps count from 0. The observation and action spaces must match (same
        ``max_sites``).
    on_eval
        Called as ``on_eval(timesteps, result)`` after each held-out evaluation (every
        ``config.eval_every`` steps; ``result`` as :func:`evaluate_against_greedy`'s), e.g.
        to report it to a tuner (:mod:`~growenv.harness.sweep`).

    Returns
    -------
    Path
        The trained agent, ``out/model.zip``.

    Raises
    ------
    RunInterrupted
        On SIGINT or SIGTERM, after saving a checkpoint of the last rollout start (a
        :class:`KeyboardInterrupt`; its message names the checkpoint and how to resume).
        A second signal stops at once, with a :class:`KeyboardInterrupt`.
    FileExistsError
        An existing run in ``out`` without ``resume`` or ``force``.
    FileNotFoundError, ValueError
        A missing, truncated or unfitting ``resume``/``init_from`` model; bad settings.
    """
    import torch
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.vec_env import VecNormalize

    config.validate()
    if resume is not None and init_from is not None:
        raise ValueError("train: give resume (continue a run) or init_from (fine-tune), not both")
    what = "resume" if resume is not None else "init_from"
    start_from = None
    if resume is not None or init_from is not None:
        start_from = model_to_load(resume if resume is not None else init_from, what)
    out = Path(out)
    if resume is None and ((out / MODEL_FILE).exists() or (out / CONFIG_FILE).exists()):
        if not force:
            held = (
                "a trained agent"
                if (out / MODEL_FILE).exists()
                else "a run (interrupted?; resume=out, --resume, continues it)"
            )
            raise FileExistsError(
                f"out: {out} already holds {held}; pass force=True (--force) to "
                f"overwrite it or choose another directory"
            )
        _clear_run(out)
    out.mkdir(parents=True, exist_ok=True)
    venv = make_vec_env(config)
    if config.normalize_obs:
        venv = VecNormalize(venv, norm_obs=True, norm_reward=False, clip_obs=10.0)
    if start_from is not None:
        overrides = {} if resume is not None else _ppo_settings(config)
        try:
            model = MaskablePPO.load(start_from, env=venv, device=config.device, **overrides)
        except ValueError as err:  # SB3: spaces differ
            venv.close()
            raise ValueError(
                f"{what}: {start_from} does not fit this env "
                f"(observation/action spaces depend on max_sites): {err}"
            ) from err
        if init_from is not None:
            model.set_random_seed(config.seed)
        norm = read_norm(start_from, what)
        if config.normalize_obs and norm is not None:
            venv.obs_rms.mean, venv.obs_rms.var = norm[0], norm[1]
    else:
        torch.manual_seed(config.seed)
        model = MaskablePPO(
            "MlpPolicy",
            venv,
            policy_kwargs={"net_arch": list(config.net_arch)},
            seed=config.seed,
            device=config.device,
            verbose=0,
            **_ppo_settings(config),
        )
    begin = int(model.num_timesteps) if resume is not None else 0
    if resume is not None:
        _keep_logs_until(out, begin)
    origin = {"resumed_from": None if resume is None else str(start_from)}
    origin["init_from"] = None if init_from is None else str(start_from)
    run = _Run(config, out, begin, origin)
    logger = _logger(out)
    model.set_logger(logger)
    remaining = config.total_timesteps - begin

    def request_stop(signum: int) -> None:
        run.stop = True

    try:
        if remaining > 0:
            with stop_signals(request_stop):
                callbacks = _callbacks(config, out, venv, run, on_eval)
                if progress_bar:
                    callbacks.append(_progress_bar(begin, config.total_timesteps))
                model.learn(
                    total_timesteps=remaining,
                    callback=callbacks,
                    reset_num_timesteps=resume is None,  # a fine-tuning run counts from 0
                )
        if run.stop and model.num_timesteps < config.total_timesteps:
            path = run.checkpoint(model)
            run.finish("interrupted", run.at)
            raise RunInterrupted(
                f"train interrupted at {run.at} of {config.total_timesteps} steps: saved "
                f"{path}; resume with resume={out} (--resume {out})",
                path,
            )
        _save_model(model, out / MODEL_FILE)
        _write_norm(_norm_state(venv), out / NORM_FILE)
        run.finish("completed", model.num_timesteps)
    finally:
        logger.close()
        venv.close()
    cost: dict[str, Any] = {
        "seconds": float(sum(s.get("seconds", 0.0) for s in run.sessions)),
        "timesteps": int(model.num_timesteps),
        "sessions": len(run.sessions),
    }
    if run.best is not None:
        cost["best"] = run.best
    if init_from is not None:
        cost["init_from"] = str(start_from)
    atomic_write_text(out / TRAINING_FILE, json.dumps(cost, indent=2))
    return out / MODEL_FILE
