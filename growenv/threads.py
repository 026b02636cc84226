"""Thread control for small factorisations on the CPU."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


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
