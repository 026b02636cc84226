"""Statistics of results over seeds: the interquartile mean, bootstrap CIs, paired differences.

They follow Agarwal et al. (2021, "Deep RL at the edge of the statistical precipice"): the
interquartile mean (IQM) and percentile-bootstrap confidence intervals over seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["Statistic", "bootstrap_ci", "iqm", "paired_difference"]


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
