"""Training sweeps with Ray Tune: configurations x training seeds, ASHA, resume, a summary.

A sweep file (JSON) names the configurations to try and the training seeds of each::

    {
      "base": {"total_timesteps": 60000, "env_kwargs": {"max_params": 800}},
      "grid": {"learning_rate": [1e-4, 3e-4], "env_kwargs.neurons_per_growth": [2, 4]},
      "seeds": 5,
      "asha": {"grace_period": 10000, "reduction_factor": 2}
    }

``learner`` (optional) says what is trained: ``"ppo"`` (default: MaskablePPO,
:func:`~growenv.harness.ppo_training.train`) or ``"value"`` (double DQN or the contextual
bandit, :func:`~growenv.learners.value.train_value_agent`). ``base`` holds the learner's
settings, :class:`~growenv.harness.ppo_training.PPOConfig` or
:class:`~growenv.learners.value.ValueConfig` (``algo``, ``lr``, ``n_step``, ...;
``env_kwargs`` are merged onto :data:`~growenv.harness.ppo_training.DEFAULT_ENV_KWARGS`);
``grid`` gives lists of values whose product are the configurations, or ``random`` draws
``samples`` configurations (``{"samples": 8, "seed": 0, "space": {"learning_rate":
{"loguniform": [1e-5, 1e-3]}, "n_steps": {"choice": [16, 32]}}}``, also ``uniform``); a key
``env_kwargs.NAME`` sets an env setting. The configurations are drawn here, once, so the
seeds of a configuration share its settings. ``seeds`` is a count (``0..N-1``) or a list;
``asha`` (``false`` to turn it off) stops trials early on the in-training held-out
evaluation (``metric``, default ``agent_over_greedy``: the agent's final validation loss over
greedy's on held-out teachers, lower is better), reported to Tune by the training's
``on_eval`` at every evaluation.

Every trial (configuration ``i``, seed ``s``) is a normal training run directory,
``OUT/runs/c<i>_s<s>``: a PPO run (checkpoints, logs, ``config.json``, ``eval.jsonl``,
``model.zip``; ``growenv bench --policy ppo:OUT/runs/c<i>_s<s>``) or a value run
(``config.json``, ``progress.csv`` with the evaluations, ``checkpoint.pt``, ``model.pt``,
``best_model.pt``; ``dqn:OUT/runs/c<i>_s<s>``). Finished trials are recorded in
``OUT/trials.jsonl`` (``completed``, ``stopped`` by ASHA, ``error``); Ray Tune's experiment
state is in ``OUT/tune``. A resumed sweep (:func:`run_sweep` with ``resume=True``)
restores it (``Tuner.restore``): finished trials stay finished, an interrupted trial continues
from its run directory's newest checkpoint (a value run's ``checkpoint.pt``, which
:func:`~growenv.learners.value.train_value_agent` saves at every evaluation; a trial stopped
before its first evaluation starts again).
``OUT/summary.json`` and ``OUT/summary.md`` hold,
per configuration, the held-out score of each seed (its last evaluation), its IQM over seeds
with a 95 % bootstrap CI (:mod:`~growenv.harness.stats`), and the selected configuration (the
lowest IQM among those whose every seed completed; see :func:`summarize_sweep`) with its seeds'
model paths (for a value sweep, the run directories).

Ray is imported only inside the functions that run a sweep (``pip install -e ".[ray]"``).
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from growenv.errors import UserError
from growenv.harness.lifecycle import RunInterrupted, atomic_write_text
from growenv.harness.ppo_training import DEFAULT_ENV_KWARGS, EVAL_FILE, PPOConfig
from growenv.harness.stats import bootstrap_ci, iqm
from growenv.learners.value import CHECKPOINT_FILE, ValueConfig
from growenv.learners.value import CONFIG_FILE as VALUE_CONFIG_FILE
from growenv.learners.value import MODEL_FILE as VALUE_MODEL_FILE
from growenv.learners.value import PROGRESS_FILE as VALUE_PROGRESS_FILE

__all__ = [
    "LEARNERS",
    "METRICS",
    "SweepSpec",
    "format_sweep",
    "load_sweep",
    "run_sweep",
    "summarize_sweep",
]

METRICS = ("agent_over_greedy", "agent_val_loss")
"""Held-out scores a sweep can select on (lower is better), from the training's evaluation."""
SPEC_FILE = "sweep.json"
TRIALS_FILE = "trials.jsonl"
RUNS_DIR = "runs"
TUNE_DIR = "tune"
SUMMARY_FILES = ("summary.json", "summary.md")
LEARNERS: dict[str, type[PPOConfig] | type[ValueConfig]] = {"ppo": PPOConfig, "value": ValueConfig}
"""What a sweep file's ``learner`` may name, and the settings class of its configurations."""
_EXAMPLES = {"ppo": "learning_rate, n_steps, total_timesteps", "value": "algo, lr, n_step, gamma"}
_EVAL_COLUMNS = ("agent_val_loss", "greedy_val_loss", "agent_over_greedy")
_KEYS = {"learner", "base", "grid", "random", "seeds", "asha", "metric"}
_Report = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class SweepSpec:
    """A sweep: its configurations (settings of the ``learner``'s config class, see
    :data:`LEARNERS`, without the seed), the training seeds of each, the selection metric,
    the ASHA settings (``None``: no early stop) and the learner (``"ppo"`` or ``"value"``)."""

    configs: tuple[dict[str, Any], ...]
    params: tuple[dict[str, Any], ...]
    seeds: tuple[int, ...]
    metric: str = "agent_over_greedy"
    asha: dict[str, Any] | None = None
    learner: str = "ppo"

    def trial_name(self, config: int, seed: int) -> str:
        """``c<config>_s<seed>``: the trial's name and run directory."""
        return f"c{config}_s{seed}"

    def to_json(self) -> dict[str, Any]:
        """The resolved sweep (``OUT/sweep.json``)."""
        return {
            "configs": list(self.configs),
            "params": list(self.params),
            "seeds": list(self.seeds),
            "metric": self.metric,
            "asha": self.asha,
            "learner": self.learner,
        }


def _set(settings: dict[str, Any], key: str, value: Any, where: str, learner: str) -> None:
    """Set a field of the ``learner``'s config class or an ``env_kwargs.NAME`` in
    ``settings``."""
    cls = LEARNERS[learner]
    head, dot, rest = key.partition(".")
    if dot and head == "env_kwargs" and rest:
        settings["env_kwargs"] = {**settings.get("env_kwargs", {}), rest: value}
    elif not dot and key in {f.name for f in dataclasses.fields(cls)} - {"seed", "env_kwargs"}:
        settings[key] = value
    else:
        raise UserError(
            f"{where}: unknown key {key!r}; expected a {cls.__name__} setting (e.g. "
            f"{_EXAMPLES[learner]}) or env_kwargs.NAME (seeds are given by 'seeds')"
        )


def _draw(space: Mapping[str, Any], rng: np.random.Generator, where: str) -> dict[str, Any]:
    out = {}
    for key, dist in space.items():
        if not isinstance(dist, dict) or len(dist) != 1:
            raise UserError(f"{where}.{key}: expected {{'uniform'|'loguniform'|'choice': ...}}")
        ((kind, arg),) = dist.items()
        if kind == "choice" and isinstance(arg, list) and arg:
            out[key] = arg[int(rng.integers(len(arg)))]
        elif kind in ("uniform", "loguniform") and _pair(arg, kind == "loguniform"):
            lo, hi = (math.log(a) for a in arg) if kind == "loguniform" else arg
            value = float(rng.uniform(lo, hi))
            out[key] = math.exp(value) if kind == "loguniform" else value
        else:
            raise UserError(
                f"{where}.{key}: expected choice: [values], uniform: [low, high] or "
                f"loguniform: [low, high] (low > 0), got {dist!r}"
            )
    return out


def _pair(arg: Any, positive: bool) -> bool:
    ok = isinstance(arg, list) and len(arg) == 2
    ok = ok and all(isinstance(a, int | float) and not isinstance(a, bool) for a in arg)
    return ok and arg[0] <= arg[1] and (not positive or arg[0] > 0)


def load_sweep(source: str | Path | Mapping[str, Any]) -> SweepSpec:
    """The sweep of a JSON file (or of its parsed dict), checked.

    Raises
    ------
    UserError
        One line naming the file and the first problem: a missing or unreadable file, bad
        JSON, an unknown learner or key, an empty search, or a configuration the learner's
        config class (``PPOConfig``, ``ValueConfig``) refuses.
    """
    where = "sweep"
    if isinstance(source, Mapping):
        data: Any = dict(source)
    else:
        path = Path(source)
        where = str(path)
        if not path.is_file():
            raise UserError(
                f"CONFIG: expected a sweep file (JSON), got {str(path)!r}: not an existing file"
            )
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UserError(f"{where}: expected a JSON object ({err})") from None
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a JSON object with 'grid' or 'random'")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; expected {', '.join(sorted(_KEYS))}")
    learner = data.get("learner", "ppo")
    if not isinstance(learner, str) or learner not in LEARNERS:
        raise UserError(
            f"{where}: learner: expected one of {', '.join(map(repr, LEARNERS))}, got {learner!r}"
        )
    cls = LEARNERS[learner]
    base: dict[str, Any] = {"env_kwargs": dict(DEFAULT_ENV_KWARGS)}
    given = data.get("base", {})
    if not isinstance(given, dict):
        raise UserError(f"{where}: base: expected an object of {cls.__name__} settings")
    for key, value in given.items():
        if key == "env_kwargs" and isinstance(value, dict):
            base["env_kwargs"] = {**base["env_kwargs"], **value}
        else:
            _set(base, key, value, f"{where}: base", learner)
    if ("grid" in data) == ("random" in data):
        raise UserError(f"{where}: expected one of 'grid' (lists of values) or 'random'")
    if "grid" in data:
        grid = data["grid"]
        if (
            not isinstance(grid, dict)
            or not grid
            or not all(isinstance(v, list) and v for v in grid.values())
        ):
            raise UserError(f"{where}: grid: expected {{key: [values, ...]}}, non-empty")
        params = [
            dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())
        ]
    else:
        random = data["random"]
        if not isinstance(random, dict) or not isinstance(random.get("space"), dict):
            raise UserError(f"{where}: random: expected {{'samples': N, 'space': {{...}}}}")
        samples = random.get("samples", 1)
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise UserError(f"{where}: random.samples: expected an int >= 1, got {samples!r}")
        rng = np.random.default_rng(random.get("seed", 0))
        params = [_draw(random["space"], rng, f"{where}: random.space") for _ in range(samples)]
    configs = []
    for p in params:
        settings = json.loads(json.dumps(base))
        for key, value in p.items():
            search = "grid" if "grid" in data else "random"
            _set(settings, key, value, f"{where}: {search}", learner)
        try:
            config = cls.from_json(settings).validate()
        except (TypeError, ValueError) as err:
            raise UserError(f"{where}: configuration {p}: {err}") from None
        _check_evaluated(config, f"{where}: configuration {p}")
        configs.append(config.to_json() | {"seed": 0})
    seeds = data.get("seeds", 3)
    if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1:
        seeds = list(range(seeds))
    if not (
        isinstance(seeds, list)
        and seeds
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
        and len(set(seeds)) == len(seeds)
    ):
        raise UserError(f"{where}: seeds: expected N or a list of distinct seeds >= 0")
    metric = data.get("metric", METRICS[0])
    if metric not in METRICS:
        raise UserError(f"{where}: metric: expected one of {', '.join(METRICS)}, got {metric!r}")
    asha = data.get("asha", {})
    if asha is not False and not isinstance(asha, dict):
        raise UserError(f"{where}: asha: expected an object or false, got {asha!r}")
    if isinstance(asha, dict):
        unknown = sorted(set(asha) - {"grace_period", "reduction_factor"})
        if unknown:
            raise UserError(f"{where}: asha: unknown key {unknown[0]!r}")
    return SweepSpec(
        tuple(configs),
        tuple(params),
        tuple(seeds),
        metric,
        None if asha is False else dict(asha),
        learner,
    )


def _check_evaluated(config: PPOConfig | ValueConfig, where: str) -> None:
    """Refuse a configuration whose training would never evaluate on the held-out teachers
    (what a sweep selects on): a value run evaluates only once its ``learning_starts`` steps
    are done."""
    value = isinstance(config, ValueConfig)
    late = value and config.learning_starts > config.total_timesteps
    if not 1 <= config.eval_every <= config.total_timesteps or not config.eval_tasks or late:
        starts = ", learning_starts <= total_timesteps" if value else ""
        raise UserError(
            f"{where}: expected 1 <= eval_every <= total_timesteps{starts} and eval_tasks >= 1 "
            "(the held-out evaluation is what a sweep selects on)"
        )


# --------------------------------------------------------------------------- running


def _trial(params: dict[str, Any], spec: dict[str, Any], out: str) -> None:
    """A Tune trial: train configuration ``params['config']`` with seed ``params['seed']``
    in its run directory (continuing its newest checkpoint), reporting each evaluation."""
    from ray import tune

    from growenv.threads import set_threads

    set_threads(1)
    settings = {**spec["configs"][params["config"]], "seed": params["seed"]}
    run = Path(out) / RUNS_DIR / f"c{params['config']}_s{params['seed']}"

    def report(timesteps: int, result: dict[str, float]) -> None:
        if timesteps < settings["total_timesteps"]:  # the last one after the model is saved
            tune.report({"timesteps": int(timesteps), **result})

    train = _train_value if spec.get("learner", "ppo") == "value" else _train_ppo
    steps = train(settings, run, report)
    last = _last_eval(run)
    if last is not None:
        tune.report({**last, "timesteps": max(steps, int(last["timesteps"]))})


def _train_ppo(settings: dict[str, Any], run: Path, report: _Report) -> int:
    """Train (or continue) the PPO run of ``settings`` in ``run`` unless it finished before
    the sweep was interrupted; return its env steps."""
    from growenv.harness.ppo_training import TRAINING_FILE, latest_checkpoint, train

    config = PPOConfig.from_json(settings)
    done = run / TRAINING_FILE
    if not done.is_file() or json.loads(done.read_text())["timesteps"] < config.total_timesteps:
        resume = run if run.is_dir() and latest_checkpoint(run) is not None else None
        train(config, run, resume=resume, force=resume is None, progress_bar=False, on_eval=report)
    return int(json.loads(done.read_text())["timesteps"])


def _train_value(settings: dict[str, Any], run: Path, report: _Report) -> int:
    """Train (or continue, from ``checkpoint.pt``) the value run of ``settings`` in ``run``
    unless it finished before the sweep was interrupted; return its env steps. A run killed
    before it wrote a checkpoint starts again."""
    from growenv.learners.value import train_value_agent

    saved = run / VALUE_CONFIG_FILE
    sessions = json.loads(saved.read_text())["sessions"] if saved.is_file() else []
    if not sessions or sessions[-1]["status"] != "completed":
        resume = saved.is_file() and (run / CHECKPOINT_FILE).is_file()
        if run.is_dir() and not resume:
            shutil.rmtree(run)
        train_value_agent(ValueConfig.from_json(settings), run, resume=resume, on_eval=report)
        sessions = json.loads(saved.read_text())["sessions"]
    return int(sessions[-1]["end_timesteps"])


def _last_eval(run: Path) -> dict[str, Any] | None:
    """The run's last held-out evaluation: a PPO run's ``eval.jsonl``'s last whole line, or
    a value run's last ``progress.csv`` row with an ``agent_over_greedy`` (its evaluation
    columns and ``timesteps``); ``None`` before any."""
    path = run / EVAL_FILE
    if path.is_file():
        last = None
        for line in path.read_text().splitlines():
            try:
                last = json.loads(line)
            except ValueError:
                continue
        return last
    path = run / VALUE_PROGRESS_FILE
    if not path.is_file():
        return None
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("agent_over_greedy")]
    for row in reversed(rows):  # a row cut short by a killed trial is skipped
        try:
            return {"timesteps": int(row["timesteps"])} | {k: float(row[k]) for k in _EVAL_COLUMNS}
        except (TypeError, ValueError):
            continue
    return None


def _check_out(out: Path, spec: SweepSpec, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: expected a directory, but {out} is a file")
    saved = out / SPEC_FILE
    if resume:
        if not saved.is_file() or not (out / TUNE_DIR).is_dir():
            raise UserError(f"--resume: expected a sweep in {out}, found no {SPEC_FILE} / tune/")
        before = {"learner": "ppo"} | json.loads(saved.read_text())  # older: PPO only
        if before != json.loads(json.dumps(spec.to_json())):
            raise UserError(
                f"--resume: {out} holds another sweep (its {SPEC_FILE} differs from this "
                "CONFIG); use the same file or another --out"
            )
    elif out.is_dir() and any(out.iterdir()):
        raise UserError(
            f"--out: {out} is not empty; pass --resume to finish its sweep or choose another "
            "directory"
        )


def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    resume: bool = False,
    address: str | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or finish) a sweep with Ray Tune; write and return its summary.

    Parameters
    ----------
    spec
        The sweep (:func:`load_sweep`).
    out
        Its directory (``sweep.json``, ``runs/``, ``trials.jsonl``, ``tune/``, summaries).
    resume
        Finish the interrupted sweep in ``out`` (same spec required).
    address
        A running Ray cluster to join; ``None`` starts a local Ray with ``workers`` CPUs.
    workers
        CPUs of a local Ray (``None``: all). Each trial takes one CPU.
    progress
        One tqdm bar over the trials (on stderr).

    Raises
    ------
    UserError
        Ray missing, a bad ``out`` or a resume of another sweep.
    RunInterrupted
        Ctrl-C: Tune saved its state; ``resume=True`` continues.
    """
    from growenv.harness.ray_backend import ray_session, require_ray

    require_ray("sweep")
    out = Path(out).resolve()
    _check_out(out, spec, resume)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / SPEC_FILE, json.dumps(spec.to_json(), indent=2) + "\n")
    with ray_session(address, workers, "--address"):
        _fit(spec, out, resume, progress)
    total = len(spec.configs) * len(spec.seeds)
    finished = len(_trials(out))
    if finished < total:  # Tune stopped on Ctrl-C, its state saved
        summarize_sweep(out)
        raise RunInterrupted(
            f"sweep interrupted: {finished} of {total} trials finished, kept in {out}; "
            "re-run with --resume",
            out,
        )
    return summarize_sweep(out)


def _fit(spec: SweepSpec, out: Path, resume: bool, progress: bool) -> None:
    """Run the sweep's trials with Tune (a new experiment, or the restored one)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's console output off (verbose=0)
    from ray import tune

    logging.getLogger("ray.tune").setLevel(logging.ERROR)  # its warnings of trials it stopped
    from ray.tune.schedulers import ASHAScheduler
    from tqdm.auto import tqdm

    total = len(spec.configs) * len(spec.seeds)
    bar = tqdm(
        total=total, initial=len(_trials(out)), desc="sweep", unit="trial", disable=not progress
    )

    class Record(tune.Callback):
        """Record each finished trial in trials.jsonl (the sweep's own store) and count it."""

        def _write(self, trial, status: str) -> None:
            result = trial.last_result or {}
            cfg = spec.configs[trial.config["config"]]
            if status == "completed" and result.get("timesteps", 0) < cfg["total_timesteps"]:
                status = "stopped"  # by ASHA
            line = {
                "trial": spec.trial_name(trial.config["config"], trial.config["seed"]),
                "config": trial.config["config"],
                "seed": trial.config["seed"],
                "status": status,
                "timesteps": result.get("timesteps"),
                spec.metric: result.get(spec.metric),
            }
            with open(out / TRIALS_FILE, "a") as f:
                f.write(json.dumps(line) + "\n")
            bar.update()

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self._write(trial, "completed")

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            self._write(trial, "error")

    trainable = tune.with_resources(
        tune.with_parameters(_trial, spec=spec.to_json(), out=str(out)), {"cpu": 1}
    )
    scheduler = None
    if spec.asha is not None:
        max_t = max(c["total_timesteps"] for c in spec.configs)
        grace = spec.asha.get("grace_period", min(c["eval_every"] for c in spec.configs))
        scheduler = ASHAScheduler(
            time_attr="timesteps",
            max_t=max_t,
            grace_period=grace,
            reduction_factor=spec.asha.get("reduction_factor", 2),
        )
    run_config = tune.RunConfig(
        name=TUNE_DIR,
        storage_path=str(out),
        verbose=0,
        callbacks=[Record()],
        failure_config=tune.FailureConfig(max_failures=2),
    )
    try:
        if resume and tune.Tuner.can_restore(str(out / TUNE_DIR)):
            tuner = tune.Tuner.restore(
                str(out / TUNE_DIR), trainable, resume_unfinished=True, resume_errored=True
            )
        else:
            tuner = tune.Tuner(
                trainable,
                param_space={
                    "config": tune.grid_search(list(range(len(spec.configs)))),
                    "seed": tune.grid_search(list(spec.seeds)),
                },
                tune_config=tune.TuneConfig(
                    metric=spec.metric, mode="min", scheduler=scheduler, reuse_actors=False
                ),
                run_config=run_config,
            )
        tuner.fit()
    finally:
        bar.close()


def _trials(out: Path) -> dict[str, dict[str, Any]]:
    """Finished trials of the sweep in ``out``: ``{name: record}`` (the last record)."""
    path = Path(out) / TRIALS_FILE
    records: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            records[record["trial"]] = record
    return records


def summarize_sweep(out: str | Path) -> dict[str, Any]:
    """Write ``summary.json`` and ``summary.md`` of the sweep in ``out``; return the summary.

    Per configuration: its settings, each seed's status and held-out score (the last
    evaluation in its run directory), the IQM over seeds with a 95 % bootstrap CI, and the
    mean. ``selected`` is the configuration with the lowest IQM among those whose every seed
    completed (if none did, because ASHA stopped some seeds: among those with a completed
    seed, ``all_seeds`` false), with its completed seeds' model paths (PPO: ``best_model.zip``,
    the best in-training checkpoint, where training kept one, else ``model.zip``; value: the
    run directory, which ``dqn:RUN`` loads); ``None`` when no trial completed.
    """
    out = Path(out)
    spec = json.loads((out / SPEC_FILE).read_text())
    trials = _trials(out)
    metric = spec["metric"]
    rows = []
    for i, (config, params) in enumerate(zip(spec["configs"], spec["params"], strict=True)):
        seeds = []
        for s in spec["seeds"]:
            name = f"c{i}_s{s}"
            run = out / RUNS_DIR / name
            last = _last_eval(run) or {}
            status = trials.get(name, {}).get("status", "unfinished")
            model = _model(run, spec.get("learner", "ppo"))
            seeds.append(
                {
                    "seed": s,
                    "status": status,
                    "timesteps": last.get("timesteps"),
                    "score": last.get(metric),
                    "model": str(model) if status == "completed" and model else None,
                }
            )
        scores = [x["score"] for x in seeds if x["score"] is not None]
        low, high = bootstrap_ci(scores, "iqm") if scores else (float("nan"), float("nan"))
        rows.append(
            {
                "config": i,
                "params": params,
                "iqm": float(iqm(scores)) if scores else float("nan"),
                "ci": [low, high],
                "mean": float(np.mean(scores)) if scores else float("nan"),
                "completed": sum(x["model"] is not None for x in seeds),
                "seeds": seeds,
                "total_timesteps": config["total_timesteps"],
            }
        )
    # every seed completed; else (ASHA stopped some) those with a completed seed
    complete = [r for r in rows if r["completed"] == len(spec["seeds"])]
    complete = complete or [r for r in rows if r["completed"]]
    best = min(complete, key=lambda r: r["iqm"]) if complete else None
    selected = None
    if best is not None:
        selected = {
            "config": best["config"],
            "params": best["params"],
            "settings": spec["configs"][best["config"]],
            "models": [x["model"] for x in best["seeds"] if x["model"] is not None],
            "all_seeds": best["completed"] == len(spec["seeds"]),
        }
    summary = {"metric": metric, "seeds": spec["seeds"], "configs": rows, "selected": selected}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "summary.md", format_sweep(summary))
    return summary


def _model(run: Path, learner: str) -> Path | None:
    """What a completed trial's agent is (``None``: no model saved): a PPO run's
    ``best_model.zip`` (its best checkpoint on the selection teachers, what ``ppo:RUN``
    loads) where training kept one, else ``model.zip``; a value run's directory (what
    ``dqn:RUN`` loads: its ``best_model.pt`` or ``model.pt``)."""
    if learner == "value":
        return run if (run / VALUE_MODEL_FILE).is_file() else None
    model = run / "best_model.zip"
    if not model.is_file():
        model = run / "model.zip"
    return model if model.is_file() else None


def format_sweep(summary: Mapping[str, Any]) -> str:
    """The summary as a markdown table (one row per configuration) and the selection."""
    n = len(summary["seeds"])
    lines = [
        f"| config | settings | {summary['metric']} IQM [95% CI] | mean | completed |",
        "|---|---|---|---|---|",
    ]
    for r in summary["configs"]:
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items()
        )
        lines.append(
            f"| c{r['config']} | {params} | {r['iqm']:.4g} [{r['ci'][0]:.4g}, {r['ci'][1]:.4g}] "
            f"| {r['mean']:.4g} | {r['completed']}/{n} |"
        )
    selected = summary["selected"]
    lines.append("")
    if selected is None:
        lines.append("selected: none (no configuration completed with every seed)")
    else:
        partial = "" if selected["all_seeds"] else " (not every seed completed: ASHA)"
        lines.append(f"selected: c{selected['config']} ({selected['params']}){partial}; models:")
        lines += [f"- {m}" for m in selected["models"]]
    return "\n".join(lines) + "\n"
