"""Growth candidates of any family: K new units at one site (plus the paired update of the
next layer), their shape check, and growth in place.

A family's candidates are :class:`GrowthCandidate` or a subclass; the weights are shaped as
``K`` rows of layer ``site``'s weight (incoming) and ``K`` columns of layer ``site + 1``'s
(outgoing), so the check and the in-place growth read the net's weights only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class GrowthCandidate:
    """K new units at site ``site``, plus the best update of layer ``site + 1``.

    Applied with amplitude ``gamma``: new units are scaled by ``sqrt(gamma)`` on each side
    and the update by ``gamma``. For activations with ``sigma(0) != 0`` the next layer's bias
    is shifted by ``-sqrt(gamma) sigma(0) sum_k omega_k`` so that ``gamma -> 0`` leaves the
    function unchanged.
    """

    site: int
    in_weight: torch.Tensor  # (K, *shape of one row of layer site's weight)
    in_bias: torch.Tensor  # (K,)
    out_weight: torch.Tensor  # (out of layer site + 1, K, *kernel)
    update_weight: torch.Tensor | None  # shaped as layer site + 1's weight, or None
    update_bias: torch.Tensor | None  # (out,)
    eigenvalues: torch.Tensor  # (K,) lambda_k of the chosen units
    method: str = "tiny"

    @property
    def num_neurons(self) -> int:
        return self.in_weight.shape[0]

    def added_parameters(self) -> int:
        """Parameters this candidate adds to the network (incoming, biases, outgoing)."""
        k = self.num_neurons
        return k * (math.prod(self.in_weight.shape[1:]) + 1) + self.out_weight.numel()


def check_candidate(net, candidate: GrowthCandidate) -> int:
    """Return the candidate's site, or raise if its shapes do not fit the net."""
    site = net.check_site(candidate.site)
    w_in, w_out = net.weights[site], net.weights[site + 1]
    k = candidate.num_neurons
    expected_in = (k, *w_in.shape[1:])
    expected_out = (w_out.shape[0], k, *w_out.shape[2:])
    if (
        tuple(candidate.in_weight.shape) != expected_in
        or tuple(candidate.out_weight.shape) != expected_out
    ):
        raise ValueError(
            f"candidate: shapes {tuple(candidate.in_weight.shape)} / "
            f"{tuple(candidate.out_weight.shape)} do not fit site {site} of a net with layer "
            f"sizes {net.layer_sizes} (expected {expected_in} / {expected_out}; was the net "
            "grown since the candidate was computed?)"
        )
    if candidate.update_weight is not None and candidate.update_weight.shape != w_out.shape:
        raise ValueError(
            f"candidate.update_weight: expected shape {tuple(w_out.shape)}, "
            f"got {tuple(candidate.update_weight.shape)}"
        )
    return site


def as_gammas(gamma: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``gamma`` (a float or tensor) as a 1-D tensor in ``like``'s dtype and device."""
    g = torch.as_tensor(gamma, dtype=like.dtype, device=like.device)
    return g.reshape(-1)


@torch.no_grad()
def apply_candidate(
    net,
    candidate: GrowthCandidate,
    gamma: float | torch.Tensor = 1.0,
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Apply ``candidate`` to ``net`` (any :class:`~growenv.nets.base.GrowingNet`) in place.

    The update of layer ``site + 1`` is added with ``gamma``, the new units with
    ``sqrt(gamma)`` on each side (and the bias shift for ``sigma(0) != 0``). Optimizer state
    of the grown parameters is kept (zero-padded for the new entries).
    """
    site = check_candidate(net, candidate)
    w_out, b_out = net.weights[site + 1], net.biases[site + 1]
    g = torch.as_tensor(gamma, dtype=net.dtype, device=net.device).reshape(())
    root = g.clamp(min=0).sqrt()
    omega = candidate.out_weight.to(w_out)
    if candidate.update_weight is not None:
        w_out.add_(g * candidate.update_weight.to(w_out))
        b_out.add_(g * candidate.update_bias.to(b_out))
    if net.sigma0 != 0.0:
        # per output: sum over the new units (and, for conv kernels, their taps)
        b_out.sub_(root * net.sigma0 * omega.flatten(1).sum(1))
    net.grow(
        site,
        root * candidate.in_weight.to(w_out),
        root * candidate.in_bias.to(w_out),
        root * omega,
        optimizer=optimizer,
    )
