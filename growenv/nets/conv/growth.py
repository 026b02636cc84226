"""Conv growth: the TINY solve of conv statistics, channel candidates, preview, apply, search.

Same solver functions (:mod:`~growenv.tiny`) and the same report classes as for MLPs
(:class:`~growenv.nets.report.BottleneckReport` of :class:`ConvSiteReport`, a
``SiteReport``), so
policies and the environment work unchanged. Growth at site ``j`` adds ``K`` output channels
to conv ``j`` (kernels ``sqrt(gamma) alpha_k``) and their input kernels
``sqrt(gamma) omega_k`` to conv ``j + 1`` (or head columns); the best update of conv
``j + 1`` (or the head) is added with ``gamma``. For activations with ``sigma(0) != 0`` the
next layer's bias is shifted by ``-sqrt(gamma) sigma(0) sum omega`` (exact in the interior;
at zero-padded borders the new channel reads 0, not ``sigma(0)``, an ``O(sqrt(gamma))``
difference that vanishes at ``gamma = 0``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from growenv import tiny
from growenv.amplitude import AmplitudeResult, best_amplitude, search_setup
from growenv.losses import PerSampleLoss
from growenv.nets.candidate import GrowthCandidate, apply_candidate, as_gammas, check_candidate
from growenv.nets.conv.net import _conv, global_average
from growenv.nets.conv.statistics import ConvGrowthStatistics, compute_conv_statistics
from growenv.nets.report import (
    BottleneckReport,
    LayerSolution,
    SiteReport,
    check_tolerances,
    site_report,
)
from growenv.threads import cpu_workers, parallel_map, single_threaded

# default cap on the elements of one batched activation in the amplitude search / preview
# (amplitudes are processed in chunks below it)
MAX_ELEMENTS = 2**25


@dataclass
class ConvGrowthCandidate(GrowthCandidate):
    """``K`` new channels at stage ``site`` and the best update of the next layer.

    ``in_weight`` ``(K, C_in, k, k)``, ``in_bias`` ``(K,)``; ``out_weight`` ``(C_out, K, k', k')``
    (zero off the centre tap for ``kernel="restricted"``) or ``(out_features, K)`` for the
    last stage (``kernel="linear"``); ``update_weight``/``update_bias`` shaped like the next
    layer's parameters. Applied with amplitude ``gamma`` as :class:`GrowthCandidate`.
    """

    kernel: str = "full"


@dataclass
class ConvSiteReport(SiteReport):
    """:class:`~growenv.nets.report.SiteReport` of a conv site; :meth:`candidate` gives
    channels.

    ``alpha`` ``(r, C_in k^2 + 1)`` and ``omega`` ``(O', r)`` are kept flat (``O' = C_out k'^2``,
    ordered channel, kernel row, kernel column, for a full-kernel site), as is
    ``raw_correlation`` ``(C_in k^2 + 1, O')``, so ``gain``/``linear_gain`` are unchanged.
    """

    kernel: str = "full"
    in_shape: tuple[int, ...] = ()  # (C_in, k, k) of conv ``site``
    out_kernel: int = 1  # kernel size k' of the next conv (1 for the head)

    def candidate(
        self,
        num_neurons: int | None = None,
        method: str = "tiny",
        with_update: bool = True,
        generator: torch.Generator | None = None,
    ) -> ConvGrowthCandidate:
        """The ``num_neurons`` best new channels (default: the significant ones).

        ``method``: ``"tiny"``, ``"gradmax"`` or ``"random"`` (as for MLP sites).
        """
        flat = super().candidate(num_neurons, method, with_update, generator)
        k = flat.num_neurons
        omega = flat.out_weight  # (O', K)
        kk = self.out_kernel
        if self.kernel == "linear":
            out = omega
        elif self.kernel == "full":
            out = omega.reshape(-1, kk, kk, k).permute(0, 3, 1, 2).contiguous()
        else:
            out = omega.new_zeros(omega.shape[0], k, kk, kk)
            out[:, :, kk // 2, kk // 2] = omega
        return ConvGrowthCandidate(
            site=self.site,
            in_weight=flat.in_weight.reshape(k, *self.in_shape),
            in_bias=flat.in_bias,
            out_weight=out,
            update_weight=flat.update_weight,
            update_bias=flat.update_bias,
            eigenvalues=flat.eigenvalues,
            method=method,
            kernel=self.kernel,
        )


# ----------------------------------------------------------------------------------- solve
def _projected(stats: ConvGrowthStatistics, j: int, dw: torch.Tensor, dtype) -> torch.Tensor:
    """``N = P - C dW^T`` of site ``j`` (per kernel offset for a full-kernel site)."""
    if stats.C[j] is None:  # projected in the statistics pass
        return stats.P[j].to(dtype)
    p, c = stats.P[j].to(dtype), stats.C[j].to(dtype)
    if stats.site_kernels[j] != "full":
        return tiny.projected_cross_correlation(p, c, dw)
    offsets, d = c.shape[0], p.shape[0]
    p = p.reshape(d, -1, offsets).permute(2, 0, 1)  # (k'^2, D, O)
    n = tiny.projected_cross_correlation(p, c, dw)
    return n.permute(1, 2, 0).reshape(d, -1)


def solve_conv(
    stats: ConvGrowthStatistics,
    net,
    rtol: float | None = None,
    atol: float = tiny.DEFAULT_ATOL,
    statistical_threshold: float = tiny.DEFAULT_STATISTICAL_THRESHOLD,
    dtype: torch.dtype = torch.float64,
) -> tuple[list[ConvSiteReport], LayerSolution]:
    """Solve every layer and site of a conv net (pure function of the statistics + shapes).

    Every ``S`` (layers) and ``S_growth`` (sites) gets its own factor, a Cholesky where no
    eigenvalue is cut off, else an ``eigh`` (:func:`~growenv.tiny.covariance_solvers`; each on
    one CPU thread,
    :func:`~growenv.threads.single_threaded`, and with several threads side by side,
    :func:`~growenv.threads.parallel_map`), unless the projection already computed it;
    results come back in the statistics' dtype.
    """
    workers = cpu_workers(stats.S[0].device)
    with single_threaded(stats.S[0].device):
        return _solve_conv(stats, net, rtol, atol, statistical_threshold, dtype, workers)


def _solve_conv(stats, net, rtol, atol, statistical_threshold, dtype, workers):
    out_dtype = stats.S[0].dtype
    if rtol is None:
        rtol = tiny.default_rtol(out_dtype)
    if stats.projection is not None and stats.projection != (rtol, atol, dtype):
        raise ValueError(
            "stats: the cross terms were projected with (rtol, atol, dtype) = "
            f"{stats.projection}, but the solve uses {(rtol, atol, dtype)}; solve with the "
            "same settings or compute the statistics with raw_correlation=True"
        )
    num_layers, num_sites = len(stats.S), len(stats.S_growth)
    mats = [*stats.S, *stats.S_growth]
    known = stats.spectra or {}  # from the projection, same settings (checked above)
    todo = [i for i in range(len(mats)) if i not in known]
    factors = dict(known)
    todo_factors = tiny.covariance_solvers([mats[i].to(dtype) for i in todo], rtol, atol, workers)
    factors.update(zip(todo, todo_factors, strict=True))
    dws, gains = [], []
    for l in range(num_layers):
        dw, gain = tiny.best_update_spectral(factors[l], stats.M[l].to(dtype))
        dws.append(dw)
        gains.append(gain)
    gain_t = torch.stack(gains)
    psi = tiny.bottleneck(torch.stack([v.to(dtype) for v in stats.vv]), gain_t)
    shapes = [tuple(w.shape) for w in net.weights]
    weights = [
        dw[:, :-1].reshape(shape).to(out_dtype) for dw, shape in zip(dws, shapes, strict=True)
    ]
    biases = [dw[:, -1].to(out_dtype) for dw in dws]
    layers = LayerSolution(weights, biases, gain_t.to(out_dtype))

    def neurons(j: int) -> tiny.LazyNeurons:  # singular values now, vectors on demand
        n = _projected(stats, j, dws[j + 1], dtype)
        return tiny.LazyNeurons(factors[num_layers + j], n, out_dtype)

    solutions = parallel_map(neurons, range(num_sites), workers)
    sites: list[ConvSiteReport] = []
    for j, sol in enumerate(solutions):
        kind = stats.site_kernels[j]
        sites.append(
            site_report(
                ConvSiteReport,
                j,
                shapes[j][0],
                sol,
                gains[j + 1],
                psi[j + 1],
                net.slope0,
                statistical_threshold,
                (weights[j + 1], biases[j + 1]),
                None if stats.C[j] is None else stats.P[j],
                out_dtype,
                kernel=kind,
                in_shape=shapes[j][1:],
                out_kernel=1 if kind == "linear" else shapes[j + 1][-1],
            )  # fmt: skip
        )
    return sites, layers


def conv_bottleneck(
    net,
    x: torch.Tensor | Iterable,
    y: torch.Tensor | None = None,
    loss: str | PerSampleLoss = "mse",
    kernel: str = "full",
    *,
    batch_size: int | None = None,
    rtol: float | None = None,
    atol: float = tiny.DEFAULT_ATOL,
    statistical_threshold: float = tiny.DEFAULT_STATISTICAL_THRESHOLD,
    solve_dtype: torch.dtype = torch.float64,
    input_factors: tiny.CovarianceFactors | None = None,
    raw_correlation: bool = False,
) -> BottleneckReport:
    """Expressivity bottleneck of every stage of a :class:`~growenv.nets.conv.net.GrowingConvNet`.

    One forward+backward pass (streamed in ``batch_size`` chunks, or an iterable of
    ``(x, y)`` batches with ``y=None``) and one solve; the same report as
    :func:`~growenv.bottleneck` (``report.sites[j]`` for stage ``j``; ``.candidate(K)``
    gives a :class:`ConvGrowthCandidate`).

    Parameters
    ----------
    kernel
        ``"full"``: a new channel gets a full k x k kernel in the next conv (gromo's
        ``FullConv2dGrowingModule``); ``"restricted"``: only the centre tap (gromo's
        ``RestrictedConv2dGrowingModule``, whose growth covariance is the unweighted one;
        here it counts the positions the centre tap reads, identical for stride 1 with
        ``padding = k // 2``). The last stage's site, feeding the head, is linear.
    loss, rtol, atol, statistical_threshold, solve_dtype
        As :func:`~growenv.bottleneck`.
    input_factors
        Accepted for a common signature with :func:`~growenv.bottleneck` and ignored (the
        first conv's covariance is cheap: it correlates only the image channels);
        ``report.input_factors`` is ``None``.
    raw_correlation
        Keep every site's raw correlation ``P`` (``site.raw_correlation``, needed by
        ``candidate(method="gradmax")`` and ``linear_gain``). By default a one-batch call
        computes the conv -> conv sites' ``N`` directly from the residual gradient (cheaper,
        same numbers) and those sites have ``raw_correlation=None``.
    """
    del input_factors
    check_tolerances(rtol, atol, statistical_threshold)
    stats = compute_conv_statistics(
        net,
        x,
        y,
        loss=loss,
        kernel=kernel,
        batch_size=batch_size,
        raw_correlation=raw_correlation,
        rtol=rtol,
        atol=atol,
        solve_dtype=solve_dtype,
    )
    sites, layers = solve_conv(stats, net, rtol, atol, statistical_threshold, solve_dtype)
    return BottleneckReport(sites, layers, stats.loss, stats.num_samples, stats)


# ------------------------------------------------------------------ preview / apply / search
def conv_next_preactivation(
    net, candidate: GrowthCandidate, h_in: torch.Tensor, gammas: torch.Tensor
) -> torch.Tensor:
    """Pre-activation of layer ``site + 1`` with the candidate applied at each amplitude.

    ``h_in``: input of conv ``site`` (n, C, H, W). Returns (G, n, C', H', W') or, for the
    last stage, the head output (G, n, out).
    """
    site = candidate.site
    stage = net.stages[site]
    hidden = net.stage_output(_conv(h_in, net.weights[site], net.biases[site], stage), site)
    z = _conv(h_in, candidate.in_weight.to(h_in), candidate.in_bias.to(h_in), stage)
    root = gammas.clamp(min=0).sqrt()
    omega = candidate.out_weight.to(h_in)
    upd = candidate.update_weight
    w, b = net.weights[site + 1], net.biases[site + 1]
    if site + 1 < net.num_sites:
        shape = (-1, 1, 1, 1, 1)
        new = net.stage_output(root.view(shape) * z, site)  # (G, n, K, H, W)
        nxt = net.stages[site + 1]
        out = _conv(hidden, w, b, nxt) + root.view(shape) * _conv(new, omega, None, nxt)
        if upd is not None:
            delta = _conv(hidden, upd.to(h_in), candidate.update_bias.to(h_in), nxt)
            out = out + gammas.view(shape) * delta
        shift = omega.sum((1, 2, 3)).view(1, 1, -1, 1, 1)
    else:
        shape = (-1, 1, 1)
        new = global_average(net.stage_output(root.view(-1, 1, 1, 1, 1) * z, site))  # (G, n, K)
        f = global_average(hidden)
        out = F.linear(f, w, b) + root.view(shape) * (new @ omega.T)
        if upd is not None:
            out = out + gammas.view(shape) * F.linear(
                f, upd.to(h_in), candidate.update_bias.to(h_in)
            )
        shift = omega.sum(1).view(1, 1, -1)
    if net.sigma0 != 0.0:
        out = out - (root * net.sigma0).view(shape) * shift
    return out


def _chunk(net, x: torch.Tensor, site: int, max_elements: int) -> int:
    """Amplitudes per chunk: one batched pass stays below ``max_elements`` per activation."""
    sizes = net.grid_sizes((int(x.shape[2]), int(x.shape[3])))
    widest = max(
        w.shape[0] * s[0] * s[1] for w, s in zip(net.weights[site:-1], sizes[site:], strict=False)
    )
    return max(1, max_elements // max(1, x.shape[0] * widest))


def _previews(net, candidate, x: torch.Tensor, gammas: torch.Tensor, max_elements: int):
    """Net outputs (G, n, out) for every amplitude, in chunks of amplitudes."""
    site = candidate.site
    h_in = net.forward_prefix(x, site)
    step = _chunk(net, x, site, max_elements)
    outs = []
    for start in range(0, gammas.shape[0], step):
        pre = conv_next_preactivation(net, candidate, h_in, gammas[start : start + step])
        outs.append(net.forward_suffix(pre, site + 1))
    return torch.cat(outs, 0)


def conv_extended_forward(
    net,
    candidate: GrowthCandidate,
    x: torch.Tensor,
    gamma: float | torch.Tensor = 1.0,
    max_elements: int = MAX_ELEMENTS,
) -> torch.Tensor:
    """Preview: the net's output with the candidate applied, without changing the net.

    ``gamma`` a float (returns (n, out)) or a 1-D tensor of G amplitudes (returns
    (G, n, out), evaluated batched, in chunks of amplitudes below ``max_elements``).
    """
    net.check_input(x)
    check_candidate(net, candidate)
    gammas = as_gammas(gamma, x)
    with torch.no_grad():
        out = _previews(net, candidate, x, gammas, max_elements)
    return out[0] if torch.as_tensor(gamma).ndim == 0 else out


@torch.no_grad()
def conv_apply_growth(
    net,
    candidate: GrowthCandidate,
    gamma: float | torch.Tensor = 1.0,
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Apply ``candidate`` to ``net`` in place with amplitude ``gamma``.

    Equals :func:`conv_extended_forward` at the same ``gamma``; optimizer state of the grown
    parameters is kept (zero-padded for the new entries).
    """
    apply_candidate(net, candidate, gamma, optimizer)  # the shared in-place update


def conv_amplitude_search(
    net,
    candidate: GrowthCandidate,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str | PerSampleLoss = "mse",
    gammas: torch.Tensor | None = None,
    max_elements: int = MAX_ELEMENTS,
) -> AmplitudeResult:
    """The amplitude minimising the real mean loss on ``(x, y)`` (as
    :func:`~growenv.amplitude_search`): the forward up to the grown stage is shared, the rest
    runs batched over amplitudes (in chunks below ``max_elements``). ``gamma = 0`` is always
    evaluated, so ``loss_drop >= 0``."""
    loss_fn, y, gammas = search_setup(net, candidate, x, y, loss, gammas)
    with torch.no_grad():
        losses = loss_fn(_previews(net, candidate, x, gammas, max_elements), y).mean(-1)
    return best_amplitude(losses, gammas)
