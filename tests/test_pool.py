"""growenv.harness.pool: the same results on spawned workers as inline, and a Ctrl-C that
ends the running workers at once and keeps what finished."""

from __future__ import annotations

import operator
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from growenv.harness.pool import run_pool


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
