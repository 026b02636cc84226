"""growenv on Ray (issue 22): the bench's jobs as Ray tasks and training sweeps with Ray Tune,
on a real local Ray of 2 CPUs (started once for the session; no mocks). The bench on Ray
writes the local backend's rows, resumes, and survives a killed worker with every episode
stored once; a sweep runs, resumes after an interruption and writes its summary; a sweep of
the value learners (DQN, bandit) runs and selects a run that ``dqn:RUN`` loads."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from growenv.cli import main
from growenv.harness.bench import run_bench
from growenv.harness.store import STORE_FILE, BenchStore

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_TASK = {"n_train": 128, "n_stats": 64, "n_val": 64, "n_test": 64}
ENV = {"train_steps": 2, "max_steps": 3, "batch_size": 32, "task_kwargs": TINY_TASK}


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray of 2 CPUs for the session (its start-up, ~10 s, paid once); yields the
    address other processes join it by."""
    started = not ray.is_initialized()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    for signum, handler in handlers.items():  # ray.init's SIGTERM handler: not for the suite
        signal.signal(signum, handler)
    yield ray.get_runtime_context().gcs_address
    if started:
        ray.shutdown()


def _without_seconds(rows):
    return [{k: v for k, v in r.items() if not k.startswith("seconds")} for r in rows]


def _csv(path: Path):
    with path.open(newline="") as f:
        return _without_seconds(csv.DictReader(f))


def _records(out: Path) -> list[tuple]:
    """Every stored episode key, one per record (duplicates kept: the store's raw lines)."""
    keys = []
    for line in (out / STORE_FILE).read_text().splitlines():
        rows = json.loads(line)["rows"]
        keys += sorted({(r["task"], r["policy"], r["seed"]) for r in rows})
    return keys


# --------------------------------------------------------------------------- bench


def test_bench_on_ray_writes_the_local_rows_row_for_row(tmp_path, ray_cluster):
    args = ["bench", "--task", "teacher_student", "--policy", "greedy,greedy-loss,random"]
    args += ["--seed", "0-2", "--env-kwargs", json.dumps(ENV), "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    assert main([*args, "--backend", "ray", "--out", str(tmp_path / "ray")]) == 0
    local, on_ray = _csv(tmp_path / "local" / "results.csv"), _csv(tmp_path / "ray" / "results.csv")
    assert len(local) == 3 * 3 * 4 and on_ray == local  # bitwise: the CSV's float text
    keys = BenchStore(tmp_path / "local").done()
    assert BenchStore(tmp_path / "ray").done() == keys
    assert sorted(_records(tmp_path / "ray")) == sorted(keys)  # each episode stored once
    summary = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("local", "ray")]
    assert summary[0] == summary[1]


def test_bench_on_ray_resumes_running_only_the_missing_episodes(tmp_path, ray_cluster):
    bench = dict(tasks=["teacher_student"], policies=["greedy-loss"], env_kwargs=ENV)
    out = tmp_path / "bench"
    run_bench(seeds=[0, 2], out=out, progress=False, **bench)  # locally: 2 of 4 episodes
    before = _records(out)
    rows = run_bench(
        seeds=[0, 1, 2, 3], out=out, resume=True, progress=False, backend="ray", **bench
    )
    added = _records(out)[len(before) :]
    assert sorted(added) == [("teacher_student", "greedy-loss", s) for s in (1, 3)]
    whole = run_bench(seeds=[0, 1, 2, 3], progress=False, **bench)
    assert _without_seconds(rows) == _without_seconds(whole)


def _bench_workers() -> list[int]:
    """Pids of the Ray workers running a bench job now (titled ``ray::bench_job``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if title.startswith(b"ray::bench_job"):
                pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds Ray's workers in /proc")
def test_a_ray_worker_killed_mid_bench_costs_only_its_job(tmp_path, ray_cluster):
    # one episode per job (greedy-loss queries the env); 6 jobs on 2 CPUs
    env = {**ENV, "train_steps": 20, "max_steps": 4}
    out = tmp_path / "bench"
    killed: list[int] = []

    def kill_one_worker() -> None:
        end = time.monotonic() + 120
        while time.monotonic() < end and not killed:
            done = len(_records(out)) if (out / STORE_FILE).is_file() else 0
            running = _bench_workers()
            if done >= 1 and running:  # mid-bench: a job stored, another one running
                os.kill(running[0], signal.SIGKILL)
                killed.append(running[0])
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_worker, daemon=True)
    killer.start()
    seeds = list(range(6))
    rows = run_bench(
        ["teacher_student"], ["greedy-loss"], seeds, env, out=out, progress=False, backend="ray"
    )
    killer.join()
    assert killed, "no bench worker was running after the first job"
    keys = [("teacher_student", "greedy-loss", s) for s in seeds]
    assert sorted(_records(out)) == keys  # every episode once: none lost, none twice
    assert [r["seed"] for r in rows if r["step"] == 0] == seeds


def test_backend_ray_without_ray_is_one_line_saying_how_to_install(tmp_path):
    code = (
        "import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed
        "from growenv.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    for args in (["bench", "--backend", "ray", "--seed", "0"], ["sweep", "x.json", "--out", "o"]):
        proc = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=tmp_path
        )
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and 'pip install -e ".[ray]"' in lines[0], proc.stderr


def test_bench_address_errors_are_one_line(ray_cluster, capsys):
    assert main(["bench", "--address", "localhost:1", "--seed", "0"]) == 2
    assert "--address: expected --backend ray" in capsys.readouterr().err


def test_an_unreachable_address_is_one_line_at_once(tmp_path):
    code = "import sys; from growenv.cli import main; sys.exit(main(sys.argv[1:]))"
    args = ["bench", "--backend", "ray", "--address", "127.0.0.1:1", "--seed", "0"]
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 2 and time.monotonic() - start < 60, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "--address: cannot reach a Ray cluster at '127.0.0.1:1'" in last


# --------------------------------------------------------------------------- sweep

SWEEP = {
    "base": {
        "total_timesteps": 128,
        "n_envs": 2,
        "n_steps": 32,
        "batch_size": 32,
        "n_epochs": 1,
        "eval_every": 64,
        "eval_tasks": 1,
        "checkpoint_every": 64,
        "env_kwargs": {**ENV, "max_params": 400},
    },
    "grid": {"learning_rate": [1e-4, 1e-3]},
    "seeds": 2,
    "asha": {"grace_period": 64, "reduction_factor": 2},
}


def _trial_lines(out: Path) -> list[dict]:
    path = out / "trials.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def test_a_sweep_runs_resumes_after_an_interruption_and_writes_its_summary(
    tmp_path, ray_cluster, capsys
):
    spec, out, log = tmp_path / "sweep.json", tmp_path / "sweep", tmp_path / "log.txt"
    spec.write_text(json.dumps(SWEEP))
    args = ["sweep", str(spec), "--out", str(out), "--no-progress"]
    code = "import sys; from growenv.cli import main; sys.exit(main(sys.argv[1:]))"
    with log.open("w") as f:  # a driver joining the session's Ray, stopped by Ctrl-C
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *args, "--address", ray_cluster], stdout=f, stderr=f
        )
    end = time.monotonic() + 240
    while not _trial_lines(out):
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < end, "no trial finished"
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130, log.read_text()
    assert "sweep interrupted" in log.read_text().strip().splitlines()[-1]
    finished = len(_trial_lines(out))
    assert 1 <= finished < 4

    assert main([*args, "--resume"]) == 0
    names = [t["trial"] for t in _trial_lines(out)]
    assert sorted(names) == ["c0_s0", "c0_s1", "c1_s0", "c1_s1"]  # each trial once
    summary = json.loads((out / "summary.json").read_text())
    assert [c["params"] for c in summary["configs"]] == [
        {"learning_rate": lr} for lr in (1e-4, 1e-3)
    ]
    for config in summary["configs"]:
        assert [s["seed"] for s in config["seeds"]] == [0, 1]
        scores = [s["score"] for s in config["seeds"]]
        assert all(s is not None for s in scores) and config["ci"][0] <= config["iqm"]
    selected = summary["selected"]
    assert selected is not None and selected["models"]
    for model in selected["models"]:
        best = Path(model).parent / "best_model.zip"  # what ppo:RUN loads, where kept
        assert Path(model).name == ("best_model.zip" if best.is_file() else "model.zip")
        assert (
            Path(model).is_file()
            and json.loads((Path(model).parent / "config.json").read_text())["learning_rate"]
            == selected["params"]["learning_rate"]
        )
    assert "| c0 |" in (out / "summary.md").read_text()
    assert "selected: c" in capsys.readouterr().out


def test_sweep_file_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    cases = {
        "missing.json": "expected a sweep file",
        "bad.json": "expected a JSON object",
    }
    bad.write_text("{not json")
    for name, message in cases.items():
        assert main(["sweep", str(tmp_path / name), "--out", str(tmp_path / "o")]) == 2
        assert message in capsys.readouterr().err
    for spec, message in [
        ({"grid": {"lr": [1]}}, "unknown key 'lr'"),
        ({"grid": {"learning_rate": [1e-3]}, "random": {}}, "expected one of 'grid'"),
        ({"grid": {"n_steps": [0]}}, "n_steps: expected an int >= 1"),
        ({"grid": {"learning_rate": [1e-3]}, "seeds": [1, 1]}, "seeds: expected"),
    ]:
        bad.write_text(json.dumps(spec))
        assert main(["sweep", str(bad), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_a_random_search_draws_its_configurations_once_from_its_seed():
    from growenv.harness.sweep import load_sweep

    space = {"learning_rate": {"loguniform": [1e-5, 1e-3]}, "n_steps": {"choice": [16, 32]}}
    data = {"base": SWEEP["base"], "random": {"samples": 3, "seed": 7, "space": space}}
    spec = load_sweep(data)
    assert len(spec.configs) == 3 and spec.seeds == (0, 1, 2) and spec.asha == {}
    assert spec == load_sweep(data)  # the same draws every time: a resume finds them again
    for params, config in zip(spec.params, spec.configs):
        assert 1e-5 <= params["learning_rate"] <= 1e-3 and params["n_steps"] in (16, 32)
        assert config["learning_rate"] == params["learning_rate"]
        assert config["env_kwargs"]["max_params"] == 400


# --------------------------------------------------------------------------- value sweep

ALGOS = ("dqn", "bandit")
VALUE_SWEEP = {
    "learner": "value",
    "base": {
        "total_timesteps": 16,
        "n_envs": 2,
        "learning_starts": 4,
        "batch_size": 8,
        "train_freq": 1,
        "target_update": 3,
        "hidden": [16],
        "log_every": 4,
        "eval_every": 8,
        "eval_tasks": 1,
        "env_kwargs": {**ENV, "max_params": 400},
    },
    "grid": {"algo": list(ALGOS)},
    "seeds": 1,
    "asha": False,
}


def _last_evaluation(run: Path) -> tuple[int, float]:
    """``(timesteps, agent_over_greedy)`` of a value run's last evaluation row."""
    with (run / "progress.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["agent_over_greedy"]]
    return int(rows[-1]["timesteps"]), float(rows[-1]["agent_over_greedy"])


def test_a_value_learner_sweep_runs_and_selects_a_loadable_run(tmp_path, ray_cluster, capsys):
    from growenv.policies import make_policy

    spec, out = tmp_path / "sweep.json", tmp_path / "sweep"
    spec.write_text(json.dumps(VALUE_SWEEP))
    assert main(["sweep", str(spec), "--out", str(out), "--no-progress"]) == 0
    trials = {t["trial"]: t for t in _trial_lines(out)}
    assert sorted(trials) == ["c0_s0", "c1_s0"]
    summary = json.loads((out / "summary.json").read_text())
    assert [c["params"] for c in summary["configs"]] == [{"algo": a} for a in ALGOS]
    scores = []
    for i, config in enumerate(summary["configs"]):
        run = out / "runs" / f"c{i}_s0"
        steps, score = _last_evaluation(run)
        assert steps == 16
        assert json.loads((run / "config.json").read_text())["algo"] == ALGOS[i]
        (seed,) = config["seeds"]
        # the summary and the score reported to Tune are the run's last evaluation
        assert seed["score"] == score and seed["timesteps"] == steps
        assert trials[f"c{i}_s0"]["status"] == "completed"
        assert trials[f"c{i}_s0"]["timesteps"] == 16
        assert trials[f"c{i}_s0"]["agent_over_greedy"] == score
        assert seed["model"] == str(run) and config["iqm"] == score
        scores.append(score)
    selected = summary["selected"]
    best = scores.index(min(scores))
    assert selected["config"] == best and selected["all_seeds"]
    assert selected["settings"]["algo"] == ALGOS[best]
    assert selected["models"] == [str(out / "runs" / f"c{best}_s0")]
    policy = make_policy(f"dqn:{selected['models'][0]}")
    assert policy.path == Path(selected["models"][0]) / "best_model.pt"  # evaluations ran
    assert f"selected: c{best}" in (out / "summary.md").read_text()
    assert f"selected: c{best}" in capsys.readouterr().out


def test_a_value_sweep_refuses_a_ppo_key_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    for where in ("base", "grid"):
        data = {
            **VALUE_SWEEP,
            where: {**VALUE_SWEEP[where], "n_epochs": [1] if where == "grid" else 1},
        }
        bad.write_text(json.dumps(data))
        assert main(["sweep", str(bad), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert "unknown key 'n_epochs'" in err[0] and "expected a ValueConfig setting" in err[0]
    assert not (tmp_path / "o").exists()  # refused before any training


def test_an_unknown_learner_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**VALUE_SWEEP, "learner": "nope"}))
    assert main(["sweep", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "learner: expected one of 'ppo', 'value', got 'nope'" in err[0], err


def test_a_value_trial_resumes_its_checkpoint_restarts_without_one_and_skips_when_done(
    tmp_path,
):
    from growenv.harness.lifecycle import RunInterrupted
    from growenv.harness.sweep import _train_value, load_sweep
    from growenv.learners.value import ValueConfig, train_value_agent

    settings = {**load_sweep(VALUE_SWEEP).configs[0], "seed": 0}
    reported: list[int] = []

    def report(timesteps: int, result: dict[str, float]) -> None:
        reported.append(timesteps)

    def interrupt(timesteps: int, result: dict[str, float]) -> None:
        os.kill(os.getpid(), signal.SIGINT)

    def sessions(run: Path) -> list[tuple[str, int, int]]:
        data = json.loads((run / "config.json").read_text())["sessions"]
        return [(s["status"], s["start_timesteps"], s.get("end_timesteps")) for s in data]

    resumed = tmp_path / "resumed"  # stopped at its first evaluation, checkpoint.pt written
    with pytest.raises(RunInterrupted):
        train_value_agent(ValueConfig.from_json(settings), resumed, on_eval=interrupt)
    assert _train_value(settings, resumed, report) == 16 and reported == [16]
    assert sessions(resumed) == [("interrupted", 0, 8), ("completed", 8, 16)]
    assert _train_value(settings, resumed, report) == 16 and reported == [16]  # done: no training
    assert len(sessions(resumed)) == 2

    killed = tmp_path / "killed"  # killed mid-run: a config.json, no checkpoint.pt
    killed.mkdir()
    (killed / "config.json").write_text(json.dumps({"sessions": [{"status": "running"}]}))
    (killed / "progress.csv").write_text("stale\n")
    assert _train_value(settings, killed, report) == 16 and reported == [16, 8, 16]
    assert sessions(killed) == [("completed", 0, 16)]
    assert _last_evaluation(killed)[0] == 16
