"""experiments/pooled_tests.py: tests pooled with their tasks kept apart, checked against
the one-test summary and an invariance (a test pooled with itself), and its argument
errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.experiment_scripts import load_experiment


@pytest.fixture(scope="module")
def pt():
    return load_experiment("pooled_tests")


def _store(path, seed, methods=("learned", "greedy", "lookahead")):
    """A store of 2 families x 3 tasks x 2 runs of ``methods``, plus a selection episode."""
    rng = np.random.default_rng(seed)
    path.mkdir()
    rows = [
        {"family": f, "task": t, "method": m, "run": r, "test_loss": float(rng.uniform(1, 2))}
        for f in ("digits", "teacher-depth3")
        for t in range(3)
        for m in methods
        for r in range(2)
    ]
    rows.append({"family": "selection", "task": 0, "method": "learned", "run": 0, "test_loss": 9.0})
    (path / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ARGS = ["--method", "learned", "--heuristics", "greedy,lookahead", "--runs", "2"]


def test_one_store_is_the_script_s_own_summary_and_two_keep_their_tasks_apart(pt, tmp_path):
    a, b = _store(tmp_path / "a", 0), _store(tmp_path / "b", 1)
    one = pt.main([*ARGS, str(a)])["groups"]["all (normalised)"]
    records = [r for r in pt.lg.load_store(a / "episodes.jsonl") if r["family"] != "selection"]
    own = pt.lg.summarise(
        records, ["learned", "greedy", "lookahead"], ["digits", "teacher-depth3"], 2,
        ["greedy", "lookahead"], "learned",
    )["groups"]["all (normalised)"]  # fmt: skip
    assert one["iqm"] == own["iqm"] and one["difference"] == pytest.approx(own["difference"])
    both = pt.main([*ARGS, str(a), str(b)])["groups"]["all (normalised)"]
    assert np.asarray(both["scores"]["learned"]).shape == (2, 12)  # 6 tasks per store
    twice = pt.main([*ARGS, str(a), str(a)])["groups"]["all (normalised)"]
    for m in ("learned", "greedy", "lookahead"):  # the same tasks twice: the same IQM
        assert twice["iqm"][m][0] == pytest.approx(one["iqm"][m][0], rel=1e-12)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [(["--method", "nothing"], "--method"), (["--runs", "0"], "--runs")],
)
def test_bad_arguments_get_one_line(pt, argv, flag, tmp_path, capsys):
    store = _store(tmp_path / "a", 0)
    with pytest.raises(SystemExit) as exc:
        pt.main([*argv, str(store)])
    assert exc.value.code == 2
    assert flag in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_folder_without_episodes_is_named(pt, tmp_path, capsys):
    with pytest.raises(SystemExit):
        pt.main([*ARGS, str(tmp_path)])
    assert "stores:" in capsys.readouterr().err.strip().splitlines()[-1]
