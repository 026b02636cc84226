"""MLP bottleneck: the statistics pass and the batched TINY solve of every hidden state."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from growenv import tiny
from growenv.losses import PerSampleLoss
from growenv.nets.mlp.statistics import GrowthStatistics, compute_statistics
from growenv.nets.report import (
    BottleneckReport,
    LayerSolution,
    SiteReport,
    check_tolerances,
    site_report,
)

# Matrices up to this size are zero-padded into one batched factorisation (one kernel launch
# for all layers); larger ones (e.g. the 3073-wide input of a flattened CIFAR image) are
# factorised alone, so that padding never multiplies their cost.
PAD_LIMIT = 256


def _groups(sizes: list[int]) -> list[list[int]]:
    small = [i for i, d in enumerate(sizes) if d <= PAD_LIMIT]
    return ([small] if small else []) + [[i] for i, d in enumerate(sizes) if d > PAD_LIMIT]


def _factor_layers(
    s_list: list[torch.Tensor],
    m_list: list[torch.Tensor],
    rtol: float,
    atol: float,
    input_factors: tiny.CovarianceFactors | None = None,
) -> tuple[
    list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], tiny.CovarianceFactors | None
]:
    """Per layer: ``S^{-1/2}``, ``dW*`` (out, in + 1) and the gain ``d``, batched by size.

    ``input_factors``, if given, are the factors of layer 0's ``S`` (the input covariance,
    constant for fixed data) and replace its factorisation.
    """
    n = len(s_list)
    inv_sqrt: list[torch.Tensor] = [None] * n  # type: ignore[list-item]
    dws: list[torch.Tensor] = [None] * n  # type: ignore[list-item]
    gains: list[torch.Tensor] = [None] * n  # type: ignore[list-item]
    todo = list(range(n))
    if input_factors is not None:
        inv_sqrt[0] = input_factors.inv_sqrt
        dw, gains[0] = tiny.best_update(input_factors.pinv, m_list[0])
        dws[0] = dw
        todo = todo[1:]
    groups = [[todo[i] for i in local] for local in _groups([s_list[i].shape[-1] for i in todo])]
    g_dws, g_gains, g_isq, group_factors = tiny.best_updates_grouped(
        s_list, m_list, groups, rtol=rtol, atol=atol
    )
    for i in todo:
        dws[i], gains[i], inv_sqrt[i] = g_dws[i], g_gains[i], g_isq[i]
    for group, factors in group_factors:
        if group == [0] and s_list[0].shape[-1] > PAD_LIMIT:
            input_factors = tiny.CovarianceFactors(
                factors.pinv[0], factors.inv_sqrt[0], factors.rank[0]
            )
    return inv_sqrt, dws, gains, input_factors


def solve(
    stats: GrowthStatistics,
    slope_at_zero: float,
    rtol: float | None = None,
    atol: float = tiny.DEFAULT_ATOL,
    statistical_threshold: float = tiny.DEFAULT_STATISTICAL_THRESHOLD,
    dtype: torch.dtype = torch.float64,
    widths: list[int] | None = None,
    input_factors: tiny.CovarianceFactors | None = None,
) -> tuple[list[SiteReport], LayerSolution]:
    """Solve every layer and site at once (pure function of the statistics).

    Layers' ``S`` are zero-padded to one size and factorised by one batched ``eigh``, and
    sites' ``S^{-1/2} N`` by one batched ``svd`` (padding is inert: zero eigenvalues are
    dropped); matrices wider than ``PAD_LIMIT`` are factorised alone. Results are returned
    in the statistics' dtype.
    """
    out_dtype = stats.S[0].dtype
    if rtol is None:
        rtol = tiny.default_rtol(out_dtype)
    num_layers = stats.num_layers
    inv_sqrt, dws, gain_list, factors0 = _factor_layers(
        [s.to(dtype) for s in stats.S], [m.to(dtype) for m in stats.M], rtol, atol, input_factors
    )
    gains = torch.stack(gain_list)
    psi = tiny.bottleneck(torch.stack([v.to(dtype) for v in stats.vv]), gains)
    weights = [dw[..., :-1].to(out_dtype) for dw in dws]
    biases = [dw[..., -1].to(out_dtype) for dw in dws]
    layers = LayerSolution(weights, biases, gains.to(out_dtype), factors0)

    sites: list[SiteReport] = []
    if num_layers < 2:
        return sites, layers
    n_list = [
        tiny.projected_cross_correlation(stats.P[j].to(dtype), stats.C[j].to(dtype), dws[j + 1])
        for j in range(num_layers - 1)
    ]
    solutions = tiny.new_neurons_grouped(
        inv_sqrt[:-1], n_list, _groups([n.shape[-2] for n in n_list])
    )
    for j, sol in enumerate(solutions):
        width = widths[j] if widths is not None else stats.S[j + 1].shape[-1] - 1
        sites.append(
            site_report(
                SiteReport,
                j,
                width,
                sol,
                gains[j + 1],
                psi[j + 1],
                slope_at_zero,
                statistical_threshold,
                (weights[j + 1], biases[j + 1]),
                stats.P[j],
                out_dtype,
            )  # fmt: skip
        )
    return sites, layers


def mlp_bottleneck(
    net,
    x: torch.Tensor | Iterable,
    y: torch.Tensor | None = None,
    loss: str | PerSampleLoss = "mse",
    *,
    batch_size: int | None = None,
    rtol: float | None = None,
    atol: float = tiny.DEFAULT_ATOL,
    statistical_threshold: float = tiny.DEFAULT_STATISTICAL_THRESHOLD,
    solve_dtype: torch.dtype = torch.float64,
    input_factors: tiny.CovarianceFactors | None = None,
    kernel: str = "full",
    raw_correlation: bool = False,
) -> BottleneckReport:
    """Measure the expressivity bottleneck of every hidden state of an MLP.

    One forward+backward pass over the data (streamed in ``batch_size`` chunks, or an
    iterable of ``(x, y)`` batches with ``y=None``) gives the statistics; one batched solve
    gives, per site, the eigenvalues, the best update of the next layer and its gain, the
    bottleneck and the first-order gain, and candidate neurons on request
    (``report.sites[j].candidate(K)``).

    Parameters
    ----------
    net
        A :class:`~growenv.nets.mlp.net.GrowingMLP`.
    loss
        ``"mse"`` (``l_i = ||f(x_i) - y_i||^2``), ``"cross_entropy"`` (class labels), or a
        callable returning per-sample losses.
    rtol, atol
        Eigenvalues of ``S`` below ``max(atol, rtol * largest)`` are treated as zero.
        ``rtol=None`` picks it from the statistics' precision (1e-6 for float32, 1e-12 for
        float64): smaller eigenvalues are rounding noise of the accumulated sums.
    statistical_threshold
        ``lambda_k`` below it are not counted as significant (gromo's default, 1e-3).
    solve_dtype
        Precision of the factorisations (float64 by default; results come back in the
        net's dtype).
    input_factors
        Factors of the input covariance ``E[[x; 1][x; 1]^T]`` from an earlier report on
        the same data (``report.input_factors``): the input layer's ``eigh`` is skipped. For
        wide inputs (flattened images) it is the dominant cost, and constant for fixed data.
    kernel, raw_correlation
        Conv options, accepted for the common signature of :func:`growenv.bottleneck` and
        ignored (MLP reports always keep the raw correlation ``P``).
    """
    del kernel, raw_correlation  # conv options, accepted for a common signature
    check_tolerances(rtol, atol, statistical_threshold)
    stats = compute_statistics(net, x, y, loss=loss, batch_size=batch_size)
    sites, layers = solve(
        stats,
        net.slope0,
        rtol=rtol,
        atol=atol,
        statistical_threshold=statistical_threshold,
        dtype=solve_dtype,
        widths=net.hidden_widths,
        input_factors=input_factors,
    )
    factors = input_factors if input_factors is not None else layers.input_factors
    return BottleneckReport(sites, layers, stats.loss, stats.num_samples, stats, factors)
