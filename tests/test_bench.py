"""Tests of growenv.harness (episodes, stats, the oracle baseline, bench) and ``growenv bench``."""

from __future__ import annotations

import csv
import importlib
import json
import pathlib
import sys

import numpy as np
import pytest
import torch

from growenv.cli import main
from growenv.harness.baselines import oracle_row
from growenv.harness.bench import parse_seeds, run_bench
from growenv.harness.episodes import ROW_FIELDS, run_episode, run_lockstep_episodes
from growenv.harness.stats import bootstrap_ci, iqm, paired_difference
from growenv.harness.summary import format_table, summarize
from growenv.policies.heuristics import GreedyPolicy
from growenv.training import evaluate

TASK_KWARGS = {"n_train": 128, "n_stats": 64, "n_val": 64, "n_test": 64, "hidden": (8, 8)}
ENV_KWARGS = {"task_kwargs": TASK_KWARGS, "train_steps": 5, "max_steps": 4, "batch_size": 32}
TINY = {"task": "teacher_student", **ENV_KWARGS}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- statistics


def test_iqm_of_known_arrays():
    assert iqm([1, 2, 3, 4, 5, 6, 7, 8]) == pytest.approx(4.5)  # mean of 3..6
    assert iqm([8, 1, 7, 2, 6, 3, 5, 4]) == pytest.approx(4.5)  # order does not matter
    assert iqm([0, 0, 0, 100]) == 0.0  # the outlier is cut
    assert iqm([1, 2, 3]) == pytest.approx(2.0)  # n < 4: the mean
    assert iqm([7.0]) == 7.0
    assert np.isnan(iqm([]))
    np.testing.assert_allclose(
        iqm([[1, 2, 3, 4, 5, 6, 7, 8], [0, 0, 0, 100] * 2], axis=1), [4.5, 0]
    )


def test_bootstrap_ci_of_constant_array_is_degenerate():
    for stat in ("mean", "iqm"):
        assert bootstrap_ci(np.full(10, 0.1234), stat) == (0.1234, 0.1234)
    assert bootstrap_ci([3.0]) == (3.0, 3.0)
    assert all(np.isnan(bootstrap_ci([])))


def test_bootstrap_ci_contains_the_statistic_and_is_seeded():
    x = np.random.default_rng(0).normal(5.0, 1.0, size=20)
    low, high = bootstrap_ci(x, "mean", n_boot=2000)
    assert low < x.mean() < high
    assert high - low == pytest.approx(2 * 1.96 * x.std() / np.sqrt(20), rel=0.25)
    low_iqm, high_iqm = bootstrap_ci(x, "iqm")
    assert low_iqm < iqm(x) < high_iqm
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)
    wide = bootstrap_ci(x, alpha=0.01)
    assert wide[0] <= low and wide[1] >= high


def test_paired_difference_pairs_by_seed():
    values = {0: 1.0, 1: 2.0, 2: 3.0}
    reference = {0: 0.5, 1: 1.5, 3: 9.0}  # seed 2 and 3 have no partner
    d = paired_difference(values, reference)
    assert d == {"diff": 0.5, "low": 0.5, "high": 0.5, "n": 2}
    assert np.isnan(paired_difference({0: 1.0}, {1: 1.0})["diff"])


def test_parse_seeds():
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("2-4") == [2, 3, 4]
    assert parse_seeds("1, 5,9") == [1, 5, 9]
    for bad in ("", "x", "0", "5-2", "-1"):
        with pytest.raises(ValueError):
            parse_seeds(bad)


# --------------------------------------------------------------------------- episodes


def test_run_episode_rows():
    rows = run_episode(TINY, GreedyPolicy(), seed=0)
    assert [r["step"] for r in rows] == list(range(5))
    assert all(tuple(r) == ROW_FIELDS for r in rows)
    assert rows[0]["action"] == -1 and rows[0]["action_name"] == "reset"
    assert all(r["policy"] == "greedy" and r["task"] == "teacher_student" for r in rows)
    assert rows[0]["test_accuracy"] is None  # regression
    assert [r["compute"] for r in rows] == sorted(r["compute"] for r in rows)
    grown = [r for r in rows[1:] if r["grown_site"] >= 0]
    assert grown and all(r["params"] > rows[0]["params"] for r in grown)


def test_run_episode_test_loss_is_the_final_nets():
    from growenv.env.growth_env import GrowthEnv

    env = GrowthEnv(**TINY)
    rows = run_episode(TINY, GreedyPolicy(), seed=1, env=env)
    loss, _ = evaluate(env.net, env.task.test.x, env.task.test.y, env.task.loss)
    assert rows[-1]["test_loss"] == pytest.approx(float(loss))
    assert rows[-1]["params"] == env.net.num_parameters()


def test_oracle_row_trains_the_teacher_architecture():
    row = oracle_row(TINY, seed=0, total_steps=30)
    assert tuple(row) == ROW_FIELDS
    assert row["policy"] == "oracle"
    # 20 -> 8 -> 8 -> 1 with a skip 20 -> 8: (20+1)*8 + (8+1)*8 + (20+1)*8 + (8+1)*1
    assert row["params"] == 21 * 8 + 9 * 8 + 21 * 8 + 9
    fwd = 20 * 8 + 8 * 8 + 20 * 8 + 8
    assert row["flops"] == fwd
    assert row["compute"] == 3 * fwd * 30 * 32 + fwd * 64
    assert row["widths"] == "8-8"
    assert np.isfinite(row["test_loss"]) and row["test_loss"] < 1.5  # targets have variance 1
    again = oracle_row(TINY, seed=0, total_steps=30)
    assert _deterministic([again]) == _deterministic([row])  # seeded
    untrained = oracle_row(TINY, seed=0, total_steps=0)
    assert row["test_loss"] < untrained["test_loss"]
    with pytest.raises(ValueError, match="teacher"):
        oracle_row({**TINY, "task": "multi_sin", "task_kwargs": {"n_train": 64}}, seed=0)


# --------------------------------------------------------------------------- bench


def _cli(argv: list[str]) -> int:
    return main(argv)


def _bench_argv(out, *extra) -> list[str]:
    return [
        "bench",
        "--policies",
        "greedy,random",
        "--seeds",
        "2",
        "--env-kwargs",
        json.dumps(ENV_KWARGS),
        "--oracle",
        "--no-progress",
        "--out",
        str(out),
        *extra,
    ]


def test_bench_cli_writes_results_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli(_bench_argv(out)) == 0
    printed = capsys.readouterr().out
    assert "| greedy | 2 |" in printed and "| oracle | 2 |" in printed

    with (out / "results.csv").open() as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == ROW_FIELDS
    episodes = {(r["policy"], r["seed"]) for r in rows}
    assert episodes == {(p, s) for p in ("greedy", "random", "oracle") for s in ("0", "1")}
    assert len(rows) == 2 * 2 * 5 + 2  # 2 policies x 2 seeds x (reset + 4 steps) + oracle

    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["seeds"] == [0, 1]
    per_policy = summary["summary"]["teacher_student"]
    assert set(per_policy) == {"greedy", "random", "oracle"}
    for policy, entry in per_policy.items():
        assert entry["n"] == 2
        assert set(entry["metrics"]) == {"val_loss", "test_loss", "params", "compute", "step"}
        for stats in entry["metrics"].values():
            low, high = stats["ci_mean"]
            assert low <= stats["mean"] <= high
            low, high = stats["ci_iqm"]
            assert low <= stats["iqm"] <= high
        diff = entry["metrics"]["test_loss"]["diff_to_reference"]
        if policy == "greedy":
            assert diff is None
        else:
            assert diff["n"] == 2 and diff["low"] <= diff["diff"] <= diff["high"]
    finals = {
        (r["policy"], r["seed"]): float(r["test_loss"])
        for r in rows
        if r["step"] == "4" and r["policy"] != "oracle"
    }
    expected = np.mean([finals["random", s] - finals["greedy", s] for s in ("0", "1")])
    assert per_policy["random"]["metrics"]["test_loss"]["diff_to_reference"]["diff"] == (
        pytest.approx(expected)
    )
    assert (out / "teacher_student.png").stat().st_size > 0

    before = (out / "results.csv").read_bytes()
    assert _cli(_bench_argv(out)) == 2  # refuses: the directory is not empty
    assert "--force" in capsys.readouterr().err
    assert (out / "results.csv").read_bytes() == before
    assert _cli(_bench_argv(out, "--force", "--seeds", "1")) == 0
    assert (out / "results.csv").read_bytes() != before


def test_bench_cli_rejects_bad_arguments(tmp_path, capsys):
    out = tmp_path / "x"
    assert _cli(_bench_argv(out, "--policies", "nope")) == 2
    assert "valid policies" in capsys.readouterr().err
    assert _cli(_bench_argv(out, "--env-kwargs", "[1]")) == 2
    assert not out.exists()  # nothing was written


def _deterministic(rows):
    return [{k: v for k, v in r.items() if not k.startswith("seconds")} for r in rows]


def test_run_bench_workers_give_the_same_rows():
    kwargs = {"policies": ["greedy", "annealing"], "seeds": [0, 1], "env_kwargs": ENV_KWARGS}
    torch.set_num_threads(2)
    serial = run_bench(["teacher_student"], workers=1, progress=False, **kwargs)
    assert torch.get_num_threads() == 2  # one thread during the run, restored after it
    torch.set_num_threads(1)
    parallel = run_bench(["teacher_student"], workers=2, progress=False, **kwargs)
    assert _deterministic(serial) == _deterministic(parallel)
    assert [(r["policy"], r["seed"], r["step"]) for r in serial] == [
        (p, s, t) for p in ("greedy", "annealing") for s in (0, 1) for t in range(5)
    ]


def test_summarize_and_table_for_classification():
    rows = run_bench(
        ["multi_sin"],
        ["greedy", "round-robin"],
        [0, 1],
        {**ENV_KWARGS, "task_kwargs": {"n_train": 128, "n_stats": 64, "n_val": 64, "n_test": 64}},
        progress=False,
    )
    summary = summarize(rows)
    metrics = summary["multi_sin"]["round-robin"]["metrics"]
    assert "test_accuracy" in metrics and 0 <= metrics["test_accuracy"]["mean"] <= 1
    table = format_table(summary)
    assert "test acc" in table and "| round-robin | 2 |" in table
    with pytest.raises(ValueError, match="task"):
        run_bench(["multi_sin"], ["greedy"], [0], {"task": "digits"})


def test_lockstep_bench_rows_match_single_env_rows():
    kw = dict(train_steps=3, max_steps=3, batch_size=32, dtype="float64")
    args = (["teacher_student"], ["greedy", "random"], [0, 1], kw)
    lock = run_bench(*args, progress=False, vec="lockstep")
    single = run_bench(*args, progress=False, vec="single")
    assert len(lock) == len(single)
    for a, b in zip(lock, single):
        assert (a["policy"], a["seed"], a["step"], a["action"]) == (
            b["policy"],
            b["seed"],
            b["step"],
            b["action"],
        )
        assert a["params"] == b["params"]
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-6)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-6)
    with pytest.raises(ValueError, match="cannot run in lockstep"):
        run_bench(["teacher_student"], ["greedy-loss"], [0], kw, progress=False, vec="lockstep")


def test_bench_takes_the_env_device_from_env_kwargs_in_both_envs():
    kw = dict(train_steps=3, max_steps=3, batch_size=32, dtype="float64")
    args = (["teacher_student"], ["greedy", "round-robin"], [0, 1])
    for vec in ("lockstep", "single"):
        plain = run_bench(*args, kw, progress=False, vec=vec)
        rows = run_bench(*args, {**kw, "device": "cpu"}, progress=False, vec=vec)
        assert len(rows) == 2 * 2 * 4 and _deterministic(rows) == _deterministic(plain)


def test_lockstep_episodes_refuse_a_policy_that_queries_the_env():
    with pytest.raises(ValueError, match="'bic' queries the env"):
        run_lockstep_episodes(TINY, "bic", [0, 1])


def test_check_out_file_never_overwrites_without_force(tmp_path):
    from growenv.harness.summary import check_out_file

    path = tmp_path / "bench.json"
    assert check_out_file(path) == path  # a new file: fine
    path.write_text("kept")
    with pytest.raises(FileExistsError, match="--force"):
        check_out_file(path)
    assert check_out_file(path, force=True) == path
    with pytest.raises(FileExistsError, match="directory"):
        check_out_file(tmp_path, force=True)
    assert path.read_text() == "kept"


def _experiment(name: str, monkeypatch):
    """The script ``experiments/<name>.py`` as a module."""
    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).resolve().parents[1] / "experiments"))
    return importlib.import_module(name)


def test_bench_scripts_refuse_an_existing_out_file_before_running(tmp_path, monkeypatch):
    """The benchmark scripts check ``--out`` first: no run (minutes) ends in a lost file."""
    out = tmp_path / "bench.json"
    out.write_text("kept")
    bench_conv = _experiment("bench_conv", monkeypatch)
    monkeypatch.setattr(bench_conv, "run_worker", pytest.fail)  # nothing may run
    with pytest.raises(FileExistsError, match="--force"):
        bench_conv.main(["--cases", "pair", "--skip-gromo", "--out", str(out)])
    bench_solver = _experiment("bench_solver", monkeypatch)
    monkeypatch.setattr(bench_solver, "run_case", pytest.fail)
    with pytest.raises(FileExistsError, match="--force"):
        bench_solver.main(["--out", str(out)])
    for name in ("bench_env", "bench_vec"):
        module = _experiment(name, monkeypatch)
        monkeypatch.setattr(sys, "argv", [name, "--out", str(out)])
        with pytest.raises(FileExistsError, match="--force"):
            module.main()
    assert out.read_text() == "kept"


def test_ppo_vs_greedy_refuses_to_overwrite_an_evaluation(tmp_path, monkeypatch):
    """Evaluating a saved agent (--model) into a directory with results refuses up front."""
    module = _experiment("ppo_vs_greedy", monkeypatch)
    monkeypatch.setattr(module, "train", pytest.fail)  # nothing may run
    monkeypatch.setattr(module, "evaluate", pytest.fail)
    for existing in ("eval/results.csv", "table.md"):
        out = tmp_path / existing.replace("/", "_")
        (out / existing).parent.mkdir(parents=True)
        (out / existing).write_text("kept")
        argv = ["ppo_vs_greedy", "--model", str(tmp_path / "agent"), "--out", str(out)]
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(FileExistsError, match="--force"):
            module.main()
        assert (out / existing).read_text() == "kept"


def test_auto_uses_lockstep_only_where_the_lockstep_env_can_batch():
    """One statement of what the lockstep env batches (EnvConfig.lockstep_obstacle) decides
    the plan: Adam MLPs go in lockstep groups, an SGD or a conv env runs one env per seed
    (before, bench planned lockstep for SGD and the lockstep env then refused it)."""
    from growenv.env.config import EnvConfig
    from growenv.harness.bench import plan_jobs

    assert EnvConfig().lockstep_obstacle() is None
    assert EnvConfig(optimizer="sgd").lockstep_obstacle().startswith("optimizer:")
    assert EnvConfig(net="conv").lockstep_obstacle().startswith("net:")
    assert EnvConfig(augment=True).lockstep_obstacle().startswith("augment:")
    lockstep = plan_jobs(["teacher_student"], ["greedy"], [0, 1, 2])
    assert [len(j.seeds) for j in lockstep] == [3] and lockstep[0].lockstep
    single = plan_jobs(["teacher_student"], ["greedy"], [0, 1, 2], {"optimizer": "sgd"})
    assert [len(j.seeds) for j in single] == [1, 1, 1] and not any(j.lockstep for j in single)
    with pytest.raises(ValueError, match="optimizer: the lockstep env implements 'adam'"):
        plan_jobs(["teacher_student"], ["greedy"], [0], {"optimizer": "sgd"}, vec="lockstep")
