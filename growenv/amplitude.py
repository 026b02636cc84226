"""Amplitude-factor line search, family-agnostic parts: the grid of amplitudes, the best one,
and the checks every family's search shares (the searches are in each family's growth
module, the public one is :func:`growenv.amplitude_search`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from growenv.losses import PerSampleLoss, prepare_target, resolve_loss
from growenv.nets.candidate import GrowthCandidate, check_candidate
from growenv.validation import finite_values


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
    given ones validated (non-empty, finite, ``>= 0``) with ``0`` added if missing."""
    if gammas is None:
        return default_gammas(x.device, x.dtype)  # starts with 0
    gammas = torch.as_tensor(gammas, dtype=x.dtype, device=x.device).reshape(-1)
    if gammas.numel() == 0:
        raise ValueError("gammas: expected a non-empty 1-D tensor of amplitudes >= 0, got none")
    finite_values("gammas", gammas, minimum=0)
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
    """Checks and inputs shared by every family's search: the per-sample loss function,
    the prepared targets and the amplitude grid (:func:`amplitude_grid`)."""
    net.check_input(x)
    check_candidate(net, candidate)
    loss_fn = resolve_loss(loss)
    y = prepare_target(loss, y, x.shape[0], net.out_features)
    return loss_fn, y, amplitude_grid(gammas, x)
