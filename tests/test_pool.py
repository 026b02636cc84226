"""growenv.harness.pool: the same results on spawned workers as inline, and a Ctrl-C that
ends the running workers at once and keeps what finished."""

from __future__ import annotations

import operator
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from growenv.harness.lifecycle import EXIT_INTERRUPTED, RunInterrupted, run_main
from growenv.harness.pool import run_pool

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.mark.parametrize("workers", [1, 2])
def test_every_call_reaches_on_result_once_with_its_index(workers):
    calls = [(i, i + 3) for i in range(7)]
    seen: dict[int, int] = {}

    def on_result(i: int, value: int) -> None:
        assert i not in seen
        seen[i] = value

    run_pool(operator.mul, calls, workers, on_result)
    assert seen == {i: a * b for i, (a, b) in enumerate(calls)}


def test_ctrl_c_ends_running_workers_and_keeps_what_finished(tmp_path):
    log = tmp_path / "finished.txt"
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from growenv.harness.pool import run_pool

        def on_result(i, value):
            with Path({str(log)!r}).open("a") as f:
                f.write(f"{{i}}\\n")

        try:
            run_pool(time.sleep, [(0.0,), (120.0,), (120.0,), (120.0,)], 2, on_result)
        except KeyboardInterrupt:
            print("stopped", flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's job is
    )
    deadline = time.monotonic() + 120
    while not (log.is_file() and log.read_text()):  # the quick job finished
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    start = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the parent and its workers
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - start < 30  # not the 120 s the running jobs would take
    assert proc.returncode == 0 and out.strip() == "stopped", err
    assert "Traceback" not in err  # no trace from the parent or from its workers
    assert Path(log).read_text() == "0\n"


def test_run_main_turns_an_interruption_into_one_line_and_status_130(capsys):
    def interrupted():
        raise RunInterrupted("interrupted: 3 of 7 jobs finished, kept in\nOUT; resume")

    with pytest.raises(SystemExit) as exc:
        run_main(interrupted, "x.py")
    assert exc.value.code == EXIT_INTERRUPTED == 130
    assert (
        capsys.readouterr().err == "x.py: interrupted: 3 of 7 jobs finished, kept in OUT; resume\n"
    )
    assert run_main(lambda: {"a": 1}, "x.py") == {"a": 1}  # otherwise main's own result


@pytest.mark.slow
def test_an_experiment_script_stopped_by_ctrl_c_says_so_in_one_line_and_resumes(tmp_path):
    """rollout_noise.py with 2 workers, interrupted after its first stored episode: one line,
    status 130, nothing running after it, the episode kept; the same command finishes."""
    out = tmp_path / "out"
    script = str(EXPERIMENTS / "rollout_noise.py")
    cmd = [sys.executable, script, "--tasks", "1", "--streams", "1", "--out", str(out)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    store, deadline = out / "episodes.jsonl", time.monotonic() + 300
    while not (store.is_file() and store.read_text().count("\n") >= 1):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    expected = (
        r"rollout_noise\.py: interrupted: [12] of 3 jobs finished, kept in "
        + re.escape(str(store))
        + "; the same command resumes"
    )
    assert re.fullmatch(expected, lines[0]), lines[0]
    assert "Traceback" not in err
    kept = store.read_text().count("\n")
    assert kept >= 1
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert store.read_text().count("\n") == 3  # the kept episodes were not run again


def test_run_main_reports_bad_input_found_mid_run_in_one_line_with_status_2(capsys):
    from growenv.errors import UserError
    from growenv.harness.bench import run_bench

    with pytest.raises(SystemExit) as exc:
        run_main(lambda: run_bench(["teacher_student"], ["greedy"], [0], workers=0), "x.py")
    assert exc.value.code == 2
    assert capsys.readouterr().err == "x.py: error: workers: expected an int >= 1, got 0\n"

    def bug():
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):  # not the user's: its traceback stays
        run_main(bug, "x.py")
    assert issubclass(UserError, ValueError)  # callers catching ValueError still do
