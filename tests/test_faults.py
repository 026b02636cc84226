"""Fault tests (issue #20): ``growenv train`` and ``growenv bench`` killed at random points
(seeded) with SIGINT or SIGKILL, then resumed. A resumed run completes, loses at most one
checkpoint interval, and its logs / results hold every row once."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from growenv.harness.bench import run_bench
from growenv.harness.ppo_training import checkpoint_steps, latest_checkpoint

TINY_TASK = {"n_train": 128, "n_stats": 64, "n_val": 64, "n_test": 64}
TRAIN_ENV = {"train_steps": 2, "max_steps": 3, "batch_size": 32, "max_params": 400}
ROLLOUT = 64  # 2 envs x PPOConfig.n_steps (32): one log row per rollout
EVERY = 64  # --checkpoint-every
TOTAL = 256
BENCH_ENV = {"train_steps": 2, "max_steps": 3, "batch_size": 32, "task_kwargs": TINY_TASK}
BENCH = ["--task", "teacher_student", "--policy", "greedy-loss,greedy", "--seed", "0-3"]


def _growenv(*args: str, log: Path) -> subprocess.Popen:
    """``growenv ARGS`` (the console script's entry point) with its output in ``log``."""
    code = "import sys; from growenv.cli import main; sys.exit(main())"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log.open("a") as f:
        return subprocess.Popen(
            [sys.executable, "-c", code, *args], stdout=f, stderr=subprocess.STDOUT, env=env
        )


def _wait_for(proc: subprocess.Popen, ready, what: str, timeout: float = 240.0) -> None:
    end = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the run ended (status {proc.returncode}) before {what}"
        assert time.monotonic() < end, f"no {what} after {timeout} s"
        time.sleep(0.05)


def _logged_steps(run: Path) -> list[int]:
    path = run / "logs" / "progress.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return []
    col = rows[0].index("time/total_timesteps")
    return [int(float(r[col])) for r in rows[1:] if len(r) == len(rows[0]) and r[col]]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL])
def test_train_killed_at_a_random_point_resumes_losing_at_most_one_interval(tmp_path, signum):
    rng = random.Random(f"train-{int(signum)}")
    rows_before_kill = rng.randint(1, 2)  # of the 4 rollouts
    run, log = tmp_path / "run", tmp_path / "log.txt"
    args = ["train", "--out", str(run), "--timesteps", str(TOTAL), "--n-envs", "2"]
    args += ["--checkpoint-every", str(EVERY), "--no-progress"]
    args += ["--env-kwargs", json.dumps({**TRAIN_ENV, "task_kwargs": TINY_TASK})]
    proc = _growenv(*args, log=log)
    _wait_for(proc, lambda: len(_logged_steps(run)) >= rows_before_kill, "log rows")
    time.sleep(rng.uniform(0.0, 0.3))
    proc.send_signal(signum)
    status = proc.wait(timeout=120)
    logged = max(_logged_steps(run))
    sessions = json.loads((run / "config.json").read_text())["sessions"]
    # the newest checkpoint on disk; a SIGKILL between saving it and rewriting config.json
    # leaves the session's end_timesteps one interval behind, and a resume still uses it
    kept = checkpoint_steps(latest_checkpoint(run))
    assert kept - sessions[0]["end_timesteps"] in ((0, EVERY) if signum == signal.SIGKILL else (0,))
    if signum == signal.SIGINT:
        assert status == 130, log.read_text()
        last = log.read_text().strip().splitlines()[-1]
        assert "train interrupted at" in last and "--resume" in last
        assert sessions[0]["status"] == "interrupted"
        assert kept >= logged  # Ctrl-C saves every logged step
    else:
        assert status == -signal.SIGKILL
        assert sessions[0]["status"] == "running"  # it could not say otherwise
        assert logged - kept <= EVERY  # at most one checkpoint interval lost
    assert (run / "checkpoints" / f"model_{kept}_steps.zip").is_file()

    resumed = _growenv(*args, "--resume", log=log)
    assert resumed.wait(timeout=240) == 0, log.read_text()
    assert _logged_steps(run) == list(range(ROLLOUT, TOTAL + 1, ROLLOUT))  # every row once
    sessions = json.loads((run / "config.json").read_text())["sessions"]
    first, second = sessions
    assert first["status"] == ("interrupted" if signum == signal.SIGINT else "killed")
    assert (second["start_timesteps"], second["end_timesteps"]) == (kept, TOTAL)
    assert second["status"] == "completed"
    assert second["resumed_from"].endswith(f"model_{kept}_steps.zip")
    assert json.loads((run / "training.json").read_text())["timesteps"] == TOTAL


def _episodes(path: Path) -> int:
    return path.read_text().count("\n") if path.is_file() else 0


def _results(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return [
            {k: v for k, v in r.items() if not k.startswith("seconds")} for r in csv.DictReader(f)
        ]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL])
def test_bench_killed_at_a_random_point_resumes_with_every_row_once(tmp_path, signum):
    rng = random.Random(f"bench-{int(signum)}")
    jobs_before_kill = rng.randint(1, 3)  # of 5: greedy's lockstep group, greedy-loss x 4
    out, log = tmp_path / "bench", tmp_path / "log.txt"
    args = ["bench", *BENCH, "--env-kwargs", json.dumps(BENCH_ENV), "--out", str(out)]
    args += ["--no-progress"]
    proc = _growenv(*args, log=log)
    _wait_for(proc, lambda: _episodes(out / "episodes.jsonl") >= jobs_before_kill, "episodes")
    time.sleep(rng.uniform(0.0, 0.2))
    proc.send_signal(signum)
    status = proc.wait(timeout=120)
    assert status == (130 if signum == signal.SIGINT else -signal.SIGKILL), log.read_text()
    assert not (out / "results.csv").exists()  # nothing half-done
    assert _episodes(out / "episodes.jsonl") >= jobs_before_kill  # what finished is kept

    resumed = _growenv(*args, "--resume", log=log)
    assert resumed.wait(timeout=240) == 0, log.read_text()
    rows = _results(out / "results.csv")
    keys = [(r["policy"], r["seed"], r["step"]) for r in rows]
    assert len(keys) == len(set(keys)) == 2 * 4 * 4  # every (policy, seed, step) once
    whole = run_bench(
        ["teacher_student"], ["greedy-loss", "greedy"], [0, 1, 2, 3], BENCH_ENV, progress=False
    )
    expected = [{k: str("" if v is None else v) for k, v in r.items()} for r in whole]
    assert rows == [{k: v for k, v in r.items() if not k.startswith("seconds")} for r in expected]
