"""Compute model of DAG growth in multiply-adds (MACs), shared by the family (the env's
accounting) and the paper's strategies (:mod:`growenv.policies.dag_strategies`).

``n`` the samples of a pass, ``fwd`` the net's forward MACs per sample, ``D`` the activation
rows (every node but ``out``), ``O`` the residual columns (every node but ``in``):

* statistics: forward and backward to the pre-activations (``2 fwd``) and the products
  ``X^T X`` and ``X^T V``: ``n (2 fwd + (D + 1)(D + 1 + O))`` (:func:`statistics_macs`);
* solves: ``10 d^3`` per ``eigh`` of a ``d x d`` covariance, ``10 d o min(d, o)`` per SVD of
  a ``d x o`` matrix, ``d^2 o`` per product (the MLP family's convention,
  :mod:`growenv.nets.mlp.costs`); every node's best update and the residual correlation
  ``(D + 1)^2 O`` are always paid (:func:`node_solve_macs`), each expansion's solve by whoever
  solves it (:func:`solve_macs`);
* search: one plain forward of the search split, then per candidate and amplitude the
  recomputation of the nodes the candidate changes (:func:`preview_macs`,
  :func:`search_macs`).

The same counts are known before a fit or a search runs, from the shapes of an expansion
alone (:func:`planned_fit_macs`, :func:`planned_added_macs`, :func:`planned_preview_macs`):
what a policy needs to keep its decisions within a compute bar.
"""

from __future__ import annotations

from collections.abc import Sequence

from growenv.nets.dag import neuron_fit
from growenv.nets.dag.expansions import DagCandidate, Expansion
from growenv.nets.dag.net import IN, OUT, GrowingDAG, descendants

__all__ = [
    "node_solve_macs",
    "parameter_count",
    "evaluate_macs",
    "planned_added_macs",
    "planned_fit_macs",
    "planned_preview_macs",
    "preview_macs",
    "search_macs",
    "solve_macs",
    "statistics_macs",
    "training_macs",
]


def _rows_cols(net: GrowingDAG) -> tuple[int, int]:
    widths = net.nodes
    d = sum(w for v, w in widths.items() if v != OUT)
    o = sum(w for v, w in widths.items() if v != IN)
    return d, o


def training_macs(forward_macs: int, samples: int) -> int:
    """MACs of training (forward + backward, ``3 x`` the forward) on ``samples`` samples of a
    net of ``forward_macs`` multiply-adds per sample (:meth:`GrowingDAG.macs`)."""
    return 3 * forward_macs * samples


def evaluate_macs(forward_macs: int, samples: int) -> int:
    """MACs of one forward pass over ``samples`` samples of a net of ``forward_macs``
    multiply-adds per sample."""
    return forward_macs * samples


def statistics_macs(net: GrowingDAG, samples: int) -> int:
    """MACs of one statistics pass over ``samples`` samples (module docstring)."""
    d, o = _rows_cols(net)
    return samples * (2 * net.macs() + (d + 1) * (d + 1 + o))


def _eigh(d: int) -> int:
    return 10 * d**3


def _svd(d: int, o: int) -> int:
    return 10 * d * o * min(d, o)


def node_solve_macs(net: GrowingDAG) -> int:
    """Every node's best update (``eigh`` of ``S_v`` and ``S_v^+ M_v``) and the residual
    correlation: what ``Psi`` needs."""
    d_all, o_all = _rows_cols(net)
    total = (d_all + 1) ** 2 * o_all
    for v, w in net.nodes.items():
        if v == IN:
            continue
        d = sum(net.nodes[s] for s in net.in_edges(v)) + 1
        total += _eigh(d) + d * d * w
    return total


def solve_macs(expansion: Expansion) -> int:
    """MACs of one expansion's solve: an edge's enlarged least squares, a new node's or a
    widening's ``S^{-1/2}`` and SVD, plus its neuron fit if it has one
    (:attr:`Expansion.fit_macs`, ``fit="nonlinear"``)."""
    d = sum(w for _, w in expansion.inputs) + 1
    o = sum(w for _, w in expansion.outputs)
    if expansion.kind == "edge":
        return _eigh(d) + d * d * o
    return _eigh(d) + _svd(d, o) + d * d * o + expansion.fit_macs


def preview_macs(net: GrowingDAG, candidate: DagCandidate) -> int:
    """MACs per sample and amplitude of previewing ``candidate``: the in-edges of every node
    it changes (its targets and their descendants), its update and its new weights."""
    moved = candidate.added_macs() + sum(w.numel() for w in candidate.update_weights.values())
    return moved + _recomputed_macs(net, candidate.targets)


def _recomputed_macs(net: GrowingDAG, targets: Sequence[str]) -> int:
    """MACs per sample of the in-edges of ``targets`` and of all their descendants: what a
    preview recomputes."""
    changed: set[str] = set()
    for t in targets:
        changed |= descendants(t, net.edges)
    return sum(sum(net.nodes[s] for s in net.in_edges(v)) * net.nodes[v] for v in changed)


def planned_fit_macs(
    expansion: Expansion,
    samples: int,
    neurons: int,
    iterations: int = neuron_fit.DEFAULT_ITERATIONS,
) -> int:
    """The :attr:`Expansion.fit_macs` that fitting ``neurons`` neurons to ``expansion`` over
    ``samples`` samples will record (:func:`~growenv.nets.dag.neuron_fit.fit_macs` of its
    inputs plus the constant and its outputs), known before the fit; 0 for an edge."""
    if expansion.kind == "edge":
        return 0
    d = sum(w for _, w in expansion.inputs) + 1
    o = sum(w for _, w in expansion.outputs)
    return neuron_fit.fit_macs(samples, d, o, neurons, iterations)


def planned_added_macs(expansion: Expansion, neurons: int) -> int:
    """Multiply-adds per sample that growing ``expansion`` with ``neurons`` neurons adds
    (:meth:`DagCandidate.added_macs` of its candidate; an edge's weight for an edge)."""
    if expansion.kind == "edge":
        return expansion.edge_update[2].numel()
    return neurons * sum(w for _, w in (*expansion.inputs, *expansion.outputs))


def planned_preview_macs(net: GrowingDAG, expansion: Expansion, neurons: int) -> int:
    """:func:`preview_macs` of ``expansion``'s candidate (with its best update) of ``neurons``
    neurons, from shapes alone: known before its neurons are fitted."""
    if expansion.kind == "edge":
        targets = [expansion.target]
        update = sum(w.numel() for w in expansion.edge_update[0].values())
    else:
        targets = list(dict.fromkeys([*expansion.updates, *(t for t, _ in expansion.outputs)]))
        update = sum(
            w.numel() for rep in expansion.updates.values() for w in rep.update_weights.values()
        )
    return planned_added_macs(expansion, neurons) + update + _recomputed_macs(net, targets)


def search_macs(
    net: GrowingDAG,
    candidates: DagCandidate | Sequence[DagCandidate],
    num_gammas: int,
    samples: int,
) -> int:
    """MACs of one batched amplitude search of ``candidates`` (one or several) over
    ``num_gammas`` amplitudes and ``samples`` samples: one plain forward, then every
    candidate's :func:`preview_macs` per amplitude."""
    if isinstance(candidates, DagCandidate):
        candidates = [candidates]
    per = sum(preview_macs(net, c) for c in candidates)
    return samples * (net.macs() + num_gammas * per)


def parameter_count(net: GrowingDAG) -> int:
    """Weights and biases of ``net``."""
    return sum(p.numel() for p in net.parameters())
