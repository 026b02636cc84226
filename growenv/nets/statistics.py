"""Statistics containers and data batching shared by every family's statistics pass."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from growenv.errors import UserError
from growenv.validation import finite_values


@dataclass
class GrowthStatistics:
    """Sample means of the TINY statistics (see module docstring).

    Lists are indexed by layer (``S``, ``M``, ``vv``) or by site (``C``, ``P``).
    """

    S: list[torch.Tensor]
    M: list[torch.Tensor]
    vv: list[torch.Tensor]
    C: list[torch.Tensor]
    P: list[torch.Tensor]
    loss: torch.Tensor
    num_samples: int

    @property
    def num_layers(self) -> int:
        return len(self.S)


def iterate_batches(
    x: torch.Tensor | Iterable, y: torch.Tensor | None, batch_size: int | None
) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` batches from tensors (split by ``batch_size``) or an iterable."""
    if isinstance(x, torch.Tensor):
        if y is None:
            raise ValueError("y: targets are required when x is a tensor")
        if batch_size is None:
            yield x, y
            return
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive int or None, got {batch_size!r}")
        for start in range(0, x.shape[0], batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]
        return
    if y is not None:
        raise ValueError("y: must be None when x is an iterable of (x, y) batches")
    for item in x:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise TypeError("x: an iterable of data must yield (x, y) pairs")
        yield item[0], item[1]


def non_finite_error(net: torch.nn.Module, x: object, y: object) -> UserError:
    """The error of a statistics pass whose sums hold NaN or inf, naming the culprit.

    Called on that (rare) path only: the net's weights (a diverged net), then the data
    (``x``, ``y`` when they are tensors: the first bad entry), then the net's outputs on
    finite data (weights so large that the forward pass overflows).
    """
    if not all(bool(torch.isfinite(p).all()) for p in net.parameters()):
        return UserError(
            "net: expected finite weights, got NaN or inf in the net's parameters "
            "(training diverged: lower lr)"
        )
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
        return UserError(
            "x/y: expected finite data and a net with finite outputs, got NaN or inf in the "
            "statistics (check the batches for NaN/inf; with finite data, training diverged: "
            "lower lr)"
        )
    try:
        finite_values("x", x)
        finite_values("y", y)
    except ValueError as err:
        return err
    largest = max((float(p.detach().abs().max()) for p in net.parameters() if p.numel()), default=0)
    return UserError(
        "net: expected finite outputs on finite data, got NaN or inf (the weights are finite, "
        f"the largest {largest:.3g}, but the loss or its gradients overflow: training diverged, "
        "lower lr)"
    )
