"""The TINY solver: pure functions from statistics to updates, new neurons and gains.

Every function accepts arbitrary leading batch dimensions (sites, environments, ...);
``torch.linalg.eigh`` and ``svd`` batch over them natively. Conventions follow
``docs/math.md`` (``S = E[b b^T]``, ``M = E[b v^T]`` with ``v = -dl/da``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from growenv.threads import parallel_map, single_threaded

# Eigenvalues of S below rtol * max eigenvalue are treated as zero. The default depends on
# the precision the statistics were accumulated in: below these ratios the eigenvalues
# are rounding noise of the sums, and inverting them amplifies that noise.
DEFAULT_RTOL = {
    torch.float16: 1e-3,
    torch.bfloat16: 1e-3,
    torch.float32: 1e-6,
    torch.float64: 1e-12,
}
DEFAULT_ATOL = 1e-10  # ... and below this absolute floor (padding, empty inputs)
DEFAULT_STATISTICAL_THRESHOLD = 1e-3  # lambda_k below this are not significant


@dataclass
class CovarianceFactors:
    """``S^+`` and ``S^{-1/2}`` (pseudo-inverse square root) from one ``eigh``."""

    pinv: torch.Tensor
    inv_sqrt: torch.Tensor
    rank: torch.Tensor


def symmetrize(s: torch.Tensor) -> torch.Tensor:
    return 0.5 * (s + s.transpose(-1, -2))


def default_rtol(dtype: torch.dtype) -> float:
    """Relative eigenvalue cut-off for statistics accumulated in ``dtype``."""
    return DEFAULT_RTOL.get(dtype, 1e-6)


@dataclass
class CovarianceSpectrum:
    """Eigenvectors of a PSD matrix and its kept inverse spectrum: ``S^+ = V diag(inv) V^T``,
    ``S^{-1/2} = V diag(inv_sqrt) V^T`` (for solvers that need only one of them)."""

    eigvecs: torch.Tensor
    inv: torch.Tensor
    inv_sqrt: torch.Tensor
    rank: torch.Tensor

    def pinv_times(self, m: torch.Tensor) -> torch.Tensor:
        """``S^+ m`` without forming ``S^+``."""
        return self._times(self.inv, m)

    def _times(self, diag: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """``V diag(diag) V^T m``."""
        v = self.eigvecs
        return v @ (diag.unsqueeze(-1) * (v.transpose(-1, -2) @ m))

    def inv_sqrt_matrix(self) -> torch.Tensor:
        """``S^{-1/2}`` (pseudo-inverse square root)."""
        v = self.eigvecs
        return (v * self.inv_sqrt.unsqueeze(-2)) @ v.transpose(-1, -2)

    def whiten(self, n: torch.Tensor) -> torch.Tensor:
        """``W n`` for the whitening ``W = S^{-1/2}`` (``W^T W = S^+``)."""
        return self._times(self.inv_sqrt, n)

    def whiten_t(self, u: torch.Tensor) -> torch.Tensor:
        """``W^T u`` (``W`` is symmetric here)."""
        return self.whiten(u)


@dataclass
class CholeskyFactor:
    """``S = L L^T`` of a PSD matrix none of whose eigenvalues is cut off, so ``S^+ =
    S^{-1}``; ``W = L^{-1}`` whitens like ``S^{-1/2}`` (``W^T W = S^+``; the two differ by a
    rotation, which leaves :func:`whitened_neurons` unchanged)."""

    lower: torch.Tensor
    rank: torch.Tensor

    def pinv_times(self, m: torch.Tensor) -> torch.Tensor:
        """``S^{-1} m`` (two triangular solves)."""
        return torch.cholesky_solve(m, self.lower)

    def whiten(self, n: torch.Tensor) -> torch.Tensor:
        """``W n = L^{-1} n``."""
        return torch.linalg.solve_triangular(self.lower, n, upper=False)

    def whiten_t(self, u: torch.Tensor) -> torch.Tensor:
        """``W^T u = L^{-T} u``."""
        return torch.linalg.solve_triangular(self.lower.transpose(-1, -2), u, upper=True)


CovarianceSolver = CovarianceSpectrum | CholeskyFactor


def covariance_spectrum(
    s: torch.Tensor, rtol: float = 1e-6, atol: float = DEFAULT_ATOL
) -> CovarianceSpectrum:
    """One ``eigh`` of the symmetrised ``s`` (..., d, d); eigenvalues ``<= max(atol, rtol *
    largest)`` are dropped (the matrix is treated as singular there)."""
    s = symmetrize(s)
    eigvals, eigvecs = torch.linalg.eigh(s)
    threshold = torch.clamp(rtol * eigvals[..., -1:], min=atol)
    keep = eigvals > threshold
    safe = torch.where(keep, eigvals, torch.ones_like(eigvals))
    inv = torch.where(keep, 1.0 / safe, torch.zeros_like(eigvals))
    inv_sqrt = torch.where(keep, torch.rsqrt(safe), torch.zeros_like(eigvals))
    return CovarianceSpectrum(eigvecs, inv, inv_sqrt, keep.sum(-1))


def covariance_solver(
    s: torch.Tensor, rtol: float = 1e-6, atol: float = DEFAULT_ATOL
) -> CovarianceSolver:
    """The cheaper exact factor of one PSD matrix ``s`` (d, d) for :func:`covariance_spectrum`'s
    cut-off: a Cholesky factor where no eigenvalue is cut off, else the spectrum.

    No eigenvalue is cut off when ``s - tau I`` is positive definite for ``tau = max(atol,
    rtol * bound)``, ``bound`` (the trace or the largest absolute row sum, whichever is
    smaller) being at least the largest eigenvalue: one Cholesky decides it (conservative
    near the cut-off: those matrices get the spectrum). Both give the same ``S^+``,
    whitened neurons and gains up to rounding; a Cholesky and two triangular solves cost a
    fraction of an ``eigh``. Off the CPU (the test needs the host) and for batched or empty
    matrices, the spectrum.
    """
    s = symmetrize(s)
    d = s.shape[-1]
    if s.dim() == 2 and d > 0 and s.device.type == "cpu":
        bound = min(float(s.diagonal().sum()), float(s.abs().sum(0).max()))
        tau = max(atol, rtol * bound)
        shifted = s - tau * torch.eye(d, dtype=s.dtype)
        if int(torch.linalg.cholesky_ex(shifted)[1]) == 0:
            lower, info = torch.linalg.cholesky_ex(s)
            if int(info) == 0:
                return CholeskyFactor(lower, torch.tensor(d))
    return covariance_spectrum(s, rtol, atol)


def _largest_first(fn, mats: list[torch.Tensor], workers: int) -> list:
    """``[fn(m) for m in mats]``, the largest matrices first on ``workers`` threads."""
    order = sorted(range(len(mats)), key=lambda i: -mats[i].shape[-1])
    done = parallel_map(lambda i: fn(mats[i]), order, workers)
    out = [None] * len(mats)
    for i, result in zip(order, done, strict=True):
        out[i] = result
    return out


def covariance_spectra(
    mats: list[torch.Tensor], rtol: float, atol: float, workers: int = 1
) -> list[CovarianceSpectrum]:
    """:func:`covariance_spectrum` of each matrix (any sizes; no padding to a common one).

    ``workers > 1`` runs them side by side on that many threads
    (:func:`~growenv.threads.parallel_map`), largest first. Each matrix is factorised alone,
    in its own allocation, so the results do not depend on ``workers`` (MKL's rounding can
    depend on where a matrix sits in a batch).
    """
    return _largest_first(lambda m: covariance_spectrum(m, rtol, atol), mats, workers)


def covariance_solvers(
    mats: list[torch.Tensor], rtol: float, atol: float, workers: int = 1
) -> list[CovarianceSolver]:
    """:func:`covariance_solver` of each matrix, as :func:`covariance_spectra` runs them."""
    return _largest_first(lambda m: covariance_solver(m, rtol, atol), mats, workers)


def covariance_factors(
    s: torch.Tensor, rtol: float = 1e-6, atol: float = DEFAULT_ATOL
) -> CovarianceFactors:
    """Pseudo-inverse and inverse square root of PSD matrices ``s`` (..., d, d).

    ``s`` is symmetrised; eigenvalues ``<= max(atol, rtol * largest)`` are dropped (the
    matrix is treated as singular there), so zero padding is inert.
    """
    if s.shape[-1] == 0:
        empty = torch.zeros_like(s)
        return CovarianceFactors(empty, empty, s.new_zeros(s.shape[:-2], dtype=torch.long))
    spec = covariance_spectrum(s, rtol, atol)
    eigvecs = spec.eigvecs
    pinv = (eigvecs * spec.inv.unsqueeze(-2)) @ eigvecs.transpose(-1, -2)
    return CovarianceFactors(pinv, spec.inv_sqrt_matrix(), spec.rank)


def best_update(s_pinv: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Best update of a layer's weights and its first-order gain.

    ``dW* = (S^+ M)^T`` of shape (..., out, in + 1) (last column: bias) and
    ``d = <M, S^+ M>`` (..., ), the first-order decrease of the mean loss per unit step.
    """
    return _update_and_gain(s_pinv @ m, m)


def best_update_spectral(
    factor: CovarianceSolver, m: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`best_update` from a factor of ``S`` (:func:`covariance_solver`; no ``S^+``
    formed)."""
    return _update_and_gain(factor.pinv_times(m), m)


def _update_and_gain(sm: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(S^+ M)^T`` and ``<M, S^+ M>`` from ``S^+ M``."""
    return sm.transpose(-1, -2), (m * sm).sum((-1, -2))


def projected_cross_correlation(p: torch.Tensor, c: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
    """``N = E[b_j v_perp^T] = P - C dW^T``, the correlation with the residual at layer j+1."""
    return p - c @ dw.transpose(-1, -2)


def bottleneck(vv: torch.Tensor, update_gain: torch.Tensor) -> torch.Tensor:
    """Expressivity bottleneck ``Psi = E||v_perp||^2 = E||v||^2 - d`` (clamped at 0)."""
    return torch.clamp(vv - update_gain, min=0.0)


@dataclass
class NeuronSolution:
    """All candidate neurons of a site, sorted by decreasing ``lambda``.

    ``alpha`` (..., r, in + 1): incoming weights (last column: bias); ``omega``
    (..., out, r): outgoing weights; ``eigenvalues`` (..., r).
    """

    eigenvalues: torch.Tensor
    alpha: torch.Tensor
    omega: torch.Tensor


def canonical_signs(u: torch.Tensor, vh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fix the sign of each singular pair: the largest-magnitude entry of ``v_k`` is positive.

    ``(u_k, v_k)`` and ``(-u_k, -v_k)`` are equally valid, but for a non-odd activation the
    two give different neurons; a fixed rule makes results independent of the LAPACK
    path (and of zero padding, which leaves the largest entry in place).
    """
    pivot = vh.abs().argmax(-1, keepdim=True)
    sign = torch.sign(torch.gather(vh, -1, pivot))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return u * sign.transpose(-1, -2), vh * sign


def new_neurons(s_inv_sqrt: torch.Tensor, n: torch.Tensor) -> NeuronSolution:
    """TINY neurons from the SVD ``S^{-1/2} N = sum_k lambda_k u_k v_k^T``.

    ``alpha_k = sqrt(lambda_k) S^{-1/2} u_k``, ``omega_k = sqrt(lambda_k) v_k`` (signs as in
    :func:`canonical_signs`). Adding the first K lowers the (linearised) bottleneck by
    ``sum_{k<=K} lambda_k^2``.
    """
    return _svd_neurons(s_inv_sqrt @ n, lambda u: s_inv_sqrt @ u)


def zero_pad(t: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """``t`` (``(..., r, c)``) padded with zeros to ``(..., rows, cols)``."""
    return torch.nn.functional.pad(t, (0, cols - t.shape[-1], 0, rows - t.shape[-2]))


def best_updates_grouped(
    s_list: list[torch.Tensor],
    m_list: list[torch.Tensor],
    groups: list[list[int]],
    rtol: float | None = None,
    atol: float = DEFAULT_ATOL,
) -> tuple[list, list, list, list[tuple[list[int], CovarianceFactors]]]:
    """:func:`best_update` and ``S^{-1/2}`` of every pair ``(s_list[i], m_list[i])``: the
    pairs of each group (indices) are zero-padded to the group's largest shape (inert: zero
    eigenvalues are dropped) and factorised in one batched ``eigh``.

    Returns
    -------
    dws, gains, inv_sqrt
        Per pair, cut back to its own sizes.
    group_factors
        ``(group, factors)`` of every group's batched factorisation.
    """
    n = len(s_list)
    dws: list[torch.Tensor] = [None] * n  # type: ignore[list-item]
    gains: list[torch.Tensor] = [None] * n  # type: ignore[list-item]
    inv_sqrt: list[torch.Tensor] = [None] * n  # type: ignore[list-item]
    group_factors = []
    for group in groups:
        d = max(s_list[i].shape[-1] for i in group)
        o = max(m_list[i].shape[-1] for i in group)
        s_pad = torch.stack([zero_pad(s_list[i], d, d) for i in group])
        m_pad = torch.stack([zero_pad(m_list[i], d, o) for i in group])
        factors = covariance_factors(s_pad, rtol=rtol, atol=atol)
        dw, gain = best_update(factors.pinv, m_pad)
        for k, i in enumerate(group):
            di, oi = s_list[i].shape[-1], m_list[i].shape[-1]
            dws[i] = dw[k, ..., :oi, :di]
            gains[i] = gain[k]
            inv_sqrt[i] = factors.inv_sqrt[k, ..., :di, :di]
        group_factors.append((group, factors))
    return dws, gains, inv_sqrt, group_factors


def new_neurons_grouped(
    inv_sqrt: list[torch.Tensor], n_list: list[torch.Tensor], groups: list[list[int]]
) -> list[NeuronSolution]:
    """:func:`new_neurons` of every pair ``(inv_sqrt[i], n_list[i])``: the pairs of each
    group (indices) are zero-padded to the group's largest shape and solved in one batched
    SVD, then each solution is cut back to its own sizes (the padding is inert: zero rows and
    columns add only zero singular values)."""
    out: list[NeuronSolution] = [None] * len(n_list)  # type: ignore[list-item]
    for group in groups:
        d = max(n_list[i].shape[-2] for i in group)
        o = max(n_list[i].shape[-1] for i in group)
        isq = torch.stack([zero_pad(inv_sqrt[i], d, d) for i in group])
        n_pad = torch.stack([zero_pad(n_list[i], d, o) for i in group])
        sol = new_neurons(isq, n_pad)
        for k, i in enumerate(group):
            di, oi = n_list[i].shape[-2:]
            r = min(di, oi)
            out[i] = NeuronSolution(
                sol.eigenvalues[k, ..., :r], sol.alpha[k, ..., :r, :di], sol.omega[k, ..., :oi, :r]
            )
    return out


def whitened_neurons(factor: CovarianceSolver, n: torch.Tensor) -> NeuronSolution:
    """:func:`new_neurons` from a factor of ``S`` (:func:`covariance_solver`): the SVD of
    ``W N`` for a whitening ``W`` (``W^T W = S^+``) and ``alpha_k = sqrt(lambda_k) W^T u_k``.
    Every such ``W`` is ``S^{-1/2}`` up to a rotation on the left, which changes neither
    ``lambda``, ``v`` nor ``W^T u = S^+ N v / lambda``."""
    return _svd_neurons(factor.whiten(n), factor.whiten_t)


class LazyNeurons:
    """:func:`whitened_neurons` in two steps: ``eigenvalues`` now, from the singular values
    alone (``svdvals``: ~0.4 of a full SVD's time at 145 rows), and ``alpha``/``omega`` from
    the full SVD on first access (only for the sites a caller grows), cast to ``dtype``
    (default: ``n``'s). ``eigenvalues`` stay in ``n``'s dtype."""

    def __init__(
        self, factor: CovarianceSolver, n: torch.Tensor, dtype: torch.dtype | None = None
    ) -> None:
        self._whitened = factor.whiten(n)
        self._whiten_t = factor.whiten_t
        self._dtype = n.dtype if dtype is None else dtype
        self.eigenvalues = torch.linalg.svdvals(self._whitened)
        self._solution: NeuronSolution | None = None

    def solution(self) -> NeuronSolution:
        """:func:`whitened_neurons`' neurons, ``alpha``/``omega`` cast, with :attr:`eigenvalues`
        (computed once)."""
        if self._solution is None:
            with single_threaded(self._whitened.device):  # as the solve: same rounding
                sol = _svd_neurons(self._whitened, self._whiten_t)
            cast = sol.alpha.to(self._dtype), sol.omega.to(self._dtype)
            self._solution = NeuronSolution(self.eigenvalues, *cast)  # one set of lambda
        return self._solution

    @property
    def alpha(self) -> torch.Tensor:
        return self.solution().alpha

    @property
    def omega(self) -> torch.Tensor:
        return self.solution().omega


def _svd_neurons(wn: torch.Tensor, whiten_t) -> NeuronSolution:
    u, lam, vh = torch.linalg.svd(wn, full_matrices=False)
    u, vh = canonical_signs(u, vh)
    root = lam.clamp(min=0).sqrt()
    alpha = (whiten_t(u) * root.unsqueeze(-2)).transpose(-1, -2)
    omega = vh.transpose(-1, -2) * root.unsqueeze(-2)
    return NeuronSolution(lam, alpha, omega)


def gradmax_neurons(p: torch.Tensor) -> NeuronSolution:
    """GradMax-style neurons (Evci et al. 2022) for ablations.

    Incoming weights zero; outgoing weights are the top right singular vectors of the raw
    correlation ``P = E[b_j v_{j+1}^T]`` (unit norm), which maximise the gradient norm of the
    new incoming weights. The returned ``eigenvalues`` are the singular values of ``P``.
    """
    u, lam, vh = torch.linalg.svd(p, full_matrices=False)
    _, vh = canonical_signs(u, vh)
    alpha = torch.zeros(*p.shape[:-2], lam.shape[-1], p.shape[-2], dtype=p.dtype, device=p.device)
    return NeuronSolution(lam, alpha, vh.transpose(-1, -2))


def random_neurons(
    in_dim: int, out_dim: int, k: int, like: torch.Tensor, generator: torch.Generator | None = None
) -> NeuronSolution:
    """Random neurons for ablations: ``alpha ~ N(0, 1/in)``, ``omega ~ N(0, 1/k)``."""
    alpha = torch.randn(k, in_dim, generator=generator, dtype=like.dtype).to(like.device)
    omega = torch.randn(out_dim, k, generator=generator, dtype=like.dtype).to(like.device)
    alpha = alpha / max(in_dim, 1) ** 0.5
    omega = omega / max(k, 1) ** 0.5
    return NeuronSolution(like.new_zeros(k), alpha, omega)


def significant_count(eigenvalues: torch.Tensor, threshold: float) -> torch.Tensor:
    """Number of ``lambda_k >= threshold``, but at least one where any is positive."""
    count = (eigenvalues >= threshold).sum(-1)
    any_positive = (eigenvalues > 0).any(-1)
    return torch.where(any_positive, count.clamp(min=1), count)


def first_order_gain(
    update_gain: torch.Tensor,
    eigenvalues: torch.Tensor,
    slope_at_zero: float,
    num_neurons: torch.Tensor | int,
) -> torch.Tensor:
    """TINY's first-order gain ``d + sigma'(0) * sum_{k < K} lambda_k^2`` (gromo's convention)."""
    k = torch.as_tensor(num_neurons, device=eigenvalues.device)
    idx = torch.arange(eigenvalues.shape[-1], device=eigenvalues.device)
    mask = idx < k.unsqueeze(-1)
    return update_gain + slope_at_zero * (eigenvalues.pow(2) * mask).sum(-1)
