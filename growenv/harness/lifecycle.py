"""Runs that never lose work: interruption, atomic files, signal handling.

Shared by the bench (:mod:`~growenv.harness.bench`, :mod:`~growenv.harness.store`) and PPO
training (:mod:`~growenv.harness.ppo_training`): a run stopped by SIGINT or SIGTERM keeps
what it finished and raises :class:`RunInterrupted` (the CLI prints its message and exits
with status 130); files that a later run reads are written atomically (a temporary file
renamed over the target), so a SIGKILL never leaves a half-written one. :func:`run_main`
gives the experiment scripts the CLI's endings: one line for an interruption or bad input.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from growenv.errors import UserError

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "RunInterrupted",
    "atomic_path",
    "atomic_write_text",
    "report_ending",
    "run_main",
    "stop_signals",
]

EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shells' convention
EXIT_USAGE = 2  # bad input, as argparse exits


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by SIGINT or SIGTERM after saving what it finished.

    A :class:`KeyboardInterrupt` (code that does not know it stops as on Ctrl-C); ``str()``
    is one line saying what was kept and how to resume. ``path`` is the saved checkpoint or
    results directory.
    """

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "interrupted"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path``; renamed over ``path`` when the block succeeds.

    Write the file at the yielded path (any writer that takes a path: ``np.savez``,
    ``model.save``); on an error the temporary file is removed and ``path`` is untouched.
    The temporary name keeps ``path``'s suffix (writers that append one, like ``np.savez``,
    see it already there).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`); return ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


@contextmanager
def stop_signals(on_signal: Callable[[int], Any] | None = None) -> Iterator[dict[str, int]]:
    """Handle SIGINT and SIGTERM in the block; restore the previous handlers after it.

    Parameters
    ----------
    on_signal
        Called with the signal number on the first signal (e.g. to set a flag that a loop
        checks and stop at a clean point). ``None``: raise :class:`KeyboardInterrupt` at
        once (SIGTERM then stops the run as Ctrl-C does). A second signal always raises
        :class:`KeyboardInterrupt`.

    Yields
    ------
    dict
        ``{"signal": number}`` once a signal arrived (empty before).

    Off the main thread (where Python cannot install handlers) the block runs unchanged.
    """
    received: dict[str, int] = {}
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: Any) -> None:
        first = "signal" not in received
        received["signal"] = signum
        if on_signal is None or not first:
            raise KeyboardInterrupt
        on_signal(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def report_ending(err: UserError | KeyboardInterrupt, prog: str) -> int:
    """Print how a run of ``prog`` ended on one line of stderr and return its exit status:
    bad input found mid-run (:class:`~growenv.errors.UserError`) is ``prog: error:
    message``, status 2; an interruption (Ctrl-C, SIGTERM: a :class:`KeyboardInterrupt`,
    :class:`RunInterrupted` with what it kept) is ``prog: message``, status 130."""
    if isinstance(err, UserError):
        print(f"{prog}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{prog}: {' '.join(str(err).split()) or 'interrupted'}", file=sys.stderr)
    return EXIT_INTERRUPTED


def run_main(main: Callable[[], Any], prog: str) -> Any:
    """Run a script's ``main()`` and return what it returns, as the ``growenv`` command
    does: an interruption or bad input found mid-run ends it with :func:`report_ending`'s
    line and status (130 or 2). Any other exception keeps its traceback."""
    try:
        return main()
    except (UserError, KeyboardInterrupt) as err:
        raise SystemExit(report_ending(err, prog)) from None
