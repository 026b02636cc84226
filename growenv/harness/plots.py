"""Plots of benchmark rows: test metrics along the growth trajectory (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from growenv.harness.stats import bootstrap_ci
from growenv.harness.summary import value

__all__ = ["plot_results", "plot_task", "trajectory"]

LABELS = {
    "params": "parameters",
    "compute": "compute (MACs)",
    "test_loss": "test loss",
    "test_accuracy": "test accuracy",
    "val_loss": "validation loss",
}


def trajectory(
    rows: Sequence[Mapping[str, Any]], x: str, y: str, n_boot: int = 500
) -> dict[str, np.ndarray]:
    """Mean trajectory over seeds of ``(x, y)`` step by step.

    Parameters
    ----------
    rows
        Rows of one task and one policy.
    x, y
        Row keys (e.g. ``"params"``, ``"test_loss"``).
    n_boot
        Bootstrap resamples of the band.

    Returns
    -------
    dict
        ``{"step", "x", "y", "low", "high"}``: means of ``x`` and ``y`` over the seeds at each
        step reached by every seed, and the 95 % bootstrap CI of the mean of ``y``.
    """
    seeds = {r["seed"] for r in rows}
    by_step: dict[int, list[tuple[float, float]]] = {}
    for r in rows:
        by_step.setdefault(int(r["step"]), []).append((value(r, x), value(r, y)))
    steps = sorted(s for s, v in by_step.items() if len(v) == len(seeds))
    out = {k: np.zeros(len(steps)) for k in ("step", "x", "y", "low", "high")}
    for i, s in enumerate(steps):
        pts = np.array(by_step[s])
        out["step"][i] = s
        out["x"][i], out["y"][i] = np.nanmean(pts, axis=0)
        out["low"][i], out["high"][i] = bootstrap_ci(pts[:, 1], "mean", n_boot)
    return out


def plot_task(
    rows: Sequence[Mapping[str, Any]],
    path: str | Path,
    ys: Sequence[str] | None = None,
    xs: Sequence[str] = ("params", "compute"),
    title: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> Path:
    """Save a grid (``ys`` rows x ``xs`` columns) of mean trajectories per policy.

    Each policy is drawn as its mean trajectory over seeds with a 95 % bootstrap band; an
    ``"oracle"`` policy (one final row per seed) as black crosses per seed and a star at the
    mean; other static baselines (one row per seed) likewise, in their own colour. ``ys``
    defaults to test loss, plus test accuracy for classification. Losses use a
    log scale for regression, the x axes a log scale. ``labels`` renames policies in the
    legend.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    classify = any(r.get("test_accuracy") not in (None, "") for r in rows)
    if ys is None:
        ys = ["test_loss", "test_accuracy"] if classify else ["test_loss"]
    labels = dict(labels or {})
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    fig = Figure(figsize=(5 * len(xs), 3.8 * len(ys)), dpi=100)
    FigureCanvasAgg(fig)  # no global backend switch
    axes = fig.subplots(len(ys), len(xs), squeeze=False)
    if len(policies) > 10:  # the default cycle repeats after 10 colours
        from matplotlib import colormaps

        for ax in axes.flat:
            ax.set_prop_cycle(color=colormaps["tab20"].colors)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            ax = axes[i][j]
            for policy in policies:
                sub = [r for r in rows if r["policy"] == policy]
                label = labels.get(policy, policy)
                if policy == "oracle" or len(sub) == len({r["seed"] for r in sub}):
                    # a static baseline (one row a seed): crosses per seed, a star at the mean
                    px = [value(r, x) for r in sub]
                    py = [value(r, y) for r in sub]
                    color = "k" if policy == "oracle" else None
                    (pts,) = ax.plot(px, py, "x", color=color, markersize=4, alpha=0.5)
                    star = dict(color=pts.get_color(), markersize=14, label=label)
                    ax.plot(np.mean(px), np.mean(py), "*", **star)
                    continue
                t = trajectory(sub, x, y)
                (line,) = ax.plot(t["x"], t["y"], marker="o", markersize=2.5, label=label)
                ax.fill_between(t["x"], t["low"], t["high"], color=line.get_color(), alpha=0.2)
            ax.set_xlabel(LABELS.get(x, x))
            ax.set_ylabel(LABELS.get(y, y))
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap
            if "loss" in y and not classify:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def plot_results(rows: Sequence[Mapping[str, Any]], out: str | Path) -> list[Path]:
    """One PNG per task, ``out/<task>.png`` (see :func:`plot_task`)."""
    out = Path(out)
    paths = []
    for task in dict.fromkeys(r["task"] for r in rows):
        sub = [r for r in rows if r["task"] == task]
        n = len({r["seed"] for r in sub})
        title = f"{task}: mean over {n} seeds, 95% bootstrap band"
        paths.append(plot_task(sub, out / f"{task}.png", title=title))
    return paths
