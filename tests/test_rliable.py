"""rliable-style reporting (growenv.harness.rliable): against rliable 1.2.0 itself, explicit loops
and invariances.

rliable.metrics needs numpy and scipy only. rliable.library needs arch < 8, and arch 7 does
not import under pandas 3, so the tests against rliable.library skip (saying why) where that
pair is installed; they ran with pandas 2.3.3 and arch 7.2.0.
"""

from __future__ import annotations

import numpy as np
import pytest

from growenv.harness.plots import plot_interval_estimates, plot_performance_profiles
from growenv.harness.rliable import (
    Interval,
    difference_ci,
    interval_estimates,
    normalise,
    performance_profile,
    probability_of_improvement,
    stratified_bootstrap,
)
from growenv.harness.stats import iqm

metrics = pytest.importorskip("rliable.metrics")


@pytest.fixture
def library():
    """rliable.library with numpy's global RNG (which its bootstrap draws from) seeded, and
    restored afterwards."""
    try:
        from rliable import library
    except Exception as e:  # arch 7 raises a TypeError under pandas 3
        pytest.skip(f"rliable.library does not import here: {type(e).__name__}: {e}")
    state = np.random.get_state()  # noqa: NPY002 - rliable uses the legacy global RNG
    np.random.seed(0)  # noqa: NPY002
    yield library
    np.random.set_state(state)  # noqa: NPY002


def _scores(runs: int, tasks: int, seed: int = 0) -> np.ndarray:
    """Losses on tasks of very different scales (task j about j + 1), so that stratifying
    by task and pairing by task both matter."""
    rng = np.random.default_rng(seed)
    return rng.lognormal(sigma=0.5, size=(runs, tasks)) * np.arange(1, tasks + 1)


# --- point estimates against rliable.metrics -------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (3, 5), (5, 8), (10, 3)])
def test_point_estimates_match_rliable(shape):
    x = _scores(*shape)
    assert stratified_bootstrap(x, "iqm", n_boot=10).point == pytest.approx(
        metrics.aggregate_iqm(x), rel=1e-12
    )
    assert stratified_bootstrap(x, "mean", n_boot=10).point == pytest.approx(
        metrics.aggregate_mean(x), rel=1e-12
    )
    assert stratified_bootstrap(x, "median", n_boot=10).point == pytest.approx(
        metrics.aggregate_median(x), rel=1e-12
    )
    # and the IQM of all runs x tasks scores is the flat IQM of stats.iqm (floor(n/4) cut)
    assert stratified_bootstrap(x, n_boot=10).point == pytest.approx(iqm(x), rel=1e-12)


@pytest.mark.parametrize("rx,ry,tasks", [(5, 3, 8), (1, 1, 6), (4, 1, 5), (2, 7, 1)])
def test_probability_of_improvement_matches_rliable_and_a_double_loop(rx, ry, tasks):
    rng = np.random.default_rng(rx * 100 + ry)
    # integer losses: many ties, which count 1/2
    x = rng.integers(0, 4, size=(rx, tasks)).astype(float)
    y = rng.integers(0, 4, size=(ry, tasks)).astype(float)
    ours = probability_of_improvement(x, y, n_boot=10).point
    # rliable is higher-is-better: negate the losses
    assert ours == pytest.approx(metrics.probability_of_improvement(-x, -y), abs=1e-12)
    per_task = []
    for j in range(tasks):
        total = 0.0
        for a in x[:, j]:
            for b in y[:, j]:
                total += 1.0 if a < b else 0.5 if a == b else 0.0
        per_task.append(total / (rx * ry))
    assert ours == pytest.approx(float(np.mean(per_task)), abs=1e-12)
    # higher is better: rliable on the raw scores
    higher = probability_of_improvement(x, y, lower_is_better=False, n_boot=10).point
    assert higher == pytest.approx(metrics.probability_of_improvement(x, y), abs=1e-12)


def test_probability_of_improvement_symmetries():
    x, y = _scores(5, 6, seed=1), _scores(3, 6, seed=2)
    assert probability_of_improvement(x, x, n_boot=10).point == 0.5
    pxy = probability_of_improvement(x, y, n_boot=10).point
    pyx = probability_of_improvement(y, x, n_boot=10).point
    assert pxy + pyx == pytest.approx(1.0, abs=1e-12)
    # a method that beats the other on every run of every task
    assert probability_of_improvement(x, x.max() + 1 + x, n_boot=10) == (1.0, 1.0, 1.0)
    p = probability_of_improvement(x, y, n_boot=500)
    assert 0 <= p.low <= p.point <= p.high <= 1


# --- the stratified bootstrap -----------------------------------------------------------------


def _tagged(runs: int, tasks: int) -> np.ndarray:
    # value 1000 * task + run: every resampled value says where it came from
    return 1000.0 * np.arange(tasks)[None, :] + np.arange(runs)[:, None]


@pytest.mark.parametrize("task_bootstrap", [False, True])
def test_resamples_are_stratified_by_task(task_bootstrap):
    runs, tasks = 4, 6
    seen = []

    def stat(s):
        seen.append(s.copy())
        return s.mean(axis=(-2, -1))

    stratified_bootstrap(_tagged(runs, tasks), stat, n_boot=300, task_bootstrap=task_bootstrap)
    batch = np.concatenate(seen)
    assert batch.shape[1:] == (runs, tasks)
    source_task = batch // 1000
    if task_bootstrap:
        # each resampled column holds the runs of one original task, not always its own
        assert (source_task == source_task[:, :1, :]).all()
        assert (source_task != np.arange(tasks)).any()
    else:
        assert (source_task == np.arange(tasks)).all()
    # runs are drawn with replacement: some resampled columns repeat a run
    run = batch % 1000
    assert any(len(set(run[b, :, j])) < runs for b in range(20) for j in range(tasks))


def _loop_bootstrap(x, y, stat, n_boot, rng, task_bootstrap):
    """Reference: the resampling scheme written as explicit loops over resamples and tasks."""
    out = np.empty(n_boot)
    tasks = x.shape[1]
    for b in range(n_boot):
        cols = rng.integers(0, tasks, size=tasks) if task_bootstrap else range(tasks)
        xs = np.empty_like(x)
        ys = None if y is None else np.empty_like(y)
        for k, j in enumerate(cols):
            xs[:, k] = x[rng.integers(0, x.shape[0], size=x.shape[0]), j]
            if y is not None:
                ys[:, k] = y[rng.integers(0, y.shape[0], size=y.shape[0]), j]
        out[b] = stat(xs) if y is None else stat(xs) - stat(ys)
    return out


@pytest.mark.parametrize("task_bootstrap", [False, True])
def test_interval_matches_a_loop_bootstrap_in_distribution(task_bootstrap):
    x = _scores(5, 6, seed=3)
    ours = stratified_bootstrap(x, "iqm", n_boot=20000, task_bootstrap=task_bootstrap)
    ref = _loop_bootstrap(x, None, iqm, 4000, np.random.default_rng(7), task_bootstrap)
    lo, hi = np.quantile(ref, [0.025, 0.975])
    tol = 0.15 * ref.std()
    assert ours.low == pytest.approx(lo, abs=tol) and ours.high == pytest.approx(hi, abs=tol)


def test_interval_contains_point_and_shrinks_with_more_runs():
    few = stratified_bootstrap(_scores(4, 5, seed=4), "iqm")
    many = stratified_bootstrap(_scores(64, 5, seed=4), "iqm")
    for est in (few, many):
        assert est.low <= est.point <= est.high
    assert many.high - many.low < 0.5 * (few.high - few.low)


def test_one_run_without_task_bootstrap_has_zero_width():
    # every resample of a single run is the matrix itself (rliable's definition)
    x = _scores(1, 7, seed=5)
    for stat in ("iqm", "mean", "median"):
        est = stratified_bootstrap(x, stat)
        assert est.low == est.point == est.high
    wide = stratified_bootstrap(x, "iqm", task_bootstrap=True)
    assert wide.low < wide.point < wide.high


def test_reproducible_by_seed():
    x = _scores(5, 6, seed=6)
    assert stratified_bootstrap(x, seed=3) == stratified_bootstrap(x, seed=3)
    assert stratified_bootstrap(x, seed=3) != stratified_bootstrap(x, seed=4)
    y = _scores(3, 6, seed=7)
    assert difference_ci(x, y, seed=3) == difference_ci(x, y, seed=3)
    assert probability_of_improvement(x, y, seed=3) == probability_of_improvement(x, y, seed=3)


def test_interval_estimates_is_stratified_bootstrap_per_method():
    scores = {"ppo": _scores(5, 6, seed=8), "greedy": _scores(1, 6, seed=9)}
    out = interval_estimates(scores, "iqm", n_boot=500, seed=2, task_bootstrap=True)
    assert list(out) == ["ppo", "greedy"]
    for name, x in scores.items():
        assert out[name] == stratified_bootstrap(x, "iqm", 500, seed=2, task_bootstrap=True)
        assert isinstance(out[name], Interval)


# --- differences ------------------------------------------------------------------------------


def test_difference_of_identical_methods_contains_zero():
    x = _scores(5, 6, seed=10)
    for task_bootstrap in (False, True):
        d = difference_ci(x, x, task_bootstrap=task_bootstrap)
        assert d.point == 0.0 and d.low < 0 < d.high


@pytest.mark.parametrize("task_bootstrap", [False, True])
def test_difference_matches_a_paired_loop_bootstrap(task_bootstrap):
    x = _scores(4, 6, seed=11)
    y = 1.1 * _scores(3, 6, seed=12)
    ours = difference_ci(x, y, "mean", n_boot=20000, task_bootstrap=task_bootstrap)
    assert ours.point == pytest.approx(x.mean() - y.mean(), rel=1e-12)
    ref = _loop_bootstrap(x, y, np.mean, 4000, np.random.default_rng(13), task_bootstrap)
    lo, hi = np.quantile(ref, [0.025, 0.975])
    tol = 0.15 * ref.std()
    assert ours.low == pytest.approx(lo, abs=tol) and ours.high == pytest.approx(hi, abs=tol)


def test_difference_is_paired_by_task():
    # y = x + 1 on every task of very different scales: with one run each, every paired
    # resample of the tasks gives a mean difference of exactly -1
    x = _scores(1, 8, seed=14)
    d = difference_ci(x, x + 1.0, "mean")
    assert d.point == pytest.approx(-1.0) and d.low == pytest.approx(-1.0)
    assert d.high == pytest.approx(-1.0)
    # a clear improvement on every task: the CI is below 0
    # (tasks differ in scale far more than the methods differ: unpaired, this CI would cross 0)
    greedy = _scores(1, 8, seed=15)
    ppo = 0.8 * greedy * np.random.default_rng(15).uniform(0.9, 1.1, size=(5, 8))
    better = difference_ci(ppo, greedy)
    assert better.low <= better.point < better.high < 0


# --- performance profiles ---------------------------------------------------------------------


def test_performance_profile_counts_scores_at_or_below_tau():
    x = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 0.5]])
    taus = np.array([0.0, 1.0, 2.0, 3.5, 10.0])
    prof = performance_profile({"a": x}, taus, n_boot=200)["a"]
    expected = [np.mean([v <= t for v in x.ravel()]) for t in taus]
    np.testing.assert_array_equal(prof.point, expected)  # 0, 2/6, 4/6, 5/6, 1
    np.testing.assert_array_equal(prof.taus, taus)
    assert (prof.low <= prof.point).all() and (prof.point <= prof.high).all()
    above = performance_profile({"a": x}, taus, lower_is_better=False, n_boot=200)["a"]
    np.testing.assert_allclose(above.point, 1 - prof.point, atol=1e-15)
    assert (np.diff(prof.point) >= 0).all()


def test_normalise_divides_by_the_reference_per_task():
    x = _scores(3, 4, seed=16)
    greedy = _scores(1, 4, seed=17)
    np.testing.assert_allclose(normalise(x, greedy), x / greedy[0])
    np.testing.assert_allclose(normalise(x, greedy[0]), x / greedy[0])
    np.testing.assert_allclose(normalise(greedy, greedy), np.ones((1, 4)))
    two = np.vstack([greedy, 3 * greedy])
    np.testing.assert_allclose(normalise(x, two), x / (2 * greedy[0]))


# --- against rliable.library (intervals: same distribution, not the same digits) -------------


def test_intervals_match_rliable_library(library):
    x, y = _scores(5, 8, seed=18), _scores(3, 8, seed=19)

    def agg(s):
        return np.array([metrics.aggregate_iqm(s)])

    for task_bootstrap in (False, True):
        point, ci = library.get_interval_estimates(
            {"x": x}, agg, reps=5000, task_bootstrap=task_bootstrap
        )
        ours = stratified_bootstrap(x, "iqm", n_boot=20000, task_bootstrap=task_bootstrap)
        tol = 0.05 * (ci["x"][1, 0] - ci["x"][0, 0])
        assert ours.point == pytest.approx(point["x"][0], rel=1e-12)
        assert ours.low == pytest.approx(ci["x"][0, 0], abs=tol)
        assert ours.high == pytest.approx(ci["x"][1, 0], abs=tol)

    def poi(a, b):
        return np.array([metrics.probability_of_improvement(a, b)])

    point, ci = library.get_interval_estimates({"xy": [-x, -y]}, poi, reps=3000)
    ours = probability_of_improvement(x, y, n_boot=20000)
    assert ours.point == pytest.approx(point["xy"][0], abs=1e-12)
    tol = 0.1 * (ci["xy"][1, 0] - ci["xy"][0, 0])
    assert ours.low == pytest.approx(ci["xy"][0, 0], abs=tol)
    assert ours.high == pytest.approx(ci["xy"][1, 0], abs=tol)


def test_performance_profile_matches_rliable_library(library):
    x = _scores(5, 8, seed=20)
    taus = np.linspace(0.0, 12.0, 13)
    points, cis = library.create_performance_profile({"x": x}, taus, reps=3000)
    above = performance_profile({"x": x}, taus, lower_is_better=False, n_boot=20000)["x"]
    np.testing.assert_allclose(above.point, points["x"], atol=1e-15)
    # bounds are multiples of 1/40 here: allow one step
    np.testing.assert_allclose(above.low, cis["x"][0], atol=1 / 40 + 1e-12)
    np.testing.assert_allclose(above.high, cis["x"][1], atol=1 / 40 + 1e-12)
    # losses: fraction <= tau is rliable's fraction > -tau of the negated losses (no ties here)
    points, _ = library.create_performance_profile({"x": -x}, -taus, reps=10)
    below = performance_profile({"x": x}, taus, n_boot=10)["x"]
    np.testing.assert_allclose(below.point, points["x"], atol=1e-15)


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: difference_ci(np.ones((3, 4)), np.ones((3, 5))), "y: expected the same number"),
        (lambda: probability_of_improvement(np.ones((3, 4)), np.ones((2, 3))), "y: expected"),
        (lambda: stratified_bootstrap(np.ones(5)), r"scores: expected .* got shape \(5,\)"),
        (lambda: stratified_bootstrap(np.ones((0, 3))), "scores: expected a non-empty"),
        (lambda: stratified_bootstrap([[1.0, np.nan]]), "scores: expected finite values"),
        (lambda: stratified_bootstrap(np.ones((2, 2)), "max"), "stat: expected one of"),
        (lambda: stratified_bootstrap(np.ones((2, 2)), alpha=1.0), "alpha: expected"),
        (lambda: stratified_bootstrap(np.ones((2, 2)), n_boot=0), "n_boot: expected"),
        (lambda: interval_estimates({}), "score_dict: expected at least one"),
        (lambda: interval_estimates({"a": np.ones(3)}), r"score_dict\['a'\]: expected"),
        (lambda: performance_profile({"a": np.ones((2, 2))}, []), "taus: expected"),
        (lambda: normalise(np.ones((2, 3)), np.ones(4)), "reference: expected 3 tasks"),
        (lambda: normalise(np.ones((2, 3)), [1.0, 0.0, 1.0]), "reference: expected positive"),
    ],
)
def test_bad_input_is_a_one_line_value_error(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


# --- plots ------------------------------------------------------------------------------------


def test_plots_are_written(tmp_path):
    greedy = _scores(1, 6, seed=21)
    scores = {"ppo": normalise(_scores(5, 6, seed=22), greedy), "greedy": normalise(greedy, greedy)}
    est = {
        "IQM": interval_estimates(scores, "iqm", n_boot=200),
        "P(ppo < greedy)": {"ppo": probability_of_improvement(*scores.values(), n_boot=200)},
    }
    path = plot_interval_estimates(
        est, tmp_path / "intervals.png", references={"P(ppo < greedy)": 0.5}
    )
    assert path.stat().st_size > 1000
    profiles = performance_profile(scores, np.linspace(0.5, 2.0, 31), n_boot=200)
    path = plot_performance_profiles(profiles, tmp_path / "profiles.png", labels={"ppo": "PPO"})
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="estimates: expected"):
        plot_interval_estimates({}, tmp_path / "x.png")
