"""Runs that never lose work (issue #20), library side: the bench's store, resume and force;
lockstep groups of bounded size; training's sessions, appended logs, total timesteps and
clear errors. Killing real processes is tests/test_faults.py."""

from __future__ import annotations

import csv
import json
import os
import signal

import pytest

from growenv.harness import bench as bench_module
from growenv.harness.bench import BenchJob, plan_jobs, run_bench
from growenv.harness.lifecycle import RunInterrupted, stop_signals
from growenv.harness.ppo_training import PPOConfig, latest_checkpoint, train
from growenv.harness.store import META_FILE, STORE_FILE, BenchStore
from growenv.harness.summary import summarize, write_results

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TASK_KWARGS = {"n_train": 128, "n_stats": 64, "n_val": 64, "n_test": 64, "hidden": (8, 8)}
ENV = {"task_kwargs": TASK_KWARGS, "train_steps": 2, "max_steps": 3, "batch_size": 32}
BENCH = dict(tasks=["teacher_student"], policies=["greedy", "greedy-loss"], seeds=[0, 1, 2])


def _bench(out=None, **kw):
    return run_bench(env_kwargs=ENV, progress=False, out=out, **{**BENCH, **kw})


def _csv_without_seconds(path):
    with path.open(newline="") as f:
        return [
            {k: v for k, v in r.items() if not k.startswith("seconds")} for r in csv.DictReader(f)
        ]


def _write(out, rows):
    write_results(out, rows, summarize(rows), {"seeds": BENCH["seeds"]})
    return _csv_without_seconds(out / "results.csv")


RUN_JOB = bench_module.run_job


def _interrupt_after(monkeypatch, n_jobs, action):
    """run_job runs ``n_jobs`` jobs, then calls ``action()`` (e.g. a signal) on the next;
    returns the list of the jobs run."""
    calls = []

    def run_job(job, env_kwargs):
        calls.append(job)
        if len(calls) > n_jobs:
            action()
        return RUN_JOB(job, env_kwargs)

    monkeypatch.setattr(bench_module, "run_job", run_job)
    return calls


# --------------------------------------------------------------------------- bench


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_bench_keeps_finished_jobs_and_resumes_to_the_same_results(
    tmp_path, monkeypatch, signum
):
    whole = _write(tmp_path / "whole", _bench(tmp_path / "whole"))
    assert len(whole) == 2 * 3 * 4  # 2 policies x 3 seeds x (reset + 3 steps)

    # jobs: greedy's 3 seeds in one lockstep group, then greedy-loss seed by seed
    out = tmp_path / "cut"
    _interrupt_after(monkeypatch, 3, lambda: os.kill(os.getpid(), signum))
    with pytest.raises(RunInterrupted, match="3 of 4 jobs finished.*--resume"):
        _bench(out)
    assert not (out / "results.csv").exists()  # nothing half-done
    done = {("greedy", 0), ("greedy", 1), ("greedy", 2), ("greedy-loss", 0), ("greedy-loss", 1)}
    assert BenchStore(out).done() == {("teacher_student", p, s) for p, s in done}
    with pytest.raises(FileExistsError, match="--resume"):
        _bench(out)  # neither resume nor force
    _interrupt_after(monkeypatch, 0, lambda: os.kill(os.getpid(), signum))
    with pytest.raises(RunInterrupted, match="3 of 4 jobs finished"):
        _bench(out, resume=True)  # interrupted again before its first job
    calls = _interrupt_after(monkeypatch, 10**6, lambda: None)
    rows = _bench(out, resume=True)
    assert [(j.policy, j.seeds) for j in calls] == [("greedy-loss", (2,))]
    assert _write(out, rows) == whole  # the same rows, in the same order


def test_resume_runs_only_the_missing_episodes_and_twice_is_idempotent(tmp_path, monkeypatch):
    out = tmp_path / "b"
    _bench(out, seeds=[0, 1])
    calls = _interrupt_after(monkeypatch, 10**6, lambda: None)
    rows = _bench(out, resume=True)  # seed 2 is new: one lockstep job (greedy), one single
    assert [(j.policy, j.seeds) for j in calls] == [("greedy", (2,)), ("greedy-loss", (2,))]
    calls.clear()
    assert _bench(out, resume=True) == rows and calls == []  # all done: nothing runs
    keys = [(r["policy"], r["seed"]) for r in rows if r["step"] == 0]
    assert keys == [(p, s) for p in ("greedy", "greedy-loss") for s in (0, 1, 2)]


def test_resume_refuses_other_env_settings_and_force_clears_what_it_replaces(tmp_path):
    out = tmp_path / "b"
    _bench(out, seeds=[0], policies=["greedy"])
    with pytest.raises(ValueError, match=r"resume: .* env_kwargs \(max_steps: 3 there, 2 now\)"):
        run_bench(
            ["teacher_student"],
            ["greedy"],
            [0],
            {**ENV, "max_steps": 2},
            out=out,
            resume=True,
            progress=False,
        )
    # a previous bench's files, its plots among them, and a file that is not the bench's
    (out / "old_task.png").write_bytes(b"png")
    (out / "teacher_student.png").write_bytes(b"png")
    (out / "notes.txt").write_text("mine")
    with (out / "results.csv").open("w") as f:
        f.write("task,policy,seed,step\nold_task,greedy,0,0\n")
    rows = _bench(out, seeds=[1], policies=["greedy"], force=True)
    assert {r["seed"] for r in rows} == {1}
    assert sorted(p.name for p in out.iterdir()) == [META_FILE, STORE_FILE, "notes.txt"]
    assert BenchStore(out).done() == {("teacher_student", "greedy", 1)}
    with pytest.raises(ValueError, match="not both"):
        _bench(out, resume=True, force=True)


def test_the_store_keeps_the_first_record_of_a_key_and_ignores_a_cut_last_line(tmp_path):
    store = BenchStore.open(tmp_path, ENV)
    row = {"task": "t", "policy": "p", "seed": 0, "step": 0, "val_loss": 1.0}
    store.append([row, {**row, "step": 1}])
    store.append([{**row, "val_loss": 2.0}])  # the same episode again (a retried job)
    with store.path.open("a") as f:
        f.write('{"rows": [{"task": "t", "policy": "p", "seed": 1')  # a kill mid-write
    assert store.rows([("t", "p", 0)]) == [row, {**row, "step": 1}]
    assert store.done() == {("t", "p", 0)}
    store = BenchStore.open(tmp_path, ENV, resume=True)  # cuts the partial line
    store.append([{**row, "seed": 1}])
    assert store.done() == {("t", "p", 0), ("t", "p", 1)}


def test_lockstep_seeds_run_in_bounded_groups_with_the_results_of_one_group():
    jobs = plan_jobs(["teacher_student"], ["greedy"], range(100_000), ENV)
    assert len(jobs) == 1563 and max(len(j.seeds) for j in jobs) == 64  # never one giant env
    assert [s for j in jobs for s in j.seeds] == list(range(100_000))
    assert "seeds=0..63 (64 seeds)" in jobs[0].describe()  # errors name seeds compactly
    assert BenchJob("t", "greedy", (3,)).describe() == "task=t policy=greedy seed=3"
    # in float64 (in float32, rounding that differs with the group size can flip a near tie)
    kw = dict(tasks=["teacher_student"], policies=["greedy", "random"], seeds=[0, 1, 2, 3, 4])
    env = {**ENV, "dtype": "float64"}
    one = run_bench(env_kwargs=env, progress=False, vec="lockstep", **kw)
    split = run_bench(env_kwargs=env, progress=False, vec="lockstep", max_lockstep=2, **kw)
    assert len(one) == len(split)
    for a, b in zip(one, split, strict=True):
        assert (a["policy"], a["seed"], a["step"], a["action"], a["params"]) == (
            b["policy"],
            b["seed"],
            b["step"],
            b["action"],
            b["params"],
        )
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-9)
    with pytest.raises(ValueError, match="max_lockstep"):
        plan_jobs(["teacher_student"], ["greedy"], [0], ENV, max_lockstep=0)


# --------------------------------------------------------------------------- training

PPO_ENV = dict(
    task="teacher_student_distribution",
    train_steps=2,
    max_steps=3,
    batch_size=32,
    max_params=400,
    task_kwargs={"n_train": 128, "n_stats": 64, "n_val": 64, "n_test": 64},
)


def _config(**kw):
    base = dict(
        env_kwargs=PPO_ENV,
        total_timesteps=64,
        n_envs=2,
        vec="lockstep",
        n_steps=16,
        batch_size=32,
        n_epochs=1,
        checkpoint_every=32,
        eval_every=0,
        eval_tasks=0,
    )
    return PPOConfig(**{**base, **kw})


def _logged_steps(run):
    with (run / "logs" / "progress.csv").open(newline="") as f:
        return [int(float(r["time/total_timesteps"])) for r in csv.DictReader(f)]


def test_resume_appends_to_the_logs_records_its_session_and_counts_total_steps(tmp_path):
    run = tmp_path / "run"
    train(_config(), run, progress_bar=False)
    assert _logged_steps(run) == [32, 64]
    assert latest_checkpoint(run) == run / "model.zip"
    # continue from the checkpoint at 32 steps to a total of 96: rows after 32 are redone
    ckpt = run / "checkpoints" / "model_32_steps.zip"
    train(_config(total_timesteps=96), run, resume=ckpt, progress_bar=False)
    assert _logged_steps(run) == [32, 64, 96]  # every row once, none lost
    saved = json.loads((run / "config.json").read_text())
    assert saved["total_timesteps"] == 96
    sessions = [(s["start_timesteps"], s["end_timesteps"], s["status"]) for s in saved["sessions"]]
    assert sessions == [(0, 64, "completed"), (32, 96, "completed")]
    assert saved["sessions"][1]["resumed_from"] == str(ckpt)
    assert PPOConfig.from_json(saved).total_timesteps == 96
    training = json.loads((run / "training.json").read_text())
    assert training["timesteps"] == 96 and training["sessions"] == 2  # total, not additional
    # resuming a finished run to the same total trains nothing and keeps every row
    train(_config(total_timesteps=96), run, resume=run, progress_bar=False)
    assert _logged_steps(run) == [32, 64, 96]


def test_a_new_run_never_replaces_an_old_one_silently_and_force_clears_it(tmp_path):
    run = tmp_path / "run"
    train(_config(total_timesteps=32), run, progress_bar=False)
    (run / "model.zip").unlink()  # as after an interruption: a run, no final model
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(_config(total_timesteps=32), run, progress_bar=False)
    (run / "checkpoints").mkdir(exist_ok=True)
    (run / "checkpoints" / "model_9999_steps.zip").write_bytes(b"old")
    train(_config(total_timesteps=32), run, force=True, progress_bar=False)
    assert not (run / "checkpoints" / "model_9999_steps.zip").exists()
    assert len(json.loads((run / "config.json").read_text())["sessions"]) == 1


def test_a_truncated_zip_or_a_run_without_checkpoints_is_one_clear_error(tmp_path):
    run = tmp_path / "run"
    train(_config(total_timesteps=32), run, progress_bar=False)
    cut = tmp_path / "cut.zip"
    cut.write_bytes((run / "model.zip").read_bytes()[:300])
    with pytest.raises(ValueError, match="resume: .*cut.zip, which is truncated or corrupt"):
        train(_config(), run, resume=cut, progress_bar=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        FileNotFoundError, match="resume: expected a run directory with checkpoints/"
    ):
        train(_config(), run, resume=tmp_path / "empty", progress_bar=False)
    with pytest.raises(ValueError, match="checkpoint_every"):
        _config(checkpoint_every=0).validate()


def test_stop_signals_turn_sigterm_into_a_request_then_an_interrupt():
    requests = []
    with stop_signals(requests.append) as received:
        os.kill(os.getpid(), signal.SIGTERM)  # first: a request to stop at a clean point
        assert requests == [signal.SIGTERM] and received == {"signal": signal.SIGTERM}
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # second: stop now
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    job = BenchJob("t", "greedy", (0, 1, 2), lockstep=True)
    assert job.pending({("t", "greedy", 1)}) == BenchJob("t", "greedy", (0, 2), True)
    assert job.pending(set(job.keys)) is None
