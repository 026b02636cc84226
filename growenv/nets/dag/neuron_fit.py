"""New neurons fitted to a bottleneck with their nonlinearity (Douka et al. 2025, eq. 1).

TINY's closed form linearises the activation: a new neuron ``sigma(alpha^T b)`` counts as
``sigma'(0) alpha^T b``, which lies in the span of ``b``. When ``b`` already feeds the target
``v`` (a new node ``in -> new -> out`` once the edge ``in -> out`` exists), ``v_perp_v`` is
orthogonal to that span, so ``N = E[b v_perp^T] = 0`` and TINY sees no neuron to add, however
nonlinear the residual is. The DAG paper fits the neurons to the residual with their
activation instead::

    alpha*, omega* = argmin_{alpha, omega} E || omega (sigma(alpha b) - sigma(0)) - v_perp ||^2

(``b`` the new neurons' input with the constant 1 last; ``- sigma(0)`` so that the neurons add
nothing at ``omega = 0``). gromo optimises this by AdamW on every candidate; here it is solved
by variable projection with Levenberg-Marquardt steps, from the activations and residuals of
the one statistics pass (no pass through the net, no learning rate):

* for fixed ``alpha`` the best ``omega`` is a ridge least squares in closed form;
* ``alpha`` takes damped Gauss-Newton steps, one ``(d, d)`` normal system per neuron (the
  diagonal blocks of the Gauss-Newton matrix), accepted per candidate only if the objective
  decreases (the damping then shrinks, else it grows and the step is retried next time);
* each neuron's pre-activation is kept at a unit RMS over the samples (the step is projected
  back): the objective alone favours ever sharper neurons (``|alpha| -> inf`` turns SELU into
  a step and a ramp of unbounded slope), whose weights of 1e4-1e5 then make the intermediate
  training diverge. The amplitude of a neuron is carried by ``omega`` (and ``gamma``).

The start: TINY's directions where it has a signal, random directions for the other neurons
(a seeded generator), each scaled to a unit RMS pre-activation, so that the activation is
used in its nonlinear range. Every step is batched over candidates (zero-padded inputs and
outputs are inert: their rows get no step and their output weights are zero).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from growenv import tiny

DEFAULT_ITERATIONS = 10
OUTER_LIMIT = 48  # up to this input size, the Gauss-Newton blocks use stored b b^T products
RIDGE = 1e-6  # relative ridge of the omega solve (of the mean squared feature)
DAMPING = 1e-2  # initial Levenberg-Marquardt damping (relative to each block's diagonal)


@dataclass
class FittedNeurons:
    """K neurons fitted to a residual.

    Attributes
    ----------
    alpha
        ``(..., K, d)`` input weights, the bias (constant input) last.
    omega
        ``(..., o, K)`` output weights.
    gain
        ``(...)``: ``E||r||^2 - E||r - omega h||^2``, how much of the residual ``r`` the
        neurons take up (``h = sigma(alpha b) - sigma(0)``); ``>= 0``.
    """

    alpha: torch.Tensor
    omega: torch.Tensor
    gain: torch.Tensor


def features(activation: nn.Module, sigma0: float, b: torch.Tensor, alpha: torch.Tensor):
    """``h = sigma(b alpha^T) - sigma(0)`` and ``sigma'(b alpha^T)``, each ``(..., n, K)``."""
    with torch.enable_grad():
        z = (b @ alpha.transpose(-1, -2)).detach().requires_grad_(True)
        h = activation(z)
        (slope,) = torch.autograd.grad(h.sum(), z)
    return h.detach() - sigma0, slope


def output_weights(h: torch.Tensor, r: torch.Tensor, ridge: float = RIDGE) -> torch.Tensor:
    """``omega = argmin ||r - h omega^T||^2 + eps ||omega||^2`` ((..., o, K)), ``eps`` =
    ``ridge`` times the mean of ``diag(h^T h)`` (plus a tiny floor)."""
    hh = h.transpose(-1, -2) @ h
    k = hh.shape[-1]
    eps = ridge * hh.diagonal(dim1=-2, dim2=-1).mean(-1, keepdim=True) + 1e-30
    eye = torch.eye(k, dtype=h.dtype, device=h.device)
    sol = torch.linalg.solve(hh + eps.unsqueeze(-1) * eye, h.transpose(-1, -2) @ r)
    return sol.transpose(-1, -2)


def _objective(h: torch.Tensor, r: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    return (r - h @ omega.transpose(-1, -2)).square().sum((-1, -2))


def unit_scale(b: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``alpha`` with each row scaled to a unit RMS pre-activation on ``b`` (rows with no
    pre-activation stay as they are)."""
    rms = (b @ alpha.transpose(-1, -2)).square().mean(-2).sqrt()  # (..., K)
    return alpha / torch.where(rms > 0, rms, torch.ones_like(rms)).unsqueeze(-1)


def fit(
    b: torch.Tensor,
    r: torch.Tensor,
    alpha: torch.Tensor,
    activation: nn.Module,
    sigma0: float,
    iterations: int = DEFAULT_ITERATIONS,
) -> FittedNeurons:
    """Fit ``omega (sigma(alpha b) - sigma(0))`` to ``r`` from the start ``alpha``.

    Parameters
    ----------
    b
        ``(..., n, d)`` the neurons' inputs per sample, the constant 1 last.
    r
        ``(..., n, o)`` the residual to take up per sample.
    alpha
        ``(..., K, d)`` the start.
    activation, sigma0
        The neurons' activation and its value at 0.
    iterations
        Levenberg-Marquardt steps.

    Returns
    -------
    FittedNeurons
        Means over the ``n`` samples; neurons ordered by how much each alone takes up.
    """
    n = b.shape[-2]
    h, slope = features(activation, sigma0, b, alpha)
    omega = output_weights(h, r)
    loss = _objective(h, r, omega)
    mu = torch.full_like(loss, DAMPING)
    d = b.shape[-1]
    eye = torch.eye(d, dtype=b.dtype, device=b.device)
    # inputs that are not zero padding (the damping's scale is a mean over them)
    used = (b != 0).any(-2).sum(-1, keepdim=True).unsqueeze(-1).clamp_min(1).to(b.dtype)
    # b_i b_i^T of every sample, flattened: the blocks below are then one matmul
    outer = (b.unsqueeze(-1) * b.unsqueeze(-2)).flatten(-2) if d <= OUTER_LIMIT else None
    for _ in range(iterations):
        e = r - h @ omega.transpose(-1, -2)  # (..., n, o)
        # Gauss-Newton blocks: A_k = |omega_k|^2 sum_i s_ik^2 b_i b_i^T, g_k = sum_i s_ik
        # (omega_k . e_i) b_i
        w = slope.square() * omega.square().sum(-2).unsqueeze(-2)  # (..., n, K)
        if outer is not None:
            a = (w.transpose(-1, -2) @ outer).unflatten(-1, (d, d))  # (..., K, d, d)
        else:
            a = torch.einsum("...nk,...nd,...ne->...kde", w, b, b)
        g = ((e @ omega) * slope).transpose(-1, -2) @ b  # (..., K, d)
        diag = a.diagonal(dim1=-2, dim2=-1)
        scale = (diag.sum(-1, keepdim=True) / used).clamp_min(1e-30)  # (..., K, 1)
        damp = mu[..., None, None, None] * (torch.diag_embed(diag) + scale.unsqueeze(-1) * eye)
        step = torch.linalg.solve(a + damp, g.unsqueeze(-1)).squeeze(-1)
        trial = unit_scale(b, alpha + step)  # directions only: see the module docstring
        h_t, slope_t = features(activation, sigma0, b, trial)
        omega_t = output_weights(h_t, r)
        loss_t = _objective(h_t, r, omega_t)
        better = torch.isfinite(loss_t) & (loss_t < loss)
        keep = better[..., None, None]
        alpha = torch.where(keep, trial, alpha)
        h = torch.where(keep, h_t, h)
        slope = torch.where(keep, slope_t, slope)
        omega = torch.where(keep, omega_t, omega)
        loss = torch.where(better, loss_t, loss)
        mu = torch.where(better, mu / 3, mu * 4)
    gain = (r.square().sum((-1, -2)) - loss).clamp_min(0) / n
    # order neurons by what each takes up alone: |omega_k|^2 E[h_k^2]
    alone = omega.square().sum(-2) * h.square().mean(-2)
    order = alone.argsort(-1, descending=True)
    alpha = alpha.gather(-2, order.unsqueeze(-1).expand_as(alpha))
    omega = omega.gather(-1, order.unsqueeze(-2).expand_as(omega))
    return FittedNeurons(alpha, omega, gain)


def fit_macs(samples: int, inputs: int, outputs: int, neurons: int, iterations: int) -> int:
    """Multiply-adds of one :func:`fit` (cost model): per Levenberg-Marquardt step, the
    Gauss-Newton blocks ``n K d^2``, the gradient and features ``~4 n K (d + o)``, the
    ``omega`` solve ``n K^2 + n K o + K^3`` (twice: trial and start), the ``K`` block
    solves ``K d^3 / 3``; plus ``n d^2`` for the stored products ``b b^T``."""
    n, d, o, k = samples, inputs, outputs, neurons
    omega = n * k * k + n * k * o + k**3
    step = n * k * d * d + 4 * n * k * (d + o) + 2 * omega + k * d**3 // 3
    return n * d * d + omega + iterations * step


def start_directions(
    b: torch.Tensor,
    tiny_alpha: torch.Tensor | None,
    num_significant: int,
    num_neurons: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """``(..., K, d)``: TINY's first ``num_significant`` directions, then random Gaussian
    directions (from ``generator``, on the CPU for reproducibility), each with a unit RMS
    pre-activation on ``b``."""
    d = b.shape[-1]
    lead = b.shape[:-2]
    rand = torch.randn((*lead, num_neurons, d), generator=generator, dtype=torch.float64)
    alpha = rand.to(device=b.device, dtype=b.dtype)
    if tiny_alpha is not None and num_significant > 0:
        k = min(num_significant, num_neurons, tiny_alpha.shape[-2])
        alpha = torch.cat([tiny_alpha[..., :k, :].to(alpha), alpha[..., k:, :]], -2)
    return unit_scale(b, alpha)


def fit_many(
    inputs: Sequence[torch.Tensor],
    residuals: Sequence[torch.Tensor],
    starts: Sequence[torch.Tensor],
    activation: nn.Module,
    sigma0: float,
    iterations: int = DEFAULT_ITERATIONS,
) -> list[FittedNeurons]:
    """:func:`fit` of every candidate, batched per input-size bucket (inputs, residuals and
    starts zero-padded to the bucket's largest ``d`` and ``o``; padding is inert)."""
    groups: dict[int, list[int]] = {}
    for i, bi in enumerate(inputs):
        groups.setdefault(max(bi.shape[-1], 1).bit_length(), []).append(i)
    out: list[FittedNeurons | None] = [None] * len(inputs)
    for idx in groups.values():
        d = max(inputs[i].shape[-1] for i in idx)
        o = max(residuals[i].shape[-1] for i in idx)
        n = inputs[idx[0]].shape[-2]
        b = torch.stack([tiny.zero_pad(inputs[i], n, d) for i in idx])
        r = torch.stack([tiny.zero_pad(residuals[i], n, o) for i in idx])
        a0 = torch.stack([tiny.zero_pad(starts[i], starts[i].shape[-2], d) for i in idx])
        res = fit(b, r, a0, activation, sigma0, iterations)
        for j, i in enumerate(idx):
            di, oi = inputs[i].shape[-1], residuals[i].shape[-1]
            out[i] = FittedNeurons(res.alpha[j, ..., :di], res.omega[j, ..., :oi, :], res.gain[j])
    return out  # type: ignore[return-value]
