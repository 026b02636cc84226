"""The ``growenv`` command line: one vocabulary across grow/bench/train, one-line errors.

Most tests call :func:`growenv.cli.main` in-process (fast); two run the real console entry
point in a subprocess for the exit codes a shell sees.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import growenv.cli.bench as cli_bench
import growenv.cli.grow as cli_grow
import growenv.cli.train as cli_train
from growenv.cli import build_parser, main
from growenv.cli.options import MAX_SEEDS, format_seeds, parse_seeds
from growenv.cli.train import vec_kind
from growenv.env.config import TASK_CHOICES
from growenv.errors import UserError
from growenv.harness.lifecycle import RunInterrupted
from growenv.harness.ppo_training import PPOConfig

TINY = {"train_steps": 2, "max_steps": 2, "task_kwargs": {"n_train": 64, "n_val": 32}}
COMMANDS = ("grow", "bench", "train")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------- vocabulary


def test_every_command_shares_the_vocabulary():
    # sweep takes its env and PPO settings and its seeds from its CONFIG file: it shares the
    # run options (--threads, --debug, --no-progress) and bench's --address
    shared = {
        "--task",
        "--seed",
        "--steps",
        "--neurons",
        "--train-steps",
        "--device",
        "--env-kwargs",
        "--threads",
        "--debug",
    }
    for name, sub in _subparsers().items():
        options = {s for a in sub._actions for s in a.option_strings}
        if name == "sweep":
            assert {"--threads", "--debug", "--no-progress", "--address", "--out"} <= options
            continue
        assert shared <= options, (name, shared - options)
        for action in sub._actions:  # every visible option says what it is
            assert action.help, (name, action.option_strings)
        text = " ".join(sub.format_help().split())
        assert "teacher_student_distribution" in text, name
        assert "default: 1)" in text  # --threads; defaults are shown
    bench, train = _subparsers()["bench"], _subparsers()["train"]
    vec = {
        name: next(a for a in sub._actions if a.dest == "vec")
        for name, sub in (("bench", bench), ("train", train))
    }
    assert vec["bench"].choices == ("auto", "lockstep", "single")
    assert set(vec["bench"].choices) <= set(vec["train"].choices)
    assert vec["train"].metavar == "{auto,lockstep,single}"  # subproc/dummy: hidden, old


def test_help_shows_defaults(capsys):
    assert main(["bench", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 0-9)" in out and "(default: auto)" in out and "default: 100)" in out
    assert main(["train", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: teacher_student_distribution)" in out and "default: 25)" in out


def test_grow_env_kwargs_alone_set_the_settings(capsys):
    # used to fail: "got multiple values for keyword argument 'train_steps'"
    argv = ["grow", "--env-kwargs", json.dumps(TINY)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "final:" in out and "\n   2  " in out  # two decisions: max_steps from the JSON


def test_grow_a_dag_from_the_empty_graph(capsys):
    # used to fail: 'GrowingDAG' object has no attribute 'layer_sizes'
    argv = ["grow", "--env-kwargs", json.dumps({**TINY, "net": "dag"})]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "no hidden node, 0 edges" in out and "final:" in out and "GrowingDAG" in out


def test_flag_and_env_kwargs_contradicting_is_one_line(capsys):
    argv = ["grow", "--train-steps", "5", "--env-kwargs", json.dumps(TINY)]
    assert main(argv) == 2
    line = _error_line(capsys)
    assert "--train-steps" in line and "train_steps=2" in line
    # the same value both ways is fine
    argv = ["grow", "--train-steps", "2", "--steps", "1", "--env-kwargs", json.dumps(TINY)]
    assert main(argv) == 2  # --steps 1 contradicts max_steps 2
    assert "--steps" in _error_line(capsys)


def test_old_spellings_still_work(monkeypatch, capsys):
    seen = {}

    def fake_run_bench(tasks, policies, seeds, env_kwargs, *args, **kwargs):
        seen.update(tasks=tasks, policies=policies, seeds=seeds, env_kwargs=env_kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_bench, "run_bench", fake_run_bench)
    argv = ["bench", "--tasks", "multi_sin", "--policies", "greedy,random", "--seeds", "3"]
    assert main(argv) == 130
    assert seen == {
        "tasks": ["multi_sin"],
        "policies": ["greedy", "random"],
        "seeds": [0, 1, 2],
        "env_kwargs": {},
    }
    argv = ["bench", "--task", "digits,multi_sin", "--policy", "random", "--seed", "4-6"]
    argv += ["--device", "cpu", "--steps", "3"]
    assert main(argv) == 130
    assert seen["tasks"] == ["digits", "multi_sin"] and seen["seeds"] == [4, 5, 6]
    assert seen["env_kwargs"] == {"device": "cpu", "max_steps": 3}


def test_threads_and_devices_reach_train(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake_train(config, out, **kwargs):
        seen.update(config=config, out=out, threads=torch.get_num_threads(), **kwargs)
        return out

    monkeypatch.setattr(cli_train, "train", fake_train)
    before = torch.get_num_threads()
    try:
        argv = ["train", "--out", str(tmp_path / "run"), "--task", "multi_sin", "--steps", "3"]
        argv += ["--threads", "2", "--no-progress", "--device", "cpu"]
        assert main(argv) == 0
    finally:
        torch.set_num_threads(before)
    config = seen["config"]
    assert seen["threads"] == 2 and config.env_kwargs["threads"] == 2  # process and envs
    assert seen["progress_bar"] is False
    assert config.env_kwargs["task"] == "multi_sin" and config.env_kwargs["max_steps"] == 3
    assert config.env_kwargs["train_steps"] == 25  # train's own default settings
    assert config.env_kwargs["device"] == "cpu" and config.device == "cpu"
    assert config.vec == "lockstep"  # auto on MLPs
    assert config.checkpoint_every == PPOConfig.checkpoint_every and seen["resume"] is None

    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    with zipfile.ZipFile(run / "model.zip", "w") as archive:  # a complete (fake) model
        archive.writestr("data", "{}")
        archive.writestr("policy.pth", b"")
    argv = ["train", "--out", str(run), "--resume", "--checkpoint-every", "64"]
    assert main(argv) == 0
    assert seen["resume"] == str(run) and seen["config"].checkpoint_every == 64
    assert main(["train", "--out", str(tmp_path / "new"), "--resume", str(run)]) == 0
    assert seen["resume"] == str(run) and seen["out"] == str(tmp_path / "new")
    assert main(["train", "--out", str(run), "--resume", "--force"]) == 2
    assert "--resume: expected --resume (continue a run) or --force" in _error_line(capsys)
    assert main(["train", "--out", str(tmp_path / "empty"), "--resume"]) == 2
    assert "--resume: expected a run directory" in _error_line(capsys)


def test_vec_has_one_meaning():
    mlp, conv = {}, {"net": "conv"}
    assert vec_kind("auto", False, mlp) == "lockstep"
    assert vec_kind("auto", False, conv) == "dummy"
    assert vec_kind("single", False, mlp) == "dummy"
    assert vec_kind("single", True, mlp) == "subproc"
    assert vec_kind("subproc", False, mlp) == "subproc"  # train's old values still work
    with pytest.raises(UserError, match="--subproc"):
        vec_kind("lockstep", True, mlp)
    with pytest.raises(UserError, match="--vec"):
        vec_kind("lockstep", False, conv)


def test_seed_specs():
    assert parse_seeds("3") == [3]
    assert parse_seeds("3", count=True) == [0, 1, 2]
    assert parse_seeds("2-4") == [2, 3, 4]
    assert parse_seeds("5, 1") == [5, 1]
    for bad in ("-1", "x", "4-2", "", "1,-2"):
        with pytest.raises(UserError, match="--seed: expected"):
            parse_seeds(bad)
    with pytest.raises(UserError, match=f"at most {MAX_SEEDS}") as err:
        parse_seeds("0-99999999999")
    assert len(str(err.value)) < 200
    assert format_seeds(range(5, 100)) == "5-99 (95 seeds)"


# --------------------------------------------------------------------------- errors


def _truncated_zip(tmp_path):
    path = tmp_path / "agent.zip"
    path.write_bytes(b"PK\x03\x04" + b"\0" * 40)  # the start of a zip, cut off
    return path


BAD_INPUTS = [
    (["bench", "--tasks", "foo"], "--task: expected one of"),
    (["bench", "--task", "teacher_student,foo"], "--task: expected one of"),
    (["grow", "--task", "foo"], "--task: expected one of"),
    (["train", "--out", "{tmp}/r", "--task", "foo"], "--task: expected one of"),
    (["bench", "--env-kwargs", '{"foo": 1}'], "--env-kwargs: unknown key 'foo'"),
    (["grow", "--env-kwargs", '{"foo": 1}'], "--env-kwargs: unknown key 'foo'"),
    (["train", "--out", "{tmp}/r", "--env-kwargs", '{"foo": 1}'], "--env-kwargs: unknown key"),
    (["bench", "--env-kwargs", "{bad json"], "--env-kwargs: expected a JSON object"),
    (["bench", "--env-kwargs", "[1]"], "--env-kwargs: expected a JSON object"),
    (["bench", "--env-kwargs", '{"max_steps": 0}'], "--env-kwargs: max_steps: expected"),
    (["bench", "--env-kwargs", '{"task": "digits"}'], "--env-kwargs: expected no 'task'"),
    (["bench", "--policy", "nope"], "--policy: unknown policy 'nope'"),
    (["bench", "--policy", "ppo:{tmp}/missing"], "does not exist"),
    (["bench", "--policy", "ppo:{zip}"], "truncated"),
    (["grow", "--policy", "ppo:{zip}"], "truncated"),
    (["train", "--out", "{tmp}/r", "--resume", "{tmp}/missing.zip"], "--resume: expected"),
    (["train", "--out", "{tmp}/r", "--resume", "{zip}"], "truncated or corrupt"),
    (["train", "--out", "{tmp}/r", "--init-from", "{zip}"], "--init-from: expected a complete"),
    (["train", "--out", "{tmp}/r", "--checkpoint-every", "0"], "--checkpoint-every: expected"),
    (["train", "--out", "{zip}"], "--out: expected a run directory, but"),
    (["bench", "--out", "{zip}"], "--out"),
    (["grow", "--device", "gpu0"], "--device: expected a torch device"),
    (["bench", "--device", "gpu0"], "--device: expected a torch device"),
    (["train", "--out", "{tmp}/r", "--device", "gpu0"], "--device: expected a torch device"),
    (["train", "--out", "{tmp}/r", "--policy-device", "gpu0"], "--policy-device: expected"),
    (["grow", "--env-kwargs", '{"device": "gpu0"}'], "--env-kwargs device: expected"),
    (["grow", "--seed", "-1"], "--seed: expected an int >= 0"),
    (["bench", "--seed", "-1"], "--seed: expected"),
    (["train", "--out", "{tmp}/r", "--seed", "-1"], "--seed: expected an int >= 0"),
    (["grow", "--steps", "0"], "--steps: expected an int >= 1"),
    (["bench", "--workers", "0"], "--workers: expected an int >= 1"),
    (["train", "--out", "{tmp}/r", "--timesteps", "x"], "--timesteps: expected an int >= 1"),
    (["grow", "--threads", "0"], "--threads: expected an int >= 1"),
    (["bench", "--seeds", "100000"], "--seeds: expected at most"),
    (["bench", "--seed", "1", "--seeds", "2"], "--seed: expected --seed or"),
    (["bench", "--task", "digits", "--oracle"], "--oracle: expected a teacher-student task"),
    (["bench", "--vec", "lockstep", "--policy", "greedy,bic"], "--vec: expected auto or single"),
    (
        ["bench", "--vec", "lockstep", "--env-kwargs", '{"augment": true}'],
        "--vec: expected auto or single here: augment: not implemented in the lockstep env",
    ),
    (
        ["bench", "--vec", "lockstep", "--env-kwargs", '{"optimizer": "sgd"}'],
        "--vec: expected auto or single here: optimizer: the lockstep env implements 'adam'",
    ),
    (["bench", "--nope"], "unrecognized arguments: --nope"),
    (["grow", "--vec", "auto"], "unrecognized arguments"),
    (["train", "--out", "{tmp}/r", "--vec", "lockstep", "--subproc"], "--subproc: expected"),
    (
        ["grow", "--task", "cifar10", "--env-kwargs", '{"task_kwargs": {"data_dir": "{tmp}/no"}}'],
        "CIFAR-10",
    ),
]


@pytest.mark.parametrize(("argv", "message"), BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys):
    zip_path = _truncated_zip(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{zip}", str(zip_path)) for a in argv]
    assert main(argv) == 2
    line = _error_line(capsys)
    assert line.startswith(f"growenv {argv[0]}: error: ") and message in line, line
    assert len(line) < 600
    assert not (tmp_path / "r").exists()  # nothing started


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_cuda_is_one_line(tmp_path, capsys):
    for argv in (["grow"], ["bench"], ["train", "--out", str(tmp_path / "r")]):
        assert main([*argv, "--device", "cuda"]) == 2
        line = _error_line(capsys)
        assert "--device: expected an available device" in line and "CUDA" in line


def test_train_into_an_existing_run_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.zip").write_bytes(b"")
    assert main(["train", "--out", str(run)]) == 2
    line = _error_line(capsys)
    assert line.startswith("growenv train: error: --out:") and "--force" in line


def test_interrupt_is_one_line_and_exit_130(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_grow, "GrowthEnv", interrupted)
    assert main(["grow", "--env-kwargs", json.dumps(TINY)]) == 130
    assert _error_line(capsys) == "growenv grow: interrupted"

    def stopped(*args, **kwargs):  # the harness's interruption says what it kept
        raise RunInterrupted("bench interrupted: 3 of 6 jobs stored; resume with --resume")

    monkeypatch.setattr(cli_bench, "run_bench", stopped)
    assert main(["bench"]) == 130
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == "growenv bench: bench interrupted: 3 of 6 jobs stored; resume with --resume"


def test_a_bug_keeps_its_traceback_and_debug_raises(monkeypatch, capsys):
    def bug(*args, **kwargs):
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(cli_bench, "run_bench", bug)
    assert main(["bench", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "an internal invariant broke" in err and "--debug" in err
    with pytest.raises(ValueError, match="invariant"):
        main(["bench", "--debug"])
    with pytest.raises(UserError, match="--task"):
        main(["--debug", "bench", "--task", "foo"])  # the top-level spelling too


def test_bench_without_out_says_nothing_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["bench", "--policy", "greedy", "--seed", "0", "--no-progress"]
    argv += ["--env-kwargs", json.dumps(TINY)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "no --out" in captured.err and "| greedy | 1 |" in captured.out
    assert list(tmp_path.iterdir()) == []


def test_tasks_in_help_come_from_the_env():
    text = _subparsers()["grow"].format_help()
    for task in TASK_CHOICES:
        assert task in text


# --------------------------------------------------------------------------- real processes


def _run(*argv: str) -> subprocess.CompletedProcess:
    code = "import sys; from growenv.cli import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120
    )


def test_exit_status_of_a_real_process(tmp_path):
    bad = _run("bench", "--tasks", "foo")
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "--task: expected" in bad.stderr
    usage = _run("grow", "--seed", "-1")
    assert usage.returncode == 2 and usage.stderr.strip().count("\n") == 0
    assert _run("train", "--help").returncode == 0


def test_bench_resume_finishes_a_bench(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["bench", "--policy", "greedy", "--no-progress", "--out", str(out)]
    argv += ["--env-kwargs", json.dumps(TINY)]
    assert main([*argv, "--seed", "0"]) == 0
    assert main([*argv, "--seed", "0-1"]) == 2  # not empty: --resume or --force
    assert "--resume" in _error_line(capsys)
    assert main([*argv, "--seed", "0-1", "--resume"]) == 0
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted({r["seed"] for r in rows}) == ["0", "1"]
    assert len(rows) == 2 * 3  # each seed once: reset + 2 steps
    for bad, message in (
        (["--resume", "--force"], "--resume: expected --resume (finish a bench) or --force"),
    ):
        assert main([*argv, *bad]) == 2
        assert message in _error_line(capsys)
    assert main(["bench", "--resume"]) == 2
    assert "--resume: expected --out" in _error_line(capsys)
    other = ["--env-kwargs", json.dumps({**TINY, "train_steps": 3})]
    assert main([*argv[:-2], *other, "--seed", "0-2", "--resume"]) == 2
    line = _error_line(capsys)  # the stored episodes were run with train_steps=2
    assert "holds episodes run with other env_kwargs" in line and "train_steps" in line


def _documented_commands() -> list[list[str]]:
    """Every ``growenv grow|bench|train|sweep ...`` command of the README's and docs' bash blocks
    (continuations joined, comments dropped)."""
    root = Path(__file__).resolve().parents[1]
    commands = []
    for page in [root / "README.md", *sorted((root / "docs").rglob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", text, flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                if words[:1] == ["growenv"] and words[1:2] in (
                    ["grow"],
                    ["bench"],
                    ["train"],
                    ["sweep"],
                ):
                    commands.append(words[1:])
    return commands


def test_documented_commands_parse():
    commands = _documented_commands()
    assert len(commands) >= 4
    parser = build_parser()
    for argv in commands:
        args = parser.parse_args(argv)  # raises SystemExit on an unknown option
        assert args.func is not None


def test_agent_for_other_max_sites_is_one_line_before_any_work(monkeypatch, tmp_path, capsys):
    from types import SimpleNamespace

    import growenv.cli.options as options
    from growenv.env.features import observation_size

    agent = tmp_path / "agent.zip"
    with zipfile.ZipFile(agent, "w") as archive:
        archive.writestr("data", "{}")
        archive.writestr("policy.pth", b"")
    space = SimpleNamespace(shape=(observation_size(6),))  # trained with max_sites=6
    fake = SimpleNamespace(model=SimpleNamespace(observation_space=space), name="ppo")
    monkeypatch.setattr(options, "make_policy", lambda spec: fake)
    for command in ("grow", "bench"):
        assert main([command, "--policy", f"ppo:{agent}"]) == 2
        line = _error_line(capsys)
        assert f"--policy ppo:{agent}: max_sites: expected 6" in line and "got 4" in line


def test_bad_input_found_mid_run_is_still_one_line(capsys):
    # a diverging network is found by the episode, not before: still the user's error
    settings = {**TINY, "lr": 1e6, "train_steps": 5}
    argv = ["bench", "--policy", "greedy", "--seed", "0", "--vec", "single", "--no-progress"]
    assert main([*argv, "--env-kwargs", json.dumps(settings)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert err[-1].startswith("growenv bench: error: bench job task=teacher_student")
    assert "lower lr" in err[-1]


def test_resume_keeps_the_runs_settings_unless_given(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(cli_train, "train", lambda config, out, **kw: seen.update(config=config))
    run = tmp_path / "run"
    run.mkdir()
    with zipfile.ZipFile(run / "model.zip", "w") as archive:
        archive.writestr("data", "{}")
        archive.writestr("policy.pth", b"")
    first = PPOConfig(
        env_kwargs={**TINY, "task": "multi_sin", "max_params": 900},
        n_envs=4,
        vec="dummy",
        seed=3,
        checkpoint_every=64,
    )
    sessions = [{"start_timesteps": 0, "end_timesteps": 128, "status": "interrupted"}]
    (run / "config.json").write_text(json.dumps({**first.to_json(), "sessions": sessions}))
    assert main(["train", "--out", str(run), "--resume", "--timesteps", "512"]) == 0
    config = seen["config"]
    assert config.env_kwargs == first.env_kwargs and config.total_timesteps == 512
    assert (config.n_envs, config.vec, config.seed, config.checkpoint_every) == (4, "dummy", 3, 64)
    argv = ["train", "--out", str(run), "--resume", "--n-envs", "2", "--steps", "3"]
    assert main(argv) == 0
    config = seen["config"]
    assert config.n_envs == 2 and config.env_kwargs["max_steps"] == 3
    assert config.env_kwargs["max_params"] == 900 and config.total_timesteps == 60_000
