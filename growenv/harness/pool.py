"""Jobs on local worker processes that stop cleanly on Ctrl-C.

Shared by the bench (:mod:`~growenv.harness.bench`) and the experiment scripts: workers are
*spawned* (a fork after torch has started its thread pools can deadlock), run one torch
thread each and ignore SIGINT (Ctrl-C reaches the whole process group; the parent stops
them), and on SIGINT or SIGTERM the parent cancels the queued jobs, ends the running ones
and raises :class:`KeyboardInterrupt`. What ``on_result`` received before stays with the
caller, so a run that stores each result as it arrives loses only the jobs that were
running.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from growenv.harness.lifecycle import stop_signals
from growenv.threads import using_threads

__all__ = ["run_pool"]


def init_worker() -> None:
    """A worker's set-up: one torch thread, SIGINT ignored (the parent stops the pool)."""
    import signal

    import torch

    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Stop a pool at once: cancel queued jobs and end the running ones (their results are
    not wanted)."""
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.terminate()  # no public API ends running workers
    pool.shutdown(wait=False, cancel_futures=True)


def run_pool(
    fn: Callable[..., Any],
    calls: Sequence[Sequence[Any]],
    workers: int,
    on_result: Callable[[int, Any], None],
) -> None:
    """Run ``fn(*calls[i])`` for every ``i``, on ``workers`` spawned processes (in this
    process, with one torch thread, when ``workers`` is 1), calling ``on_result(i, result)``
    here as each finishes (in any order). ``fn`` and the calls must pickle, and a script
    that runs this with ``workers > 1`` needs the ``if __name__ == "__main__":`` guard (the
    workers import it).

    Raises
    ------
    KeyboardInterrupt
        On SIGINT or SIGTERM, after the queued jobs are cancelled and the running ones
        ended; ``on_result`` has seen every job that finished before.
    """
    with stop_signals():
        if workers <= 1:
            with using_threads(1):
                for i, call in enumerate(calls):
                    on_result(i, fn(*call))
            return
        ctx = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=init_worker)
        try:
            futures = {pool.submit(fn, *call): i for i, call in enumerate(calls)}
            for future in as_completed(futures):
                on_result(futures[future], future.result())
        except BaseException:
            stop_pool(pool)
            raise
        pool.shutdown()
