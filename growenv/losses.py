"""Per-sample loss conventions used by the statistics, the amplitude search and training."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

PerSampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSS_NAMES = ("mse", "cross_entropy")


def mse_per_sample(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``l_i = ||f(x_i) - y_i||^2`` summed over outputs (no 1/2, no mean over outputs)."""
    return (output - target).pow(2).sum(-1)


def cross_entropy_per_sample(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits ``output`` (..., n, C) against class labels (n,)."""
    lead = output.shape[:-1]
    flat = output.reshape(-1, output.shape[-1])
    return F.cross_entropy(flat, target.expand(lead).reshape(-1), reduction="none").reshape(lead)


def resolve_loss(loss: str | PerSampleLoss) -> PerSampleLoss:
    """Return a per-sample loss function from ``"mse"``, ``"cross_entropy"`` or a callable.

    A callable must map ``(output (..., n, out), target)`` to per-sample losses ``(..., n)``.
    """
    if callable(loss):
        return loss
    if loss == "mse":
        return mse_per_sample
    if loss == "cross_entropy":
        return cross_entropy_per_sample
    raise ValueError(f"loss: expected one of {LOSS_NAMES} or a callable, got {loss!r}")


def prepare_target(
    loss: str | PerSampleLoss, y: torch.Tensor, n: int, out_features: int, name: str = "y"
) -> torch.Tensor:
    """Validate ``y`` for ``loss`` and return it in the shape the loss expects."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(y).__name__}")
    if y.shape[:1] != (n,):
        raise ValueError(
            f"{name}: expected {n} samples (first dimension), got shape {tuple(y.shape)}"
        )
    if loss == "mse":
        if y.ndim == 1 and out_features == 1:
            y = y.unsqueeze(1)
        if y.shape != (n, out_features):
            raise ValueError(
                f"{name}: expected shape ({n}, {out_features}) for loss='mse', got {tuple(y.shape)}"
            )
        if not y.is_floating_point():
            raise TypeError(
                f"{name}: expected a floating-point tensor for loss='mse', got {y.dtype}"
            )
    elif loss == "cross_entropy":
        if y.shape != (n,) or y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(
                f"{name}: expected integer class labels of shape ({n},) for "
                f"loss='cross_entropy', got shape {tuple(y.shape)} and dtype {y.dtype}"
            )
        y = y.long()
    return y
