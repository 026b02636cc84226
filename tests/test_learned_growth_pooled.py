"""experiments/learned_growth_pooled.py: which records are pooled and how, the pooled
statistics against an explicit computation, and argument errors."""

from __future__ import annotations

import json

import pytest

from tests.experiment_scripts import load_experiment


@pytest.fixture(scope="module")
def pooled():
    return load_experiment("learned_growth_pooled")


def _run(pooled, offset: float, families=("teacher-depth3", "digits")) -> list[dict]:
    """Records of one protocol run: every heuristic at loss 1 + offset, the learned
    configuration 10 % lower, another configuration, and a selection family."""
    records = []
    for family in (*families, "selection"):
        for task in range(2):
            for run in range(4):
                base = {"family": family, "task": task, "run": run}
                for h in pooled.lg.HEURISTICS:
                    records.append({**base, "method": h, "test_loss": 1.0 + offset})
                records.append({**base, "method": "agent", "test_loss": 0.9 * (1.0 + offset)})
                records.append({**base, "method": "other", "test_loss": 5.0})
    return records


def test_teacher_families_are_kept_per_run_and_data_sets_taken_once(pooled):
    runs = {"v5": _run(pooled, 0.0), "v6": _run(pooled, 1.0)}
    records = pooled.pooled_records(runs, "agent")
    families = {r["family"] for r in records}
    assert families == {"teacher-depth3@v5", "teacher-depth3@v6", "digits"}
    assert {r["method"] for r in records} == {"agent", *pooled.lg.HEURISTICS}
    digits = [r for r in records if r["family"] == "digits" and r["method"] == "agent"]
    assert len(digits) == 2 * 4 and all(r["test_loss"] == pytest.approx(1.8) for r in digits)
    assert all(r["family"] == "teacher-depth3" for r in runs["v5"][:1])  # inputs untouched


def test_the_pooled_statistics_match_the_constructed_losses(pooled):
    records = pooled.pooled_records({"a": _run(pooled, 0.0), "b": _run(pooled, 2.0)}, "agent")
    summary = pooled.pooled_summary(records, "agent", runs=4)
    assert summary["tasks"] == 2 * 2 + 2  # two teacher families of 2 tasks, digits once
    # normalised by the mean heuristic loss of each task: the agent is 0.9 everywhere
    assert summary["iqm"]["agent"][0] == pytest.approx(0.9)
    assert summary["iqm"]["round-robin"][0] == pytest.approx(1.0)
    for h, (d, lo, hi) in summary["difference"].items():
        assert d == pytest.approx(-0.1) and lo == pytest.approx(-0.1) and hi == pytest.approx(-0.1)
        assert summary["probability_of_improvement"][h][0] == pytest.approx(1.0)


def test_main_writes_the_tables_and_refuses_bad_folders(pooled, tmp_path, capsys):
    for name, offset in (("v5", 0.0), ("v6", 1.0)):
        (tmp_path / name).mkdir()
        lines = [json.dumps(r) for r in _run(pooled, offset)]
        (tmp_path / name / "episodes.jsonl").write_text("\n".join(lines) + "\n")
    table = pooled.main([str(tmp_path / "v5"), str(tmp_path / "v6"), "--method", "agent",
                         "--runs", "4", "--json", str(tmp_path / "s.json")])  # fmt: skip
    assert "6 tasks in 3 families" in table
    assert all(f"| {h} | -0.1000" in table for h in pooled.lg.HEURISTICS)
    assert json.loads((tmp_path / "s.json").read_text())["tasks"] == 6
    for argv, message in (
        ([str(tmp_path)], "has no episodes.jsonl"),
        ([str(tmp_path / "v5"), str(tmp_path / "v5")], "distinct names"),
    ):
        with pytest.raises(SystemExit):
            pooled.main([*argv, "--method", "agent"])
        assert message in capsys.readouterr().err.strip().splitlines()[-1]
    with pytest.raises(SystemExit):
        pooled.main([str(tmp_path / "v5"), "--method", "nope"])
    assert "--method: no test episodes" in capsys.readouterr().err


def test_a_heuristic_missing_from_a_run_is_left_out_not_a_crash(pooled):
    # v8 added "lookahead": pooled with earlier runs it has no episodes there
    early = [r for r in _run(pooled, 0.0) if r["method"] != "lookahead"]
    late = _run(pooled, 1.0)
    for r in late:  # in the late run lookahead is 20 % better than the other heuristics
        if r["method"] == "lookahead":
            r["test_loss"] *= 0.8
    records = pooled.pooled_records({"v7": early, "v8": late}, "agent")
    summary = pooled.pooled_summary(records, "agent", runs=4)
    assert summary["left_out"] == ["lookahead"]
    assert "lookahead" not in summary["iqm"] and "lookahead" not in summary["difference"]
    # the normalisation uses the kept heuristics only: the agent is still 0.9 everywhere
    assert summary["iqm"]["agent"][0] == pytest.approx(0.9)
    # a heuristic pooled as the method is not its own bar
    alone = pooled.pooled_summary(pooled.pooled_records({"v8": late}, "lookahead"), "lookahead", 4)
    assert "lookahead" not in alone["difference"] and alone["left_out"] == []
    assert alone["iqm"]["lookahead"][0] == pytest.approx(0.8)
    assert alone["difference"]["round-robin"][0] == pytest.approx(-0.2)
