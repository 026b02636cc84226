"""``growenv.bottleneck``: statistics + TINY solve for every hidden site of a network."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from growenv import tiny
from growenv.growth import GrowthCandidate
from growenv.losses import PerSampleLoss
from growenv.statistics import GrowthStatistics, compute_statistics

METHODS = ("tiny", "gradmax", "random")


def _pad(t: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    return F.pad(t, (0, cols - t.shape[-1], 0, rows - t.shape[-2]))


@dataclass
class LayerSolution:
    """Best update of every linear layer: weight ``(out, in)``, bias ``(out,)``, gain ``d``."""

    update_weight: list[torch.Tensor]
    update_bias: list[torch.Tensor]
    update_gain: torch.Tensor  # (L,)


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
    alpha: torch.Tensor = field(repr=False)  # (r, in + 1) incoming weights, bias last
    omega: torch.Tensor = field(repr=False)  # (out, r)
    update_weight: torch.Tensor = field(repr=False)
    update_bias: torch.Tensor = field(repr=False)
    raw_correlation: torch.Tensor = field(repr=False)  # P = E[b_j v_{j+1}^T]

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
        cross = (self.raw_correlation * (self.alpha[:k].T @ self.omega[:, :k].T)).sum()
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
            sol = tiny.gradmax_neurons(self.raw_correlation)
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


def solve(
    stats: GrowthStatistics,
    slope_at_zero: float,
    rtol: float | None = None,
    atol: float = tiny.DEFAULT_ATOL,
    statistical_threshold: float = tiny.DEFAULT_STATISTICAL_THRESHOLD,
    dtype: torch.dtype = torch.float64,
    widths: list[int] | None = None,
) -> tuple[list[SiteReport], LayerSolution]:
    """Solve every layer and site at once (pure function of the statistics).

    All layers' ``S`` are zero-padded to one size and factorised by one batched ``eigh``;
    all sites' ``S^{-1/2} N`` by one batched ``svd`` (padding is inert: zero eigenvalues
    are dropped). Results are returned in the statistics' dtype.
    """
    out_dtype = stats.S[0].dtype
    if rtol is None:
        rtol = tiny.default_rtol(out_dtype)
    num_layers = stats.num_layers
    dims = [s.shape[-1] for s in stats.S]
    outs = [m.shape[-1] for m in stats.M]
    d_max, o_max = max(dims), max(outs)
    s_all = torch.stack([_pad(s.to(dtype), d_max, d_max) for s in stats.S])
    m_all = torch.stack([_pad(m.to(dtype), d_max, o_max) for m in stats.M])
    factors = tiny.covariance_factors(s_all, rtol=rtol, atol=atol)
    dw_all, gains = tiny.best_update(factors.pinv, m_all)  # (L, o, d), (L,)
    vv = torch.stack([v.to(dtype) for v in stats.vv])
    psi_all = tiny.bottleneck(vv, gains)

    weights = [dw_all[l, : outs[l], : dims[l] - 1].to(out_dtype) for l in range(num_layers)]
    biases = [dw_all[l, : outs[l], dims[l] - 1].to(out_dtype) for l in range(num_layers)]
    layers = LayerSolution(weights, biases, gains.to(out_dtype))

    sites: list[SiteReport] = []
    if num_layers < 2:
        return sites, layers
    p_all = torch.stack([_pad(p.to(dtype), d_max, o_max) for p in stats.P])
    c_all = torch.stack([_pad(c.to(dtype), d_max, d_max) for c in stats.C])
    n_all = tiny.projected_cross_correlation(p_all, c_all, dw_all[1:])
    sol = tiny.new_neurons(factors.inv_sqrt[:-1], n_all)
    significant = tiny.significant_count(sol.eigenvalues, statistical_threshold)
    fo_gain = tiny.first_order_gain(gains[1:], sol.eigenvalues, slope_at_zero, significant)
    for j in range(num_layers - 1):
        d_in, o_next = dims[j], outs[j + 1]
        r = min(d_in, o_next)
        sites.append(
            SiteReport(
                site=j,
                width=widths[j] if widths is not None else dims[j + 1] - 1,
                eigenvalues=sol.eigenvalues[j, :r].to(out_dtype),
                update_gain=gains[j + 1].to(out_dtype),
                bottleneck=psi_all[j + 1].to(out_dtype),
                num_significant=significant[j],
                first_order_gain=fo_gain[j].to(out_dtype),
                slope_at_zero=slope_at_zero,
                alpha=sol.alpha[j, :r, :d_in].to(out_dtype),
                omega=sol.omega[j, :o_next, :r].to(out_dtype),
                update_weight=weights[j + 1],
                update_bias=biases[j + 1],
                raw_correlation=stats.P[j],
            )
        )
    return sites, layers


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
        A :class:`~growenv.nets.GrowingMLP`.
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
    """
    checks = (("rtol", rtol), ("atol", atol), ("statistical_threshold", statistical_threshold))
    for name, value in checks:
        if name == "rtol" and value is None:
            continue
        if isinstance(value, bool) or not (isinstance(value, (int, float)) and value >= 0):
            raise ValueError(f"{name}: expected a number >= 0, got {value!r}")
    stats = compute_statistics(net, x, y, loss=loss, batch_size=batch_size)
    sites, layers = solve(
        stats,
        net.slope0,
        rtol=rtol,
        atol=atol,
        statistical_threshold=statistical_threshold,
        dtype=solve_dtype,
        widths=net.hidden_widths,
    )
    return BottleneckReport(sites, layers, stats.loss, stats.num_samples, stats)
