"""rliable-style reporting of learned policies: stratified-bootstrap CIs, probability of
improvement, performance profiles.

Scores are matrices ``(runs, tasks)``: a row per independently trained agent (one row for a
deterministic heuristic), a column per test task (an episode on a fixed test teacher or data
set, the same tasks in the same order for every method). Our scores are final losses, so lower
is better wherever a direction matters (:func:`probability_of_improvement`,
:func:`performance_profile`); the aggregate statistics (IQM, mean, median) have no direction.

Everything follows Agarwal et al. (2021, "Deep RL at the edge of the statistical precipice")
and its library rliable 1.2.0 (tests/test_rliable.py checks the point estimates against it):

- :func:`stratified_bootstrap` is rliable's ``StratifiedBootstrap``: each resample draws the
  runs with replacement independently within each task (a stratum); with
  ``task_bootstrap=True`` it also draws the tasks with replacement. Percentile intervals.
- :func:`interval_estimates` is ``rliable.library.get_interval_estimates`` for a dict of methods.
- :func:`difference_ci` has no rliable counterpart: the CI of ``stat(x) - stat(y)`` with the
  tasks drawn jointly for both methods (paired by task) and the runs within each task drawn
  independently for each method.
- :func:`probability_of_improvement` is ``rliable.metrics.probability_of_improvement`` with a
  direction, and its CI resamples as rliable's ``StratifiedIndependentBootstrap``.
- :func:`performance_profile` is ``rliable.library.create_performance_profile`` (run-score
  distributions); :func:`normalise` puts tasks of different scales on one axis first.

The resampling uses ``numpy.random.default_rng(seed)``, not rliable's global ``RandomState``, so
intervals agree with rliable's in distribution, not digit for digit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from growenv.harness.stats import iqm

__all__ = [
    "MatrixStatistic",
    "Interval",
    "Profile",
    "stratified_bootstrap",
    "interval_estimates",
    "difference_ci",
    "probability_of_improvement",
    "performance_profile",
    "normalise",
]

MatrixStatistic = Callable[[np.ndarray], Any]
"""``stat(scores)``: ``scores`` of shape ``(..., runs, tasks)`` (a batch of resampled
matrices) to an array of shape ``(...)``, one value per matrix."""

# elements of the largest intermediate array of one bootstrap chunk (~32 MB of float64)
_CHUNK_ELEMENTS = 1 << 22


class Interval(NamedTuple):
    """A point estimate and its ``1 - alpha`` percentile-bootstrap interval."""

    point: float
    low: float
    high: float


class Profile(NamedTuple):
    """A performance profile at each threshold and its pointwise bootstrap band."""

    taus: np.ndarray
    point: np.ndarray
    low: np.ndarray
    high: np.ndarray


def _aggregate_iqm(scores: np.ndarray) -> np.ndarray:
    return np.asarray(iqm(scores.reshape(*scores.shape[:-2], -1), axis=-1))


def _aggregate_mean(scores: np.ndarray) -> np.ndarray:
    return scores.mean(axis=(-2, -1))


def _aggregate_median(scores: np.ndarray) -> np.ndarray:
    return np.median(scores.mean(axis=-2), axis=-1)


_MATRIX_STATS: dict[str, MatrixStatistic] = {
    "iqm": _aggregate_iqm,
    "mean": _aggregate_mean,
    "median": _aggregate_median,
}


def _resolve(stat: str | MatrixStatistic) -> MatrixStatistic:
    if isinstance(stat, str):
        if stat not in _MATRIX_STATS:
            choices = sorted(_MATRIX_STATS)
            raise ValueError(f"stat: expected one of {choices} or a callable, got {stat!r}")
        return _MATRIX_STATS[stat]
    if not callable(stat):
        raise ValueError(f"stat: expected a name or a callable, got {stat!r}")
    return stat


def _matrix(scores: Any, name: str = "scores") -> np.ndarray:
    x = np.asarray(scores, dtype=float)
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"{name}: expected a non-empty (runs, tasks) matrix, got shape {x.shape}")
    bad = int((~np.isfinite(x)).sum())
    if bad:
        raise ValueError(f"{name}: expected finite values, got {bad} NaN or infinite")
    return x


def _check(n_boot: int, alpha: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ValueError(f"n_boot: expected an integer >= 1, got {n_boot!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: expected a number in (0, 1), got {alpha!r}")


def _same_tasks(x: np.ndarray, y: np.ndarray) -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"y: expected the same number of tasks as x ({x.shape[1]}), got {y.shape[1]}"
        )


def _bootstrap(
    fn: Callable[..., Any],
    arrays: Sequence[np.ndarray],
    n_boot: int,
    seed: int,
    task_bootstrap: bool,
    cost: int,
) -> np.ndarray:
    """``fn`` on ``n_boot`` stratified resamples of ``arrays`` (all with the same tasks).

    Each resample draws, for every array and every task column, that array's runs with
    replacement (independently per array); with ``task_bootstrap`` it first draws the task
    columns with replacement, the same columns for every array (paired by task). ``cost`` is the
    size of ``fn``'s largest intermediate for one resample (it sets the chunk size only).
    Returns ``fn``'s values stacked along a first axis of length ``n_boot``.
    """
    rng = np.random.default_rng(seed)
    n_tasks = arrays[0].shape[1]
    chunk = max(1, _CHUNK_ELEMENTS // max(1, cost))
    parts = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        cols = rng.integers(0, n_tasks, size=(b, 1, n_tasks)) if task_bootstrap else None
        if cols is None:
            cols = np.arange(n_tasks)
        samples = [a[rng.integers(0, a.shape[0], size=(b, *a.shape)), cols] for a in arrays]
        parts.append(np.asarray(fn(*samples), dtype=float))
    return np.concatenate(parts, axis=0)


def _interval(
    fn: Callable[..., Any], arrays: Sequence[np.ndarray], boot: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # the point goes through the same (batched) code as the resamples: a resample equal to the
    # original matrix then gives the point bit for bit (a zero-width interval stays zero-width)
    point = np.asarray(fn(*[a[None] for a in arrays]), dtype=float)[0]
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2], axis=0)
    return point, low, high


def stratified_bootstrap(
    scores: np.ndarray | Sequence[Sequence[float]],
    stat: str | MatrixStatistic = "iqm",
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    task_bootstrap: bool = False,
) -> Interval:
    """Aggregate statistic of a ``(runs, tasks)`` score matrix with a stratified-bootstrap CI.

    As rliable's ``StratifiedBootstrap`` with the percentile method: each of the ``n_boot``
    resamples draws the runs with replacement independently within each task (so every task
    keeps its column and its number of runs); with ``task_bootstrap=True`` the task columns are
    drawn with replacement too.

    Parameters
    ----------
    scores
        Matrix ``(runs, tasks)`` of finite scores (e.g. final test losses).
    stat
        ``"iqm"`` (interquartile mean of all ``runs * tasks`` scores, rliable's
        ``aggregate_iqm``), ``"mean"`` (of all scores) or ``"median"`` (median over tasks of
        the per-task mean over runs, rliable's ``aggregate_median``); or a callable mapping a
        batch ``(..., runs, tasks)`` to ``(...)``.
    n_boot
        Bootstrap resamples.
    alpha
        ``1 - alpha`` is the coverage (0.05: a 95 % interval).
    seed
        Seed of the resampling (same seed, same interval).
    task_bootstrap
        Also resample tasks. Without it the interval is the uncertainty over runs on these very
        tasks: with a single run (a deterministic heuristic) every resample is the original
        matrix and the interval has zero width, by rliable's definition. With it the interval
        also covers the choice of tasks (the population of test teachers), which is the only
        uncertainty left with one run.

    Returns
    -------
    Interval
        ``(point, low, high)``: ``stat`` of ``scores`` and the ``alpha / 2`` and
        ``1 - alpha / 2`` quantiles of the resampled statistic.

    Examples
    --------
    >>> scores = [[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]]
    >>> stratified_bootstrap(scores, "mean").point
    13.75
    """
    x = _matrix(scores)
    _check(n_boot, alpha)
    fn = _resolve(stat)
    boot = _bootstrap(fn, [x], n_boot, seed, task_bootstrap, x.size)
    point, low, high = _interval(fn, [x], boot, alpha)
    return Interval(float(point), float(low), float(high))


def interval_estimates(
    score_dict: Mapping[str, np.ndarray],
    stat: str | MatrixStatistic = "iqm",
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    task_bootstrap: bool = False,
) -> dict[str, Interval]:
    """:func:`stratified_bootstrap` of each method (rliable's ``get_interval_estimates``).

    Every method is resampled on its own with the same ``seed``, so methods of equal shape see
    the same resampled indices (common random numbers) and methods of different shapes do
    not; the intervals are marginal, one per method. To compare two methods use
    :func:`difference_ci` or :func:`probability_of_improvement`, not overlapping intervals.

    Parameters
    ----------
    score_dict
        ``{method: (runs, tasks) matrix}``; methods may differ in runs (and in tasks).
    stat, n_boot, alpha, seed, task_bootstrap
        As :func:`stratified_bootstrap`.

    Returns
    -------
    dict
        ``{method: Interval(point, low, high)}`` in the order of ``score_dict``.
    """
    if not score_dict:
        raise ValueError("score_dict: expected at least one method, got none")
    out = {}
    for name, scores in score_dict.items():
        x = _matrix(scores, f"score_dict[{name!r}]")
        out[name] = stratified_bootstrap(x, stat, n_boot, alpha, seed, task_bootstrap)
    return out


def difference_ci(
    x: np.ndarray | Sequence[Sequence[float]],
    y: np.ndarray | Sequence[Sequence[float]],
    stat: str | MatrixStatistic = "iqm",
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    task_bootstrap: bool = True,
) -> Interval:
    """``stat(x) - stat(y)`` for two methods on the same tasks, with its bootstrap CI.

    Each resample draws the task columns with replacement once, the same columns for both
    methods (the comparison stays paired by task), then each method's runs with replacement
    independently within each drawn task. For losses an interval entirely below 0 says ``x``
    beats ``y`` at level ``alpha`` ("the 95 % CI of the difference is below 0").

    Parameters
    ----------
    x, y
        Matrices ``(runs_x, tasks)`` and ``(runs_y, tasks)``: column ``j`` of both is the same
        task. ``runs_y = 1`` for a deterministic heuristic such as greedy.
    stat, n_boot, alpha, seed
        As :func:`stratified_bootstrap`.
    task_bootstrap
        Resample tasks (default). ``False`` resamples runs only, the uncertainty over training
        seeds on these very tasks (zero width when both methods have one run).

    Returns
    -------
    Interval
        ``(point, low, high)`` of ``stat(x) - stat(y)``.
    """
    x, y = _matrix(x, "x"), _matrix(y, "y")
    _same_tasks(x, y)
    _check(n_boot, alpha)
    fn = _resolve(stat)

    def diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(fn(a), dtype=float) - np.asarray(fn(b), dtype=float)

    boot = _bootstrap(diff, [x, y], n_boot, seed, task_bootstrap, max(x.size, y.size))
    point, low, high = _interval(diff, [x, y], boot, alpha)
    return Interval(float(point), float(low), float(high))


def _improvement(x: np.ndarray, y: np.ndarray, lower_is_better: bool) -> np.ndarray:
    """Mean over tasks of P(a run of x beats a run of y), ties 1/2.

    ``x`` is ``(..., runs_x, tasks)``, ``y`` is ``(..., runs_y, tasks)``; returns ``(...)``.
    """
    a, b = x[..., :, None, :], y[..., None, :, :]
    wins = (a < b) if lower_is_better else (a > b)
    per_task = (wins + 0.5 * (a == b)).mean(axis=(-3, -2))
    return per_task.mean(axis=-1)


def probability_of_improvement(
    x: np.ndarray | Sequence[Sequence[float]],
    y: np.ndarray | Sequence[Sequence[float]],
    lower_is_better: bool = True,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    task_bootstrap: bool = False,
) -> Interval:
    """Probability that ``x`` improves on ``y``, averaged over tasks, with its bootstrap CI.

    On task ``j``, ``P(X_j better than Y_j)`` is the Mann-Whitney U statistic of x's runs
    against y's runs divided by ``runs_x * runs_y``: the fraction of pairs (a run of x, a run
    of y) where x's score is better (lower for losses), ties counting 1/2. The result is its
    mean over tasks, as ``rliable.metrics.probability_of_improvement`` (which is
    higher-is-better: ours with ``lower_is_better=True`` equals rliable's on negated scores).
    ``P(x, x) = 0.5`` and ``P(x, y) + P(y, x) = 1``. rliable reports it with the lower CI
    bound above 0.5 as the evidence that x improves on y.

    Parameters
    ----------
    x, y
        Matrices ``(runs_x, tasks)`` and ``(runs_y, tasks)`` on the same tasks (runs may differ).
    lower_is_better
        ``True`` for losses.
    n_boot, alpha, seed
        As :func:`stratified_bootstrap`.
    task_bootstrap
        ``False`` (rliable's ``StratifiedIndependentBootstrap``): each method's runs are drawn
        with replacement within each task, independently for the two methods, the tasks kept.
        ``True`` also draws the task columns with replacement, the same for both methods; with
        one run per method this is the only source of width.

    Returns
    -------
    Interval
        ``(point, low, high)``, all in ``[0, 1]``.
    """
    x, y = _matrix(x, "x"), _matrix(y, "y")
    _same_tasks(x, y)
    _check(n_boot, alpha)

    def poi(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return _improvement(a, b, lower_is_better)

    cost = x.shape[0] * y.shape[0] * x.shape[1]
    boot = _bootstrap(poi, [x, y], n_boot, seed, task_bootstrap, cost)
    point, low, high = _interval(poi, [x, y], boot, alpha)
    return Interval(float(point), float(low), float(high))


def performance_profile(
    score_dict: Mapping[str, np.ndarray],
    taus: Sequence[float] | np.ndarray,
    lower_is_better: bool = True,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    task_bootstrap: bool = False,
) -> dict[str, Profile]:
    """Run-score distributions of each method with pointwise stratified-bootstrap bands.

    For losses, the profile at ``tau`` is the fraction of all ``runs * tasks`` scores that
    are ``<= tau`` (a method whose curve lies above another's reaches low losses more often).
    ``lower_is_better=False`` gives rliable's ``create_performance_profile`` exactly: the
    fraction of scores ``> tau``. Tasks of different scales should be normalised first
    (:func:`normalise`, e.g. loss over greedy's loss on the same task, so ``tau = 1`` means
    "as good as greedy"). The band at each ``tau`` is the percentile interval of
    :func:`stratified_bootstrap` of the profile (all thresholds from the same resamples).

    Parameters
    ----------
    score_dict
        ``{method: (runs, tasks) matrix}``.
    taus
        Thresholds, a non-empty 1-D sequence (e.g. ``np.linspace(0.5, 1.5, 101)``).
    lower_is_better
        ``True`` for losses (fraction ``<= tau``); ``False``: fraction ``> tau``.
    n_boot, alpha, seed, task_bootstrap
        As :func:`stratified_bootstrap` (each method resampled with the same ``seed``).

    Returns
    -------
    dict
        ``{method: Profile(taus, point, low, high)}``, arrays of ``len(taus)`` in ``[0, 1]``.
    """
    t = np.asarray(taus, dtype=float)
    if t.ndim != 1 or t.size == 0 or not np.isfinite(t).all():
        raise ValueError(f"taus: expected a non-empty 1-D array of finite thresholds, got {taus!r}")
    if not score_dict:
        raise ValueError("score_dict: expected at least one method, got none")
    _check(n_boot, alpha)

    def profile(s: np.ndarray) -> np.ndarray:
        flat = s.reshape(*s.shape[:-2], 1, -1)
        hits = flat <= t[:, None] if lower_is_better else flat > t[:, None]
        return hits.mean(axis=-1)

    out = {}
    for name, scores in score_dict.items():
        x = _matrix(scores, f"score_dict[{name!r}]")
        boot = _bootstrap(profile, [x], n_boot, seed, task_bootstrap, x.size * t.size)
        point, low, high = _interval(profile, [x], boot, alpha)
        out[name] = Profile(t.copy(), point, low, high)
    return out


def normalise(
    scores: np.ndarray | Sequence[Sequence[float]],
    reference: np.ndarray | Sequence[float] | Sequence[Sequence[float]],
) -> np.ndarray:
    """Scores divided, task by task, by a reference method's score on the same task.

    E.g. ``normalise(ppo_losses, greedy_losses)``: each run's final loss over greedy's loss on
    that task, so 1 is "as good as greedy", 0.8 "20 % lower loss than greedy", and tasks with
    losses of different scales share one axis (a performance profile, an IQM over tasks).

    Parameters
    ----------
    scores
        Matrix ``(runs, tasks)``.
    reference
        ``(tasks,)`` or ``(runs_ref, tasks)``: with several reference runs, their mean per task.
        Must be positive (losses).

    Returns
    -------
    numpy.ndarray
        ``scores / reference``, shape ``(runs, tasks)``.
    """
    x = _matrix(scores)
    ref = np.asarray(reference, dtype=float)
    if ref.ndim == 1:
        ref = ref[None, :]
    ref = _matrix(ref, "reference").mean(axis=0)
    if ref.size != x.shape[1]:
        raise ValueError(f"reference: expected {x.shape[1]} tasks like scores, got {ref.size}")
    if (ref <= 0).any():
        raise ValueError(f"reference: expected positive per-task values, got min {ref.min()!r}")
    return x / ref
