"""Summaries of benchmark rows: final metrics over seeds, markdown tables, result files."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from growenv.harness.episodes import ROW_FIELDS
from growenv.harness.lifecycle import atomic_path, atomic_write_text
from growenv.harness.stats import bootstrap_ci, iqm, paired_difference
from growenv.harness.store import STORE_FILE

__all__ = [
    "METRICS",
    "check_out_dir",
    "check_out_file",
    "fmt",
    "final_rows",
    "format_paired",
    "format_table",
    "summarize",
    "value",
    "write_results",
]

METRICS = ("val_loss", "test_loss", "val_accuracy", "test_accuracy", "params", "compute", "step")
"""Final-step quantities summarised per task and policy (accuracies only for classification)."""


def value(row: Mapping[str, Any], key: str) -> float:
    """``row[key]`` as a float; ``nan`` for ``None``, ``""`` (CSV) or a missing key."""
    v = row.get(key)
    if v is None or v == "":
        return math.nan
    return float(v)


def final_rows(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], dict[int, dict]]:
    """The last row of every episode: ``{(task, policy): {seed: row}}`` in first-seen order."""
    out: dict[tuple[str, str], dict[int, dict]] = {}
    for row in rows:
        per_seed = out.setdefault((row["task"], row["policy"]), {})
        seed = int(row["seed"])
        if seed not in per_seed or int(row["step"]) >= int(per_seed[seed]["step"]):
            per_seed[seed] = dict(row)
    return out


def summarize(
    rows: Iterable[Mapping[str, Any]],
    reference: str = "greedy",
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Final metrics per task and policy over seeds.

    Parameters
    ----------
    rows
        Result rows (:data:`growenv.harness.episodes.ROW_FIELDS`; CSV strings are fine).
    reference
        Policy the paired differences refer to.
    n_boot, alpha, seed
        Bootstrap settings (see :func:`~growenv.harness.episodes.bootstrap_ci`).

    Returns
    -------
    dict
        ``{task: {policy: {"n": seeds, "metrics": {metric: {"mean", "iqm", "ci_mean":
        [low, high], "ci_iqm": [low, high], "diff_to_reference": {"diff", "low", "high",
        "n"} or None}}}}}`` for each of :data:`METRICS` that has values. The difference is
        ``policy - reference`` paired by seed (mean and its bootstrap CI); ``None`` for the
        reference itself or when it was not run.
    """
    finals = final_rows(rows)
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for (task, policy), per_seed in finals.items():
        ref = finals.get((task, reference)) if policy != reference else None
        metrics = {}
        for metric in METRICS:
            by_seed = {s: value(r, metric) for s, r in per_seed.items()}
            values = np.array(list(by_seed.values()), dtype=float)
            values = values[~np.isnan(values)]
            if values.size == 0:
                continue
            diff = None
            if ref is not None:
                ref_seed = {s: value(r, metric) for s, r in ref.items()}
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


def fmt(x: float | None) -> str:
    """Four significant digits; scientific notation for large or small magnitudes."""
    if x is None or not math.isfinite(x):
        return "-"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.3g}"
    return f"{x:.4g}"


def _with_ci(stats: Mapping[str, Any] | None, key: str = "mean") -> str:
    if stats is None:
        return "-"
    low, high = stats["ci_mean" if key == "mean" else "ci_iqm"]
    return f"{fmt(stats[key])} [{fmt(low)}, {fmt(high)}]"


def _diff(stats: Mapping[str, Any] | None) -> str:
    d = None if stats is None else stats.get("diff_to_reference")
    return "-" if d is None else f"{fmt(d['diff'])} [{fmt(d['low'])}, {fmt(d['high'])}]"


def format_paired(
    values: Mapping[int, float],
    reference: Mapping[int, float],
    stat: str = "mean",
    digits: int = 3,
) -> str:
    """``"+0.012 [-0.003, +0.027]"``: the paired difference ``values - reference`` (by seed)
    with its 95 % bootstrap CI (see :func:`~growenv.harness.episodes.paired_difference`)."""
    d = paired_difference(values, reference, stat)
    return f"{d['diff']:+.{digits}f} [{d['low']:+.{digits}f}, {d['high']:+.{digits}f}]"


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
            loss = m.get("test_loss")
            cells = [policy, str(entry["n"]), _with_ci(loss), _with_ci(loss, "iqm"), _diff(loss)]
            if classify:
                cells += [_with_ci(m.get("test_accuracy")), _diff(m.get("test_accuracy"))]
            cells += [fmt(m[k]["mean"]) if k in m else "-" for k in ("params", "compute", "step")]
            lines.append("| " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def check_out_dir(out: str | Path, force: bool = False, resume: bool = False) -> Path:
    """Refuse an existing non-empty ``out`` unless ``force`` or ``resume`` (results are never
    overwritten by accident).

    ``resume`` accepts a directory that holds an earlier run's results (see
    :func:`~growenv.harness.bench.run_bench`).

    Raises
    ------
    FileExistsError
        If ``out`` is a file, or a non-empty directory and neither ``force`` nor ``resume``.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"--out {path}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not (force or resume):
        raise FileExistsError(
            f"--out {path}: directory exists and is not empty; choose another directory, "
            "pass --resume to finish its run or --force to replace its results"
        )
    return path


def check_out_file(out: str | Path, force: bool = False) -> Path:
    """Refuse an existing ``out`` file unless ``force`` (a benchmark's results file).

    Raises
    ------
    FileExistsError
        If ``out`` is a directory, or an existing file and ``force`` is False.
    """
    path = Path(out)
    if path.is_dir():
        raise FileExistsError(f"--out {path}: is a directory; expected a file path")
    if path.exists() and not force:
        raise FileExistsError(
            f"--out {path}: file exists; choose another path or pass --force to overwrite it"
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
    """Write ``results.csv`` and ``summary.json`` (``{"config", "summary"}``) under ``out``.

    Missing values are empty CSV cells and JSON ``null``. A directory that holds a bench
    store (:data:`~growenv.harness.store.STORE_FILE`, written by
    ``run_bench(out=...)``) is the run's own: its result files are replaced. Each file is
    written atomically (a kill leaves the previous one or the new one).

    Raises
    ------
    FileExistsError
        See :func:`check_out_dir`.
    """
    path = Path(out)
    if not (path / STORE_FILE).is_file():
        check_out_dir(out, force)
    path.mkdir(parents=True, exist_ok=True)
    csv_path = path / "results.csv"
    with atomic_path(csv_path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(ROW_FIELDS), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    json_path = path / "summary.json"
    payload = {"config": dict(config or {}), "summary": summary}
    atomic_write_text(json_path, json.dumps(_json_safe(payload), indent=2) + "\n")
    return [csv_path, json_path]
