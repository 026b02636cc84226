"""Plots of benchmark rows (test metrics along the growth trajectory) and of rliable-style
reports (interval estimates, performance profiles); matplotlib, Agg."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from growenv.harness.rliable import Interval, Profile
from growenv.harness.stats import bootstrap_ci
from growenv.harness.summary import value

__all__ = [
    "plot_interval_estimates",
    "plot_performance_profiles",
    "plot_results",
    "plot_task",
    "trajectory",
]

LABELS = {
    "params": "parameters",
    "compute": "compute (MACs)",
    "test_loss": "test loss",
    "test_accuracy": "test accuracy",
    "val_loss": "validation loss",
}


def _figure(width: float, height: float) -> Any:
    """A matplotlib Figure on its own Agg canvas (no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


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
    from matplotlib.ticker import NullFormatter

    classify = any(r.get("test_accuracy") not in (None, "") for r in rows)
    if ys is None:
        ys = ["test_loss", "test_accuracy"] if classify else ["test_loss"]
    labels = dict(labels or {})
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    fig = _figure(5 * len(xs), 3.8 * len(ys))
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
    return _save(fig, path)


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


def plot_interval_estimates(
    estimates: Mapping[str, Mapping[str, Interval | tuple[float, float, float]]],
    path: str | Path,
    title: str | None = None,
    labels: Mapping[str, str] | None = None,
    references: Mapping[str, float] | None = None,
) -> Path:
    """Save horizontal CI bars per method, one panel per metric (rliable's interval plot).

    Parameters
    ----------
    estimates
        ``{metric: {method: (point, low, high)}}``, e.g.
        ``{"IQM": interval_estimates(scores, "iqm"), "mean": interval_estimates(scores, "mean")}``
        (:func:`growenv.harness.rliable.interval_estimates`); a method missing from a metric
        leaves its row empty there.
    path
        PNG (or any matplotlib format) to write.
    title
        Figure title.
    labels
        Renames methods on the y axis.
    references
        ``{metric: x}``: a dashed vertical line on that metric's panel (0 for a difference,
        0.5 for a probability of improvement, 1 for losses normalised by greedy).

    Returns
    -------
    Path
        ``path``.
    """
    if not estimates:
        raise ValueError("estimates: expected at least one metric, got none")
    labels = dict(labels or {})
    methods = list(dict.fromkeys(m for per in estimates.values() for m in per))
    fig = _figure(3.6 * len(estimates), 0.9 + 0.45 * len(methods))
    axes = fig.subplots(1, len(estimates), squeeze=False, sharey=True)[0]
    colors = [f"C{i % 10}" for i in range(len(methods))]
    ys = np.arange(len(methods))[::-1]  # the first method on top
    for ax, (metric, per) in zip(axes, estimates.items(), strict=True):
        for y, method, color in zip(ys, methods, colors, strict=True):
            if method not in per:
                continue
            point, low, high = (float(v) for v in per[method])
            ax.barh(y, high - low, left=low, height=0.6, color=color, alpha=0.75)
            ax.vlines(point, y - 0.3, y + 0.3, color="k", linewidth=1.5)
        if references and metric in references:
            ax.axvline(references[metric], color="gray", linestyle="--", linewidth=1)
        ax.set_title(metric)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(ys, [labels.get(m, m) for m in methods])
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_performance_profiles(
    profiles: Mapping[str, Profile],
    path: str | Path,
    xlabel: str = r"normalised loss $\tau$",
    ylabel: str = r"fraction of runs with loss $\leq \tau$",
    title: str | None = None,
    labels: Mapping[str, str] | None = None,
    logx: bool = False,
) -> Path:
    """Save performance profiles as step curves with their bootstrap bands (rliable's plot).

    Parameters
    ----------
    profiles
        ``{method: Profile(taus, point, low, high)}`` from
        :func:`growenv.harness.rliable.performance_profile`.
    path
        PNG (or any matplotlib format) to write.
    xlabel, ylabel, title
        Axis labels and figure title (the defaults suit losses normalised by a reference).
    labels
        Renames methods in the legend.
    logx
        Log scale for the thresholds.

    Returns
    -------
    Path
        ``path``.
    """
    if not profiles:
        raise ValueError("profiles: expected at least one method, got none")
    labels = dict(labels or {})
    fig = _figure(5.5, 4)
    ax = fig.subplots()
    for method, prof in profiles.items():
        taus, point = np.asarray(prof.taus), np.asarray(prof.point)
        (line,) = ax.step(taus, point, where="post", label=labels.get(method, method))
        ax.fill_between(taus, prof.low, prof.high, step="post", color=line.get_color(), alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.02)
    if logx:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)
