"""Keep optimizer state valid while parameters grow in place."""

from __future__ import annotations

import torch


def _pad_like(old: torch.Tensor, new_shape: torch.Size) -> torch.Tensor:
    padded = old.new_zeros(new_shape)
    padded[tuple(slice(0, s) for s in old.shape)] = old
    return padded


@torch.no_grad()
def grow_parameter(
    param: torch.nn.Parameter,
    new_data: torch.Tensor,
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Replace ``param``'s storage by ``new_data`` whose leading block holds the old values.

    The ``Parameter`` object is kept, so optimizers still reference it. Optimizer state
    tensors shaped like the old parameter (Adam's ``exp_avg``/``exp_avg_sq``, SGD's
    ``momentum_buffer``, ...) are zero-padded to the new shape: existing entries keep their
    moments, new entries start from zero. Scalar state (Adam's ``step``) is kept.
    """
    old_shape = param.shape
    if new_data.ndim != param.ndim or any(
        n < o for n, o in zip(new_data.shape, old_shape, strict=True)
    ):
        raise ValueError(
            f"new_data: expected a shape >= {tuple(old_shape)} in every dimension, "
            f"got {tuple(new_data.shape)}"
        )
    param.data = new_data
    param.grad = None
    if optimizer is None:
        return
    state = optimizer.state.get(param)
    if not state:
        return
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.shape == old_shape and value.ndim > 0:
            state[key] = _pad_like(value, new_data.shape)
