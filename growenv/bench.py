"""``growenv bench``: compare growth policies over tasks and seeds.

Every (task, policy, seed) episode runs in a worker process (``torch.set_num_threads(1)``
each: with several OpenMP threads per process under load, the tiny matmuls of small nets
become orders of magnitude slower). Results: ``results.csv`` (one row per task, policy, seed
and growth step, columns :data:`agents.evaluate.ROW_FIELDS`), ``summary.json`` (final
metrics per task and policy: mean, IQM, 95 % bootstrap CIs over seeds, paired difference to
the reference policy), a markdown table and PNG plots.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import multiprocessing
import sys
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

__all__ = [
    "METRICS",
    "add_bench_parser",
    "check_out_dir",
    "final_rows",
    "format_table",
    "bench_main",
    "parse_list",
    "parse_seeds",
    "plot_results",
    "run_bench",
    "summarize",
    "write_results",
]

METRICS = ("val_loss", "test_loss", "val_accuracy", "test_accuracy", "params", "compute", "step")
"""Final-step quantities summarised per task and policy (accuracies only for classification)."""

RESULT_FILES = ("results.csv", "summary.json")
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
    from growenv.env import GrowthEnv

    key = json.dumps(env_kwargs, sort_keys=True, default=repr)
    if key not in _ENV_CACHE:
        if len(_ENV_CACHE) >= 4:
            _ENV_CACHE.pop(next(iter(_ENV_CACHE)))
        _ENV_CACHE[key] = GrowthEnv(**env_kwargs)
    return _ENV_CACHE[key]


def _policy_for(spec: str):
    from agents.base import make_policy

    if spec not in _POLICY_CACHE:
        _POLICY_CACHE[spec] = make_policy(spec)
    return _POLICY_CACHE[spec]


def _run_job(job: tuple[str, str, int, dict[str, Any]]) -> list[dict[str, Any]]:
    """One episode (or the oracle run) of ``(task, policy spec, seed, env kwargs)``."""
    from agents.evaluate import oracle_row, run_episode

    task, spec, seed, env_kwargs = job
    kwargs = {**env_kwargs, "task": task}
    try:
        if spec == "oracle":
            rows = [oracle_row(kwargs, seed)]
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
) -> list[dict[str, Any]]:
    """Run every (task, policy, seed) episode and return all rows.

    Parameters
    ----------
    tasks
        Task names of :class:`growenv.env.GrowthEnv` (``task_kwargs`` in ``env_kwargs``
        apply to each).
    policies
        Policy specs of :func:`agents.base.make_policy` (``"greedy"``, ``"ppo:PATH"``, ...).
    seeds
        Episode seeds (``env.reset(seed)`` and ``policy.reset(seed)``).
    env_kwargs
        Other :class:`growenv.env.GrowthEnv` arguments (not ``task``).
    workers
        Worker processes (spawned; each uses one torch thread). ``1`` runs in this process,
        with one torch thread for the duration.
    oracle
        Also train the teacher architecture from scratch (policy ``"oracle"``) for each
        teacher-student task and seed.
    progress
        Show a tqdm progress bar (on stderr).

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
    specs = list(policies)
    jobs = [(t, p, int(s), env_kwargs) for t in tasks for p in specs for s in seeds]
    if oracle:
        jobs += [(t, "oracle", int(s), env_kwargs) for t in tasks if "teacher" in t for s in seeds]
    results: list[list[dict[str, Any]] | None] = [None] * len(jobs)
    bar = tqdm(total=len(jobs), desc="bench", unit="episode", disable=not progress)
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


# --------------------------------------------------------------------------- summary


def final_rows(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], dict[int, dict]]:
    """The last row of every episode: ``{(task, policy): {seed: row}}`` in first-seen order."""
    out: dict[tuple[str, str], dict[int, dict]] = {}
    for row in rows:
        per_seed = out.setdefault((row["task"], row["policy"]), {})
        seed = int(row["seed"])
        if seed not in per_seed or int(row["step"]) >= int(per_seed[seed]["step"]):
            per_seed[seed] = dict(row)
    return out


def _value(row: Mapping[str, Any], key: str) -> float:
    value = row.get(key)
    if value is None or value == "":
        return math.nan
    return float(value)


def summarize(
    rows: Iterable[Mapping[str, Any]],
    reference: str = "greedy",
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Final metrics per task and policy over seeds.

    Returns
    -------
    dict
        ``{task: {policy: {"n": seeds, "metrics": {metric: {"mean", "iqm", "ci_mean":
        [low, high], "ci_iqm": [low, high], "diff_to_reference": {"diff", "low", "high",
        "n"} or None}}}}}`` for each of :data:`METRICS` that has values. The difference is
        ``policy - reference`` paired by seed (mean and its bootstrap CI); ``None`` for the
        reference itself or when it was not run.
    """
    import numpy as np

    from agents.evaluate import bootstrap_ci, iqm, paired_difference

    finals = final_rows(rows)
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for (task, policy), per_seed in finals.items():
        ref = finals.get((task, reference)) if policy != reference else None
        metrics = {}
        for metric in METRICS:
            by_seed = {s: _value(r, metric) for s, r in per_seed.items()}
            values = np.array(list(by_seed.values()), dtype=float)
            if np.isnan(values).all():
                continue
            values = values[~np.isnan(values)]
            diff = None
            if ref is not None:
                ref_seed = {s: _value(r, metric) for s, r in ref.items()}
                diff = paired_difference(by_seed, ref_seed, "mean", n_boot, alpha, seed)
            metrics[metric] = {
                "mean": float(values.mean()),
                "iqm": float(iqm(values)),
                "ci_mean": list(bootstrap_ci(values, "mean", n_boot, alpha, seed)),
                "ci_iqm": list(bootstrap_ci(values, "iqm", n_boot, alpha, seed)),
                "diff_to_reference": diff,
            }
        summary.setdefault(task, {})[policy] = {"n": len(per_seed), "metrics": metrics}
    return summary


def _fmt(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.3g}"
    return f"{x:.4g}"


def _ci(stats: Mapping[str, Any], key: str, ci_key: str) -> str:
    low, high = stats[ci_key]
    return f"{_fmt(stats[key])} [{_fmt(low)}, {_fmt(high)}]"


def format_table(summary: Mapping[str, Any], reference: str = "greedy") -> str:
    """Markdown tables (one per task) of the final metrics with their 95 % CIs."""
    blocks = []
    for task, policies in summary.items():
        classify = any("test_accuracy" in p["metrics"] for p in policies.values())
        cols = ["policy", "n", "test loss: mean [95% CI]", "test loss: IQM [95% CI]"]
        cols.append(f"Δ test loss vs {reference} [95% CI]")
        if classify:
            cols += ["test acc: mean [95% CI]", f"Δ test acc vs {reference} [95% CI]"]
        cols += ["params", "compute (MACs)", "steps"]
        lines = [f"**{task}**", "", "| " + " | ".join(cols) + " |"]
        lines.append("|" + "|".join("---" for _ in cols) + "|")
        for policy, entry in policies.items():
            m = entry["metrics"]
            cells = [policy, str(entry["n"])]
            cells += [_ci(m["test_loss"], "mean", "ci_mean"), _ci(m["test_loss"], "iqm", "ci_iqm")]
            keys = ["test_loss", "test_accuracy"] if classify else ["test_loss"]
            for key in keys:
                if key == "test_accuracy":
                    cells.append(_ci(m[key], "mean", "ci_mean") if key in m else "-")
                d = m.get(key, {}).get("diff_to_reference")
                cells.append(
                    "-" if d is None else f"{_fmt(d['diff'])} [{_fmt(d['low'])}, {_fmt(d['high'])}]"
                )
            cells += [
                _fmt(m["params"]["mean"]),
                _fmt(m["compute"]["mean"]),
                _fmt(m["step"]["mean"]),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


# --------------------------------------------------------------------------- output


def check_out_dir(out: str | Path, force: bool = False) -> Path:
    """Refuse an existing non-empty ``out`` unless ``force`` (results are never overwritten).

    Raises
    ------
    FileExistsError
        If ``out`` is a file, or a non-empty directory and ``force`` is False.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"--out {path}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise FileExistsError(
            f"--out {path}: directory exists and is not empty; choose another directory or "
            "pass --force to overwrite its results"
        )
    return path


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_results(
    out: str | Path,
    rows: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Any],
    config: Mapping[str, Any] | None = None,
    force: bool = False,
) -> list[Path]:
    """Write ``results.csv`` and ``summary.json`` (with ``config``) under ``out``.

    Raises
    ------
    FileExistsError
        See :func:`check_out_dir`.
    """
    from agents.evaluate import ROW_FIELDS

    path = check_out_dir(out, force)
    path.mkdir(parents=True, exist_ok=True)
    csv_path = path / "results.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(ROW_FIELDS), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    json_path = path / "summary.json"
    payload = {"config": dict(config or {}), "summary": summary}
    json_path.write_text(json.dumps(_json_safe(payload), indent=2) + "\n")
    return [csv_path, json_path]


def _curves(rows: Sequence[Mapping[str, Any]], task: str, policy: str, x: str, y: str):
    """Mean over seeds of ``(x, y)`` at each step (steps reached by every seed)."""
    import numpy as np

    by_step: dict[int, list[tuple[float, float]]] = {}
    seeds = {r["seed"] for r in rows if r["task"] == task and r["policy"] == policy}
    for r in rows:
        if r["task"] == task and r["policy"] == policy:
            by_step.setdefault(int(r["step"]), []).append((_value(r, x), _value(r, y)))
    steps = sorted(s for s, v in by_step.items() if len(v) == len(seeds))
    pts = np.array([np.nanmean(np.array(by_step[s]), axis=0) for s in steps])
    return pts.reshape(-1, 2)


def plot_results(rows: Sequence[Mapping[str, Any]], out: str | Path) -> list[Path]:
    """One PNG per task: test loss (and accuracy) vs parameters and vs compute.

    Each policy is drawn as its mean trajectory over seeds (step by step); the oracle (a
    single final point per seed) as a star.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out)
    paths = []
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    for task in tasks:
        task_rows = [r for r in rows if r["task"] == task]
        policies = list(dict.fromkeys(r["policy"] for r in task_rows))
        ys = ["test_loss"]
        if any(r.get("test_accuracy") not in (None, "") for r in task_rows):
            ys.append("test_accuracy")
        fig = Figure(figsize=(10, 3.8 * len(ys)), dpi=100)
        FigureCanvasAgg(fig)  # no global backend switch
        axes = fig.subplots(len(ys), 2, squeeze=False)
        for i, y in enumerate(ys):
            for j, x in enumerate(("params", "compute")):
                ax = axes[i][j]
                for policy in policies:
                    pts = _curves(task_rows, task, policy, x, y)
                    if policy == "oracle":
                        ax.plot(pts[:, 0], pts[:, 1], "k*", markersize=12, label="oracle")
                    else:
                        ax.plot(pts[:, 0], pts[:, 1], marker="o", markersize=3, label=policy)
                ax.set_xlabel("parameters" if x == "params" else "compute (MACs)")
                ax.set_ylabel(y.replace("_", " "))
                ax.set_xscale("log")
                if y == "test_loss":
                    ax.set_yscale("log")
                ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.suptitle(f"{task}: mean over seeds")
        fig.tight_layout()
        path = out / f"{task}.png"
        fig.savefig(path)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- CLI


def add_bench_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``bench`` subcommand on ``subparsers`` (from ``add_subparsers``)."""
    p = subparsers.add_parser(
        "bench",
        help="compare growth policies over tasks and seeds (CSV, JSON, table, plots)",
        description="Run every (task, policy, seed) growth episode in parallel worker "
        "processes and summarise the final losses with means, IQMs and 95% bootstrap "
        "confidence intervals over seeds, and the paired difference to the reference policy.",
    )
    p.add_argument(
        "--tasks", default="teacher_student", help="comma-separated tasks (teacher_student, ...)"
    )
    p.add_argument(
        "--policies",
        default="greedy,greedy-loss,round-robin,random",
        help="comma-separated policies: greedy, greedy-loss, round-robin, random, bic, "
        "annealing, periodic, ppo:PATH",
    )
    p.add_argument("--seeds", default="10", help="N (seeds 0..N-1), A-B or a,b,c (default 10)")
    p.add_argument(
        "--env-kwargs",
        default="{}",
        help='GrowthEnv arguments as JSON, e.g. \'{"train_steps": 50, "max_steps": 12}\'',
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--oracle", action="store_true", help="add the teacher-architecture oracle row")
    p.add_argument("--reference", default="greedy", help="policy the differences refer to")
    p.add_argument("--out", default=None, help="results directory (results.csv, summary.json)")
    p.add_argument("--force", action="store_true", help="overwrite results in a non-empty --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=bench_main)
    return p


def bench_main(args: argparse.Namespace) -> int:
    """Run ``growenv bench`` with parsed ``args``; returns the exit status."""
    try:
        tasks, policies = parse_list(args.tasks), parse_list(args.policies)
        seeds = parse_seeds(args.seeds)
        env_kwargs = json.loads(args.env_kwargs)
        if not isinstance(env_kwargs, dict):
            raise ValueError("--env-kwargs: expected a JSON object")
        if args.workers < 1:
            raise ValueError("--workers: expected an int >= 1")
        if args.out is not None:
            check_out_dir(args.out, args.force)
        from agents.base import make_policy

        for spec in policies:  # fail before running anything
            if not spec.startswith("ppo:"):
                make_policy(spec)
    except (ValueError, FileExistsError) as err:
        print(f"growenv bench: error: {err}", file=sys.stderr)
        return 2
    rows = run_bench(
        tasks, policies, seeds, env_kwargs, args.workers, args.oracle, not args.no_progress
    )
    summary = summarize(rows, reference=args.reference)
    print(format_table(summary, reference=args.reference))
    if args.out is not None:
        config = {
            "tasks": tasks,
            "policies": policies,
            "seeds": seeds,
            "env_kwargs": env_kwargs,
            "oracle": args.oracle,
            "reference": args.reference,
        }
        paths = write_results(args.out, rows, summary, config, force=args.force)
        paths += plot_results(rows, args.out)
        print("\nwrote " + ", ".join(str(p) for p in paths))
    return 0
