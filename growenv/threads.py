"""Thread control for small factorisations on the CPU."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


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
