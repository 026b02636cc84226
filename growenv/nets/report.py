"""Report types of every family: per-site TINY analysis (:class:`SiteReport`), per-layer best
updates (:class:`LayerSolution`) and the whole report (:class:`BottleneckReport`), and the
helpers every family's solve shares."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from growenv import tiny
from growenv.nets.candidate import GrowthCandidate
from growenv.nets.statistics import GrowthStatistics

METHODS = ("tiny", "gradmax", "random")


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
