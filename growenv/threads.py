"""Thread control: torch's CPU thread count, chosen on purpose, and small factorisations.

growenv's nets are tiny (tens to hundreds of neurons): their matmuls gain nothing from
several threads, and on shared cores the waiting threads are costly. On the loaded 2-core CI
box ``growenv train --timesteps 1024 --n-envs 16`` did not finish in 300 s with torch's
default 2 threads and took 11 s with one. So growenv sets threads on purpose:

* the CLIs (``grow``, ``bench``, ``train``) call :func:`set_threads` once (``--threads N``,
  default 1);
* :class:`~growenv.env.growth_env.GrowthEnv` and the lockstep env run their own work under
  :func:`using_threads` ``(config.threads)`` (default 1; ``threads=None`` leaves torch's
  setting alone), restoring the caller's count afterwards;
* a forked child (Gymnasium's async vector env, multiprocessing's ``fork``) drops
  :func:`parallel_map`'s pool and runs torch on one thread (``os.register_at_fork``): the
  parent's threads do not exist there, and waiting on them hung forever.

Override with ``set_threads(n)`` (or ``torch.set_num_threads(n)``) for your own work, and
with the env's ``threads`` argument for the env's.
"""

from __future__ import annotations

import contextlib
import numbers
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_THREADS = 1  # the CLIs' and the env's default: tiny nets, shared cores


def set_threads(threads: int | None) -> int:
    """Set torch's CPU (intra-op) thread count for this process.

    Parameters
    ----------
    threads
        Threads for torch's CPU kernels (``>= 1``), or ``None`` to leave torch's setting
        alone.

    Returns
    -------
    int
        The thread count before the call (to restore it with ``set_threads(before)``).

    Raises
    ------
    ValueError
        ``"threads: expected an int >= 1 or None, got ..."``.
    """
    # the check of growenv.validation.integer, inline: the TINY maths imports this module,
    # and nothing above it
    if threads is not None and (
        not isinstance(threads, numbers.Integral) or isinstance(threads, bool) or threads < 1
    ):
        raise ValueError(f"threads: expected an int >= 1 or None, got {threads!r}")
    before = torch.get_num_threads()
    if threads is not None and threads != before:
        torch.set_num_threads(threads)
    return before


@contextlib.contextmanager
def using_threads(threads: int | None) -> Iterator[None]:
    """Run the block with torch on ``threads`` CPU threads (``None``: as it is), restoring
    the caller's count afterwards (see :func:`set_threads`)."""
    before = set_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@contextlib.contextmanager
def single_threaded(device: torch.device | str = "cpu") -> Iterator[None]:
    """Run small factorisations on one CPU thread (restored afterwards; no-op off the CPU).

    The ``eigh``/``svd`` of a few hundred rows gain nothing from threads, and with MKL on
    shared cores the waiting threads are costly: a batched ``eigh`` of five 146 x 146
    matrices took 10 ms on one thread and 6.2 s on two, on the 2-core CPU under load.
    """
    before = torch.get_num_threads()
    if before == 1 or torch.device(device).type != "cpu":
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0


def _after_fork_in_child() -> None:
    """Make a forked child's threads safe (registered with ``os.register_at_fork``).

    The parent's threads do not exist in the child: submitting to :func:`parallel_map`'s
    executor would wait forever, so the pool is dropped (the child builds its own when it
    needs one); and torch's OpenMP pool is not fork-safe either: a child running torch on
    more than one thread after the parent did waits forever (Gymnasium's async vector env
    hung at 0 % CPU). So the child's torch runs on one thread; raise it there only with a
    ``spawn`` or ``forkserver`` start method, not after a fork.
    """
    global _POOL, _POOL_SIZE
    _POOL, _POOL_SIZE = None, 0
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


os.register_at_fork(after_in_child=_after_fork_in_child)


def cpu_workers(device: torch.device | str = "cpu") -> int:
    """Threads available for :func:`parallel_map`: torch's thread count on the CPU, else 1."""
    return torch.get_num_threads() if torch.device(device).type == "cpu" else 1


def parallel_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    """``[fn(x) for x in items]`` on up to ``workers`` threads (the caller's included), each
    running torch on one thread; items are dealt round-robin, results come back in order
    (sequential for ``workers <= 1``).

    For independent small factorisations (``eigh``, ``svd`` of a few hundred rows): they do
    not use threads well inside one call, so on two cores two of them side by side take
    about the time of one.
    """
    items = list(items)
    workers = min(workers, len(items))
    if workers <= 1:
        return [fn(x) for x in items]
    global _POOL, _POOL_SIZE
    if _POOL is None or _POOL_SIZE < workers - 1:
        _POOL = ThreadPoolExecutor(max_workers=workers - 1, thread_name_prefix="growenv")
        _POOL_SIZE = workers - 1

    def run(chunk: list[T]) -> list[R]:
        torch.set_num_threads(1)  # this thread's OpenMP and MKL: LAPACK runs on it alone
        return [fn(x) for x in chunk]

    chunks = [items[k::workers] for k in range(workers)]
    before = torch.get_num_threads()
    try:
        futures = [_POOL.submit(run, chunk) for chunk in chunks[1:]]
        done = [run(chunks[0])] + [f.result() for f in futures]
    finally:
        torch.set_num_threads(before)
    out: list[R] = [None] * len(items)  # type: ignore[list-item]
    for k, results in enumerate(done):
        out[k::workers] = results
    return out
