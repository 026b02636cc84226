"""MLP growth: preview, amplitude search and growth of a candidate at a hidden state."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from growenv.amplitude import AmplitudeResult, best_amplitude, search_setup
from growenv.losses import PerSampleLoss
from growenv.nets.candidate import GrowthCandidate, apply_candidate, as_gammas, check_candidate

__all__ = [
    "GrowthCandidate",
    "mlp_amplitude_search",
    "mlp_apply_growth",
    "mlp_extended_forward",
    "next_preactivation",
]


def next_preactivation(
    net, candidate: GrowthCandidate, h_in: torch.Tensor, gammas: torch.Tensor
) -> torch.Tensor:
    """Pre-activation of layer ``site + 1`` with the candidate applied at each amplitude.

    ``h_in`` is the input of layer ``site`` (n, d); returns (G, n, out) for G amplitudes.
    """
    site = candidate.site
    w_in, b_in = net.weights[site], net.biases[site]
    w_out, b_out = net.weights[site + 1], net.biases[site + 1]
    hidden = net.activation(F.linear(h_in, w_in, b_in))
    base = F.linear(hidden, w_out, b_out)  # (n, out)
    root = gammas.clamp(min=0).sqrt().view(-1, 1, 1)  # (G, 1, 1)
    z = F.linear(h_in, candidate.in_weight.to(h_in), candidate.in_bias.to(h_in))  # (n, K)
    omega = candidate.out_weight.to(h_in)
    new = net.activation(root * z) - net.sigma0  # (G, n, K); exact zero at gamma = 0
    out = base + root * (new @ omega.transpose(0, 1))
    if candidate.update_weight is not None:
        delta = F.linear(hidden, candidate.update_weight.to(h_in), candidate.update_bias.to(h_in))
        out = out + gammas.view(-1, 1, 1) * delta
    return out


def mlp_extended_forward(
    net, candidate: GrowthCandidate, x: torch.Tensor, gamma: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """Preview: the MLP's output with the candidate applied, without changing the net.

    ``gamma`` may be a float (returns (n, out)) or a 1-D tensor of G amplitudes
    (returns (G, n, out)).
    """
    net.check_input(x)
    check_candidate(net, candidate)
    gammas = as_gammas(gamma, x)
    with torch.no_grad():
        h_in = net.forward_prefix(x, candidate.site)
        out = net.forward_suffix(
            next_preactivation(net, candidate, h_in, gammas), candidate.site + 1
        )
    if torch.as_tensor(gamma).ndim == 0:
        return out[0]
    return out


def mlp_amplitude_search(
    net,
    candidate: GrowthCandidate,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str | PerSampleLoss = "mse",
    gammas: torch.Tensor | None = None,
) -> AmplitudeResult:
    """Evaluate the mean loss on ``(x, y)`` at every amplitude at once and take the best.

    The forward pass up to the grown site is shared; the rest runs once, batched over
    amplitudes. ``gamma = 0`` is always evaluated, so ``loss_drop >= 0``. With the default
    grid there is no host synchronisation (user-given ``gammas`` are validated once).
    """
    loss_fn, y, gammas = search_setup(net, candidate, x, y, loss, gammas)
    with torch.no_grad():
        h_in = net.forward_prefix(x, candidate.site)
        pre = next_preactivation(net, candidate, h_in, gammas)
        out = net.forward_suffix(pre, candidate.site + 1)  # (G, n, out)
        losses = loss_fn(out, y).mean(-1)
    return best_amplitude(losses, gammas)


def mlp_apply_growth(
    net,
    candidate: GrowthCandidate,
    gamma: float | torch.Tensor = 1.0,
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Apply ``candidate`` to the MLP in place at ``gamma``
    (:func:`~growenv.nets.candidate.apply_candidate`); equals :func:`mlp_extended_forward`
    at the same ``gamma``."""
    apply_candidate(net, candidate, gamma, optimizer)
