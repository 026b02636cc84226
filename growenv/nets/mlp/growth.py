"""Growth candidates: K new neurons (and the paired update) at one site; preview and apply."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class GrowthCandidate:
    """K new neurons at hidden state ``site``, plus the best update of layer ``site + 1``.

    Applied with amplitude ``gamma``: new neurons are scaled by ``sqrt(gamma)`` on each side
    and the update by ``gamma``. For activations with ``sigma(0) != 0`` the next layer's bias
    is shifted by ``-sqrt(gamma) sigma(0) sum_k omega_k`` so that ``gamma -> 0`` leaves the
    function unchanged.
    """

    site: int
    in_weight: torch.Tensor  # (K, width of the input of layer site)
    in_bias: torch.Tensor  # (K,)
    out_weight: torch.Tensor  # (out of layer site + 1, K)
    update_weight: torch.Tensor | None  # (out, in) of layer site + 1, or None
    update_bias: torch.Tensor | None  # (out,)
    eigenvalues: torch.Tensor  # (K,) lambda_k of the chosen neurons
    method: str = "tiny"

    @property
    def num_neurons(self) -> int:
        return self.in_weight.shape[0]

    def added_parameters(self) -> int:
        """Parameters this candidate adds to the network."""
        k = self.num_neurons
        return k * (self.in_weight.shape[1] + 1) + k * self.out_weight.shape[0]


def _check_candidate(net, candidate: GrowthCandidate) -> int:
    """Return the candidate's site, or raise if its shapes do not fit the net (MLP or conv)."""
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


def _is_conv(net) -> bool:
    from growenv.nets.conv.net import GrowingConvNet

    return isinstance(net, GrowingConvNet)


def _as_gammas(gamma: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    g = torch.as_tensor(gamma, dtype=like.dtype, device=like.device)
    return g.reshape(-1)


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


def extended_forward(
    net, candidate: GrowthCandidate, x: torch.Tensor, gamma: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """Preview: the net's output with the candidate applied, without changing the net.

    ``gamma`` may be a float (returns (n, out)) or a 1-D tensor of G amplitudes
    (returns (G, n, out)).
    """
    if _is_conv(net):
        from growenv.nets.conv.growth import conv_extended_forward

        return conv_extended_forward(net, candidate, x, gamma)
    net.check_input(x)
    _check_candidate(net, candidate)
    gammas = _as_gammas(gamma, x)
    with torch.no_grad():
        h_in = net.forward_prefix(x, candidate.site)
        out = net.forward_suffix(
            next_preactivation(net, candidate, h_in, gammas), candidate.site + 1
        )
    if torch.as_tensor(gamma).ndim == 0:
        return out[0]
    return out


@torch.no_grad()
def apply_growth(
    net,
    candidate: GrowthCandidate,
    gamma: float | torch.Tensor = 1.0,
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Apply ``candidate`` to ``net`` (a GrowingMLP or GrowingConvNet) in place at ``gamma``.

    The result equals :func:`extended_forward` at the same ``gamma``. Optimizer state of the
    grown parameters is kept (zero-padded for the new entries).
    """
    site = _check_candidate(net, candidate)
    w_out, b_out = net.weights[site + 1], net.biases[site + 1]
    g = torch.as_tensor(gamma, dtype=net.dtype, device=net.device).reshape(())
    root = g.clamp(min=0).sqrt()
    omega = candidate.out_weight.to(w_out)
    if candidate.update_weight is not None:
        w_out.add_(g * candidate.update_weight.to(w_out))
        b_out.add_(g * candidate.update_bias.to(b_out))
    if net.sigma0 != 0.0:
        # per output: sum over the new neurons (and, for conv kernels, their taps)
        b_out.sub_(root * net.sigma0 * omega.flatten(1).sum(1))
    net.grow(
        site,
        root * candidate.in_weight.to(w_out),
        root * candidate.in_bias.to(w_out),
        root * omega,
        optimizer=optimizer,
    )
