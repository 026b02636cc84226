"""The growth strategies of Douka et al. (ESANN 2025) over a DAG report, as pure decisions.

Each strategy reads a :class:`~growenv.nets.dag.DagReport` of the net (one statistics pass:
every node's bottleneck ``Psi`` and every expansion) and returns a :class:`Decision`: the
chosen expansion, its candidate and amplitude (or no growth), and the compute it spent,
counted in multiply-adds (MACs) by phase with the cost model below. The same strategies
on the DAG env are the registered policies of :mod:`growenv.policies.dag` (``whole-space``,
``restricted``, ``bic-restricted``) and the heuristics (``greedy``, ``random``,
``round-robin``, ``annealing``).

Strategies
----------
* :func:`whole_space`: every expansion's candidate, its amplitude ``gamma`` searched on the
  search split (:func:`~growenv.nets.dag.amplitude_search_many`, one batched preview), the
  lowest loss wins -- on the selection split at the chosen ``gamma`` when one is given (the
  paper's *train-ls* / *train-gr* split), else on the search split.
* :func:`bottleneck_restricted`: the same, over the expansions that feed the node ``A*`` of
  largest ``Psi`` (:func:`restricted_expansions`).
* :func:`bic_restricted`: the restricted candidates ranked by
  ``BIC = k ln n + n ln(MSE)`` (:func:`~growenv.policies.heuristics.bic`; lower is better);
  the best one is grown (``gate=True``: only if it lowers the BIC of the current net).
* :func:`greedy_first_order` (largest estimated gain, no search over candidates),
  :func:`random_expansion` and :func:`round_robin` (kinds in turn, the best estimated gain
  within the kind): cheap baselines; the chosen candidate alone gets a ``gamma`` search.

Cost model (per call, in MACs; ``n`` the samples of the pass, ``fwd`` the net's forward MACs
per sample, ``D`` the activation rows (every node but ``out``), ``O`` the residual columns
(every node but ``in``); see :func:`statistics_macs`, :func:`solve_macs`,
:func:`preview_macs`, which live in :mod:`growenv.nets.dag.costs`, shared with the DAG
family's env accounting, and are re-exported here):

* statistics: forward and backward to the pre-activations (``2 fwd``) and the products
  ``X^T X`` and ``X^T V``: ``n (2 fwd + (D + 1)(D + 1 + O))``;
* solves: ``10 d^3`` per ``eigh`` of a ``d x d`` covariance, ``10 d o min(d, o)`` per SVD
  of a ``d x o`` matrix, ``d^2 o`` per product (the MLP family's convention,
  :mod:`growenv.nets.mlp.costs`); every node's best update and the residual correlation
  ``(D + 1)^2 O`` are always paid (``Psi`` needs them), each offered expansion's solve is
  paid by the strategies that look at it;
* search: one plain forward of the search split, then per candidate and amplitude the
  recomputation of the nodes the candidate changes (:func:`preview_macs`);
* selection: per candidate one preview at its amplitude on the selection split, and one
  plain forward there for the current loss (BIC).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from growenv.amplitude import AmplitudeResult, amplitude_grid
from growenv.losses import PerSampleLoss, prepare_target, resolve_loss
from growenv.nets.dag import (
    IN,
    KINDS,
    DagCandidate,
    DagReport,
    Expansion,
    GrowingDAG,
    amplitude_search_many,
    preview_outputs,
)
from growenv.nets.dag.costs import (
    node_solve_macs,
    parameter_count,
    preview_macs,
    solve_macs,
    statistics_macs,
)
from growenv.policies.heuristics import bic

__all__ = [
    "STRATEGIES",
    "Compute",
    "Decision",
    "bic_restricted",
    "bottleneck_restricted",
    "greedy_first_order",
    "max_bottleneck_node",
    "node_solve_macs",
    "parameter_count",
    "preview_macs",
    "random_expansion",
    "restricted_expansions",
    "round_robin",
    "selection_losses",
    "solve_macs",
    "statistics_macs",
    "whole_space",
]

Split = tuple[torch.Tensor, torch.Tensor]


# ------------------------------------------------------------------------- results
@dataclass
class Compute:
    """MACs spent by one decision, by phase."""

    statistics: int = 0
    solves: int = 0
    search: int = 0
    selection: int = 0

    @property
    def total(self) -> int:
        """All phases."""
        return self.statistics + self.solves + self.search + self.selection

    def as_dict(self) -> dict[str, int]:
        """The phases and the total."""
        return {
            "statistics": self.statistics,
            "solves": self.solves,
            "search": self.search,
            "selection": self.selection,
            "total": self.total,
        }


@dataclass
class Decision:
    """What a strategy chose and what it cost.

    Attributes
    ----------
    expansion, candidate
        The chosen expansion and its candidate (``num_neurons`` neurons, clipped to the
        rank), or None (no growth).
    gamma
        The amplitude to apply the candidate at (``nan`` without growth).
    loss
        The loss after growth the choice was made on (selection split if given, else search
        split; ``nan`` where not measured).
    compute
        MACs spent, by phase.
    considered
        Number of expansions the strategy evaluated (solved and, where it searches, previewed).
    info
        Strategy-specific facts (``"node"``: the max-``Psi`` node; ``"bic_now"``,
        ``"bic_after"``; ``"kind"``...).
    """

    expansion: Expansion | None
    candidate: DagCandidate | None
    gamma: float
    loss: float
    compute: Compute
    considered: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def grows(self) -> bool:
        """Whether the decision grows the net."""
        return self.candidate is not None


# ----------------------------------------------------------------- shared pieces
def max_bottleneck_node(report: DagReport) -> str:
    """``A* = argmax_A Psi_A`` over the nodes of the report (every node but ``in``; ties: the
    first in topological order)."""
    names = list(report.nodes)
    psi = torch.stack([report.nodes[v].bottleneck.reshape(()) for v in names])
    return names[int(torch.argmax(psi))]


def restricted_expansions(
    net: GrowingDAG, report: DagReport, node: str | None = None
) -> list[Expansion]:
    """The expansions that feed ``node`` (default :func:`max_bottleneck_node`).

    As the paper ("expanding or adding new layers that output to ``A*`` or expanding the
    node ``A*`` itself") and gromo 0.1.0's ``restrict_action_space(chosen_outputs=[A*])``:
    a new edge ``u -> A*``, a new node ``u -> new -> A*``, widening ``A*`` itself, and
    widening a node ``w`` with an edge ``w -> A*`` (its new neurons output into ``A*``).
    """
    a = max_bottleneck_node(report) if node is None else node
    feeders = set(net.in_edges(a)) if a in net.nodes and a != IN else set()
    out = []
    for e in report.expansions:
        if e.kind in ("edge", "node") and e.target == a:
            out.append(e)
        elif e.kind == "widen" and (e.source == a or e.source in feeders):
            out.append(e)
    return out


def selection_losses(
    net: GrowingDAG,
    candidates: Sequence[DagCandidate],
    gammas: Sequence[float],
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str | PerSampleLoss = "mse",
) -> torch.Tensor:
    """Mean loss on ``(x, y)`` of each candidate applied at its own amplitude: one batched
    preview per distinct amplitude."""
    loss_fn = resolve_loss(loss)
    x = x.to(device=net.device, dtype=net.dtype)
    y = prepare_target(loss, y.to(net.device), x.shape[0], net.out_features)
    out = torch.full((len(candidates),), float("inf"), dtype=torch.float64)
    groups: dict[float, list[int]] = {}
    for i, g in enumerate(gammas):
        groups.setdefault(float(g), []).append(i)
    for g, idx in groups.items():
        grid = torch.tensor([g], dtype=x.dtype, device=x.device)
        with torch.no_grad():
            pred = preview_outputs(net, x, [candidates[i] for i in idx], grid)  # (C, 1, n, o)
        vals = loss_fn(pred[:, 0], y).mean(-1).double().cpu()
        out[idx] = torch.nan_to_num(vals, nan=float("inf"))
    return out


def _searched(
    net: GrowingDAG,
    report: DagReport,
    expansions: Sequence[Expansion],
    search: Split,
    select: Split | None,
    neurons: int,
    loss: str | PerSampleLoss,
    gammas: torch.Tensor | None,
) -> tuple[list[DagCandidate], list[AmplitudeResult], torch.Tensor, Compute]:
    """Candidates of ``expansions``, their gamma searches and the loss each is judged on,
    with the compute: statistics, node solves, the expansions' solves, searches, selection."""
    compute = Compute(
        statistics=statistics_macs(net, report.num_samples),
        solves=node_solve_macs(net) + sum(solve_macs(e) for e in expansions),
    )
    cands = [e.candidate(neurons) for e in expansions]
    if not cands:
        return cands, [], torch.zeros(0, dtype=torch.float64), compute
    xs, ys = search
    results = amplitude_search_many(net, cands, xs, ys, loss, gammas)
    num_g = amplitude_grid(gammas, xs).shape[0]
    n_s = xs.shape[0]
    per = [preview_macs(net, c) for c in cands]
    compute.search = n_s * (net.macs() + num_g * sum(per))
    if select is None:
        losses = torch.stack([r.losses.min() for r in results]).double().cpu()
    else:
        xg, yg = select
        losses = selection_losses(net, cands, [float(r.gamma) for r in results], xg, yg, loss)
        compute.selection = xg.shape[0] * (net.macs() + sum(per))
    return cands, results, losses, compute


def _no_growth(compute: Compute, considered: int, **info: Any) -> Decision:
    return Decision(None, None, float("nan"), float("nan"), compute, considered, info)


def _pick(
    best: int,
    expansions: Sequence[Expansion],
    cands: Sequence[DagCandidate],
    results: Sequence[AmplitudeResult],
    losses: torch.Tensor,
    compute: Compute,
    info: dict[str, Any],
) -> Decision:
    """The decision to grow candidate ``best`` of a searched list."""
    gamma, value = float(results[best].gamma), float(losses[best])
    return Decision(expansions[best], cands[best], gamma, value, compute, len(cands), info)


def _greedy(
    net: GrowingDAG,
    report: DagReport,
    expansions: list[Expansion],
    search: Split,
    select: Split | None,
    neurons: int,
    loss: str | PerSampleLoss,
    gammas: torch.Tensor | None,
    **info: Any,
) -> Decision:
    cands, results, losses, compute = _searched(
        net, report, expansions, search, select, neurons, loss, gammas
    )
    if not cands:
        return _no_growth(compute, 0, **info)
    return _pick(int(torch.argmin(losses)), expansions, cands, results, losses, compute, info)


# -------------------------------------------------------------------- strategies
def whole_space(
    net: GrowingDAG,
    report: DagReport,
    search: Split,
    select: Split | None = None,
    neurons: int = 10,
    loss: str | PerSampleLoss = "mse",
    gammas: torch.Tensor | None = None,
) -> Decision:
    """Every expansion, each with its ``gamma`` search on ``search``; the lowest loss (on
    ``select`` at its ``gamma`` if given, else on ``search``) is grown.

    Parameters
    ----------
    net, report
        The net and its :func:`~growenv.nets.dag.bottleneck` report (statistics split).
    search, select
        ``(x, y)`` of the amplitude search and (optional) of the selection.
    neurons
        Neurons per new node / widening (clipped to the rank by ``Expansion.candidate``).
    loss, gammas
        Loss and amplitude grid of the search (default grid: 0 and 31 log-spaced values).

    Returns
    -------
    Decision
        The best expansion (None if the graph offers none).
    """
    return _greedy(net, report, list(report.expansions), search, select, neurons, loss, gammas)


def bottleneck_restricted(
    net: GrowingDAG,
    report: DagReport,
    search: Split,
    select: Split | None = None,
    neurons: int = 10,
    loss: str | PerSampleLoss = "mse",
    gammas: torch.Tensor | None = None,
) -> Decision:
    """:func:`whole_space` over :func:`restricted_expansions` (the expansions feeding the
    node of largest ``Psi``); ``info["node"]`` is that node. Same parameters."""
    a = max_bottleneck_node(report)
    exps = restricted_expansions(net, report, a)
    return _greedy(net, report, exps, search, select, neurons, loss, gammas, node=a)


def bic_restricted(
    net: GrowingDAG,
    report: DagReport,
    search: Split,
    select: Split | None = None,
    neurons: int = 10,
    loss: str = "mse",
    gammas: torch.Tensor | None = None,
    gate: bool = False,
) -> Decision:
    """The restricted candidate of lowest BIC is grown (``gate=True``: only if it lowers the
    current BIC, else no growth).

    The paper uses the BIC to choose *which* restricted expansion to grow ("a trade-off
    between performance and complexity"); its students grow at every step (~723 parameters
    after 10 growths). The gate is a stricter reading: on the teacher task it refuses every
    growth after the linear edge (21 parameters, docs/experiments/dag_teacher.md).

    ``BIC = k ln n + n ln(MSE)`` (:func:`~growenv.policies.heuristics.bic`), ``k`` the
    parameters (after growth: plus the candidate's), ``n`` the samples of the split the
    losses are measured on (``select`` if given, else ``search``), ``MSE`` the loss there
    (after growth: at the candidate's ``gamma``; now: the plain forward's). Lower is better.
    gromo 0.1.0's ``compute_BIC`` (``k log2 n - 2 log2(loss)``) treats the loss as the
    likelihood and so inverts the sign of the fit term; this one does not.
    ``info``: ``"node"``, ``"bic_now"``, ``"bic_after"`` (the best candidate's). Same
    parameters as :func:`whole_space`.
    """
    a = max_bottleneck_node(report)
    exps = restricted_expansions(net, report, a)
    cands, results, losses, compute = _searched(
        net, report, exps, search, select, neurons, loss, gammas
    )
    xs, ys = search if select is None else select
    n = xs.shape[0]
    k = parameter_count(net)
    if select is None or not cands:
        now = float(results[0].base_loss) if cands else float("nan")
    else:
        loss_fn = resolve_loss(loss)
        yp = prepare_target(loss, ys.to(net.device), n, net.out_features)
        with torch.no_grad():
            now = float(loss_fn(net(xs.to(device=net.device, dtype=net.dtype)), yp).mean())
    bic_now = bic(k, now, n, loss, net.out_features) if math.isfinite(now) else float("nan")
    if not cands:
        return _no_growth(compute, 0, node=a, bic_now=bic_now, bic_after=float("nan"))
    after = np.array(
        [
            bic(k + c.added_parameters(), float(lv), n, loss, net.out_features)
            for c, lv in zip(cands, losses.tolist(), strict=True)
        ]
    )
    best = int(np.argmin(after))
    info = {"node": a, "bic_now": bic_now, "bic_after": float(after[best])}
    if gate and not after[best] < bic_now:
        return _no_growth(compute, len(cands), **info)
    return _pick(best, exps, cands, results, losses, compute, info)


def _single(
    net: GrowingDAG,
    report: DagReport,
    expansion: Expansion | None,
    search: Split | None,
    neurons: int,
    loss: str | PerSampleLoss,
    gammas: torch.Tensor | None,
    solved: Sequence[Expansion],
    **info: Any,
) -> Decision:
    """Decision for one expansion chosen without a search over candidates: the solves of
    ``solved`` (what the choice looked at) and, if ``search`` is given, its own gamma search
    (else ``gamma = 1``)."""
    compute = Compute(
        statistics=statistics_macs(net, report.num_samples),
        solves=node_solve_macs(net) + sum(solve_macs(e) for e in solved),
    )
    if expansion is None:
        return _no_growth(compute, 0, **info)
    cand = expansion.candidate(neurons)
    gamma, value = 1.0, float("nan")
    if search is not None:
        xs, ys = search
        res = amplitude_search_many(net, [cand], xs, ys, loss, gammas)[0]
        gamma, value = float(res.gamma), float(res.losses.min())
        num_g = amplitude_grid(gammas, xs).shape[0]
        compute.search = xs.shape[0] * (net.macs() + num_g * preview_macs(net, cand))
    return Decision(expansion, cand, gamma, value, compute, 1, info)


def greedy_first_order(
    net: GrowingDAG,
    report: DagReport,
    search: Split | None = None,
    neurons: int = 10,
    loss: str | PerSampleLoss = "mse",
    gammas: torch.Tensor | None = None,
) -> Decision:
    """The expansion of largest estimated gain (:attr:`Expansion.estimated_gain`: TINY's
    first-order gain, or with fitted neurons ``d`` plus the fitted gain; no search over
    candidates; ties: the first in report order); only it gets a ``gamma`` search (on
    ``search`` if given)."""
    exps = report.expansions
    best = None
    if exps:
        fog = torch.stack([e.estimated_gain.reshape(()) for e in exps])
        best = exps[int(torch.argmax(fog))]
    return _single(net, report, best, search, neurons, loss, gammas, exps)


def random_expansion(
    net: GrowingDAG,
    report: DagReport,
    rng: np.random.Generator,
    search: Split | None = None,
    neurons: int = 10,
    loss: str | PerSampleLoss = "mse",
    gammas: torch.Tensor | None = None,
) -> Decision:
    """A uniformly random expansion (drawn with ``rng``), then its own ``gamma`` search."""
    exps = report.expansions
    best = exps[int(rng.integers(len(exps)))] if exps else None
    return _single(net, report, best, search, neurons, loss, gammas, [best] if best else [])


def round_robin(
    net: GrowingDAG,
    report: DagReport,
    step: int,
    search: Split | None = None,
    neurons: int = 10,
    loss: str | PerSampleLoss = "mse",
    gammas: torch.Tensor | None = None,
) -> Decision:
    """Kinds in turn: ``KINDS[step % 3]`` (``"edge"``, ``"node"``, ``"widen"``; the next one
    that has expansions), the largest estimated gain within it; ``info["kind"]``."""
    for j in range(len(KINDS)):
        kind = KINDS[(step + j) % len(KINDS)]
        exps = [e for e in report.expansions if e.kind == kind]
        if exps:
            fog = torch.stack([e.estimated_gain.reshape(()) for e in exps])
            best = exps[int(torch.argmax(fog))]
            return _single(net, report, best, search, neurons, loss, gammas, exps, kind=kind)
    return _single(net, report, None, search, neurons, loss, gammas, [], kind=None)


STRATEGIES = {
    "whole": whole_space,
    "restricted": bottleneck_restricted,
    "bic_restricted": bic_restricted,
    "first_order": greedy_first_order,
    "random": random_expansion,
    "round_robin": round_robin,
}
