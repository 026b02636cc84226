"""Amplitude-factor line search: the gamma that minimises the real loss of a candidate."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from growenv.losses import PerSampleLoss, prepare_target, resolve_loss
from growenv.nets.mlp.growth import GrowthCandidate, _check_candidate, _is_conv, next_preactivation


def default_gammas(device=None, dtype=torch.float32) -> torch.Tensor:
    """``0`` and 31 log-spaced amplitudes from 1e-5 to 10."""
    grid = torch.logspace(-5, 1, 31, dtype=dtype, device=device)
    return torch.cat([grid.new_zeros(1), grid])


@dataclass
class AmplitudeResult:
    """Outcome of the search: ``gamma`` (the argmin), ``loss_drop = loss(0) - loss(gamma)``."""

    gamma: torch.Tensor
    loss_drop: torch.Tensor
    base_loss: torch.Tensor
    losses: torch.Tensor  # mean loss for every candidate amplitude
    gammas: torch.Tensor


def amplitude_grid(gammas: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """The amplitudes to try, in ``x``'s dtype and device: :func:`default_gammas`, or the
    given ones validated (non-empty, ``>= 0``) with ``0`` added if missing."""
    if gammas is None:
        return default_gammas(x.device, x.dtype)  # starts with 0
    gammas = torch.as_tensor(gammas, dtype=x.dtype, device=x.device).reshape(-1)
    if gammas.numel() == 0 or bool((gammas < 0).any()):
        raise ValueError("gammas: expected a non-empty 1-D tensor of amplitudes >= 0")
    if not bool((gammas == 0).any()):
        gammas = torch.cat([gammas.new_zeros(1), gammas])
    return gammas


def best_amplitude(losses: torch.Tensor, gammas: torch.Tensor) -> AmplitudeResult:
    """The argmin of the mean ``losses`` (one per amplitude; NaN counts as +inf) and its
    drop from the loss at ``gamma = 0``."""
    losses = torch.nan_to_num(losses, nan=float("inf"))
    best = torch.argmin(losses)
    base = losses[torch.argmin(gammas)]
    return AmplitudeResult(gammas[best], base - losses[best], base, losses, gammas)


def search_setup(
    net,
    candidate: GrowthCandidate,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str | PerSampleLoss,
    gammas: torch.Tensor | None,
) -> tuple[PerSampleLoss, torch.Tensor, torch.Tensor]:
    """Checks and inputs shared by the MLP and conv searches: the per-sample loss function,
    the prepared targets and the amplitude grid (:func:`amplitude_grid`)."""
    net.check_input(x)
    _check_candidate(net, candidate)
    loss_fn = resolve_loss(loss)
    y = prepare_target(loss, y, x.shape[0], net.out_features)
    return loss_fn, y, amplitude_grid(gammas, x)


def amplitude_search(
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
    if _is_conv(net):
        from growenv.nets.conv.growth import conv_amplitude_search

        return conv_amplitude_search(net, candidate, x, y, loss, gammas)
    loss_fn, y, gammas = search_setup(net, candidate, x, y, loss, gammas)
    with torch.no_grad():
        h_in = net.forward_prefix(x, candidate.site)
        pre = next_preactivation(net, candidate, h_in, gammas)
        out = net.forward_suffix(pre, candidate.site + 1)  # (G, n, out)
        losses = loss_fn(out, y).mean(-1)
    return best_amplitude(losses, gammas)
