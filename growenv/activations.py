"""Activation functions: resolution from names or modules, and their slope at zero."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Activation = Callable[[torch.Tensor], torch.Tensor]

_NAMED: dict[str, Callable[[], nn.Module]] = {
    "selu": nn.SELU,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "softplus": nn.Softplus,
    "identity": nn.Identity,
}

# One-sided step at which sigma'(0+) is taken: small enough for smooth activations,
# on the positive side for kinked ones (ReLU, SELU), as the TINY paper uses sigma'(0+).
_SLOPE_EPS = 1e-7


def resolve_activation(activation: str | nn.Module) -> nn.Module:
    """Return an activation module from a name (``"selu"``) or an ``nn.Module``.

    Raises
    ------
    ValueError
        For an unknown name.
    TypeError
        For anything that is neither a string nor an ``nn.Module``.
    """
    if isinstance(activation, nn.Module):
        return activation
    if isinstance(activation, str):
        key = activation.lower()
        if key not in _NAMED:
            raise ValueError(
                f"activation: unknown name {activation!r}; expected one of "
                f"{sorted(_NAMED)} or a torch.nn.Module"
            )
        return _NAMED[key]()
    raise TypeError(
        f"activation: expected a name or a torch.nn.Module, got {type(activation).__name__}"
    )


def activation_name(activation: nn.Module) -> str:
    """Short lower-case name of an activation module (for tables and configs)."""
    for name, factory in _NAMED.items():
        if type(activation) is type(factory()):
            return name
    return type(activation).__name__


def value_and_slope_at_zero(activation: Activation) -> tuple[float, float]:
    """Return ``(sigma(0), sigma'(0+))`` of any elementwise activation, by autograd.

    The slope is the derivative at a tiny positive point, computed in float64, so any
    torch activation works (no table): 1.0507 for SELU, 1 for ReLU, 0.25 for sigmoid.
    """
    z0 = torch.zeros(1, dtype=torch.float64)
    value = float(activation(z0).item())
    z = torch.full((1,), _SLOPE_EPS, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(activation(z).sum(), z)
    return value, float(grad.item())
