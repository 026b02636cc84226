"""``growenv.bottleneck``: statistics + TINY solve for every hidden site of a network."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from growenv import tiny
from growenv.losses import PerSampleLoss
from growenv.nets.mlp.growth import GrowthCandidate
from growenv.nets.mlp.statistics import GrowthStatistics, compute_statistics

METHODS = ("tiny", "gradmax", "random")


def _pad(t: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    return F.pad(t, (0, cols - t.shape[-1], 0, rows - t.shape[-2]))


@dataclass
class LayerSolution:
    """Best update of every linear layer: weight ``(out, in)``, bias ``(out,)``, gain ``d``."""

    update_weight: list[torch.Tensor]
    update_bias: list[torch.Tensor]
    update_gain: torch.Tensor  # (L,)
    # factors of the input covariance, kept where the input is wide (> PAD_LIMIT) so that
    # callers with fixed data can pass them back (``bottleneck(..., input_factors=...)``)
    input_factors: tiny.CovarianceFactors | None = None


@dataclass
class SiteReport:
    """The TINY analysis of hidden state ``site`` (the one feeding linear layer ``site + 1``).

    Attributes
    ----------
    eigenvalues
        All ``lambda_k`` (singular values of ``S^{-1/2} N``), 1-D, descending.
    update_gain
        ``d = <M, S^+ M>`` of layer ``site + 1``: first-order gain of its best update.
    bottleneck
        ``Psi = E||v_perp||^2`` at layer ``site + 1``.
    num_significant
        Number of ``lambda_k`` above the statistical threshold (>= 1 if any is positive).
    first_order_gain
        ``d + sigma'(0) sum lambda_k^2`` over the significant ``lambda_k``.
    """

    site: int
    width: int
    eigenvalues: torch.Tensor
    update_gain: torch.Tensor
    bottleneck: torch.Tensor
    num_significant: torch.Tensor
    first_order_gain: torch.Tensor
    slope_at_zero: float
    # the candidate neurons: alpha (r, in + 1) incoming weights, bias last; omega (out, r)
    # (computed on first access for conv sites, tiny.LazyNeurons)
    neurons: tiny.NeuronSolution | tiny.LazyNeurons = field(repr=False)
    update_weight: torch.Tensor = field(repr=False)
    update_bias: torch.Tensor = field(repr=False)
    # P = E[b_j v_{j+1}^T]; None where the statistics were projected in one pass
    # (conv sites, bottleneck(..., raw_correlation=False))
    raw_correlation: torch.Tensor | None = field(repr=False)

    @property
    def alpha(self) -> torch.Tensor:
        """(r, in + 1): incoming weights of the candidate neurons (bias last)."""
        return self.neurons.alpha

    @property
    def omega(self) -> torch.Tensor:
        """(out, r): outgoing weights of the candidate neurons."""
        return self.neurons.omega

    def _raw(self, what: str) -> torch.Tensor:
        if self.raw_correlation is None:
            raise ValueError(
                f"{what} needs the raw correlation P of site {self.site}, which this report "
                "does not keep: compute it with growenv.bottleneck(..., raw_correlation=True)"
            )
        return self.raw_correlation

    def gain(self, num_neurons: int) -> torch.Tensor:
        """First-order gain ``d + sigma'(0) sum_{k <= K} lambda_k^2`` with K neurons."""
        return tiny.first_order_gain(
            self.update_gain, self.eigenvalues, self.slope_at_zero, num_neurons
        )

    def linear_gain(self, num_neurons: int, with_update: bool = True) -> torch.Tensor:
        """Exact first-order decrease of the mean loss per unit amplitude.

        ``-dL/dgamma`` at ``gamma = 0`` for the candidate of :meth:`candidate`:
        ``d + sigma'(0) <P, A Omega^T>``. It differs from :attr:`first_order_gain` (TINY's
        score, which fits the residual ``v_perp``) by the cross term between the update and
        the new neurons.
        """
        k = min(num_neurons, self.eigenvalues.shape[0])
        cross = (self._raw("linear_gain") * (self.alpha[:k].T @ self.omega[:, :k].T)).sum()
        return (self.update_gain if with_update else 0.0) + self.slope_at_zero * cross

    def candidate(
        self,
        num_neurons: int | None = None,
        method: str = "tiny",
        with_update: bool = True,
        generator: torch.Generator | None = None,
    ) -> GrowthCandidate:
        """The ``num_neurons`` best new neurons (default: the significant ones).

        ``method``: ``"tiny"`` (TINY's optimal neurons), ``"gradmax"`` (zero incoming
        weights, outgoing weights from the raw gradient correlation) or ``"random"``.
        At most ``rank`` TINY/GradMax neurons exist; larger requests are clipped to it.
        """
        if num_neurons is None:
            num_neurons = max(int(self.num_significant), 1)
        if isinstance(num_neurons, bool) or not isinstance(num_neurons, int) or num_neurons < 1:
            raise ValueError(f"num_neurons: expected an int >= 1, got {num_neurons!r}")
        if method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
        if method == "tiny":
            sol = tiny.NeuronSolution(self.eigenvalues, self.alpha, self.omega)
        elif method == "gradmax":
            sol = tiny.gradmax_neurons(self._raw("method='gradmax'"))
        else:
            in_dim, out_dim = self.alpha.shape[1] - 1, self.omega.shape[0]
            sol = tiny.random_neurons(in_dim + 1, out_dim, num_neurons, self.alpha, generator)
        k = min(num_neurons, sol.alpha.shape[0])
        return GrowthCandidate(
            site=self.site,
            in_weight=sol.alpha[:k, :-1],
            in_bias=sol.alpha[:k, -1],
            out_weight=sol.omega[:, :k],
            update_weight=self.update_weight if with_update else None,
            update_bias=self.update_bias if with_update else None,
            eigenvalues=sol.eigenvalues[:k],
            method=method,
        )


@dataclass
class BottleneckReport:
    """Per-site TINY analysis of a network (``report.sites[j]`` for hidden state ``j``)."""

    sites: list[SiteReport]
    layers: LayerSolution
    loss: torch.Tensor
    num_samples: int
    statistics: GrowthStatistics = field(repr=False)
    input_factors: tiny.CovarianceFactors | None = field(default=None, repr=False)

    def table(self) -> str:
        """A plain-text table of the sites (synchronises with the device)."""
        rows = ["site  width  lambda_1   sum lam^2  update_gain  bottleneck  first_order_gain"]
        for s in self.sites:
            lam1 = float(s.eigenvalues[0]) if s.eigenvalues.numel() else 0.0
            rows.append(
                f"{s.site:>4}  {s.width:>5}  {lam1:9.3e}  {float(s.eigenvalues.pow(2).sum()):9.3e}"
                f"  {float(s.update_gain):11.3e}  {float(s.bottleneck):10.3e}"
                f"  {float(s.first_order_gain):16.3e}"
            )
        return "\n".join(rows)


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
    sizes = [s_list[i].shape[-1] for i in todo]
    for local in _groups(sizes):
        group = [todo[i] for i in local]
        d = max(s_list[i].shape[-1] for i in group)
        o = max(m_list[i].shape[-1] for i in group)
        s_pad = torch.stack([_pad(s_list[i], d, d) for i in group])
        m_pad = torch.stack([_pad(m_list[i], d, o) for i in group])
        factors = tiny.covariance_factors(s_pad, rtol=rtol, atol=atol)
        dw, gain = tiny.best_update(factors.pinv, m_pad)
        for k, i in enumerate(group):
            di, oi = s_list[i].shape[-1], m_list[i].shape[-1]
            inv_sqrt[i] = factors.inv_sqrt[k, ..., :di, :di]
            dws[i] = dw[k, ..., :oi, :di]
            gains[i] = gain[k]
        if group == [0] and s_list[0].shape[-1] > PAD_LIMIT:
            input_factors = tiny.CovarianceFactors(
                factors.pinv[0], factors.inv_sqrt[0], factors.rank[0]
            )
    return inv_sqrt, dws, gains, input_factors


def _neurons_of_sites(
    inv_sqrt: list[torch.Tensor], n_list: list[torch.Tensor]
) -> list[tiny.NeuronSolution]:
    """TINY neurons of every site, one batched SVD per size group."""
    out: list[tiny.NeuronSolution] = [None] * len(n_list)  # type: ignore[list-item]
    for group in _groups([n.shape[-2] for n in n_list]):
        d = max(n_list[i].shape[-2] for i in group)
        o = max(n_list[i].shape[-1] for i in group)
        isqrt = torch.stack([_pad(inv_sqrt[i], d, d) for i in group])
        n_pad = torch.stack([_pad(n_list[i], d, o) for i in group])
        sol = tiny.new_neurons(isqrt, n_pad)
        for k, i in enumerate(group):
            di, oi = n_list[i].shape[-2:]
            r = min(di, oi)
            out[i] = tiny.NeuronSolution(
                sol.eigenvalues[k, ..., :r], sol.alpha[k, ..., :r, :di], sol.omega[k, ..., :oi, :r]
            )
    return out


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
    solutions = _neurons_of_sites(inv_sqrt[:-1], n_list)
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


def site_report(
    cls: type[SiteReport],
    site: int,
    width: int,
    sol: tiny.NeuronSolution | tiny.LazyNeurons,
    update_gain: torch.Tensor,
    bottleneck: torch.Tensor,
    slope_at_zero: float,
    statistical_threshold: float,
    update: tuple[torch.Tensor, torch.Tensor],
    raw_correlation: torch.Tensor | None,
    out_dtype: torch.dtype,
    **extra,
) -> SiteReport:
    """A site's report (``cls``: :class:`SiteReport` or a subclass, ``extra`` its own fields)
    from its neuron solution, update gain and bottleneck: the statistically significant
    eigenvalues and the first-order gain, results cast to ``out_dtype``."""
    significant = tiny.significant_count(sol.eigenvalues, statistical_threshold)
    fo_gain = tiny.first_order_gain(update_gain, sol.eigenvalues, slope_at_zero, significant)
    return cls(
        site=site,
        width=width,
        eigenvalues=sol.eigenvalues.to(out_dtype),
        update_gain=update_gain.to(out_dtype),
        bottleneck=bottleneck.to(out_dtype),
        num_significant=significant,
        first_order_gain=fo_gain.to(out_dtype),
        slope_at_zero=slope_at_zero,
        neurons=sol
        if isinstance(sol, tiny.LazyNeurons)
        else tiny.NeuronSolution(
            sol.eigenvalues.to(out_dtype), sol.alpha.to(out_dtype), sol.omega.to(out_dtype)
        ),
        update_weight=update[0],
        update_bias=update[1],
        raw_correlation=raw_correlation,
        **extra,
    )


def check_tolerances(rtol: float | None, atol: float, statistical_threshold: float) -> None:
    """``ValueError`` naming the argument unless each is a number ``>= 0`` (``rtol`` may be
    ``None``: picked from the statistics' precision)."""
    checks = (("rtol", rtol), ("atol", atol), ("statistical_threshold", statistical_threshold))
    for name, value in checks:
        if name == "rtol" and value is None:
            continue
        if isinstance(value, bool) or not (isinstance(value, (int, float)) and value >= 0):
            raise ValueError(f"{name}: expected a number >= 0, got {value!r}")


def bottleneck(
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
    """Measure the expressivity bottleneck of every hidden site of ``net``.

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
    kernel
        For a :class:`~growenv.nets.conv.net.GrowingConvNet`: ``"full"`` (a new channel is a k×k
        kernel in and out, gromo's FullConv2dGrowingModule) or ``"restricted"`` (1×1 out).
        Ignored for MLPs.
    raw_correlation
        For a conv net: keep every site's raw correlation ``P`` (GradMax neurons and
        ``linear_gain`` need it); by default a one-batch call gets the conv -> conv sites'
        projected ``N`` directly (cheaper) and no ``P`` there. MLP reports always keep it.
    """
    from growenv.nets.conv.net import GrowingConvNet

    if isinstance(net, GrowingConvNet):
        from growenv.nets.conv.growth import conv_bottleneck

        return conv_bottleneck(
            net,
            x,
            y,
            loss,
            kernel,
            batch_size=batch_size,
            rtol=rtol,
            atol=atol,
            statistical_threshold=statistical_threshold,
            solve_dtype=solve_dtype,
            input_factors=input_factors,
            raw_correlation=raw_correlation,
        )
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
