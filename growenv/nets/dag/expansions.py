"""Every expansion of a GrowingDAG (new edge, new node, wider node) from one statistics pass.

All candidates' ``S``, ``M`` and ``N`` are blocks of the one covariance ``E[X X^T]`` of all
node activations, the cross-correlation ``E[X V^T]`` with every node's desired move, and the
residual cross-correlation ``E[X v_perp^T] = E[X V^T] - E[X X^T] dW^T`` (``dW`` every node's
best update written over the full activation vector); see :mod:`.statistics`. For node ``v``
with in-edge sources ``s_1 .. s_m``: ``B_v = [b_s1; ...; b_sm; 1]``, ``S_v``, ``M_v``,
``dW*_v = (S_v^+ M_v)^T``, ``d_v = <M_v, S_v^+ M_v>``, ``Psi_v = E||v_v||^2 - d_v``.

* **edge u -> v** (absent, no path ``v -> u``, ``u != out``, ``v != in``): the best update of
  ``v`` over ``B_v`` enlarged by ``b_u``; gain ``d`` over the enlarged inputs (exactly
  ``-dL/dgamma`` at 0: the new edge is part of the linear update).
* **node u -> new -> v** (no path ``v -> u``): K neurons with input ``[b_u; 1]`` and output into
  ``v``: SVD of ``S_u^{-1/2} N``, ``N = E[[b_u; 1] v_perp_v^T]``; gain ``d_v + sigma'(0) sum
  lambda^2`` over the significant ``lambda`` (TINY's score, as for MLP sites).
* **widen w** (hidden, with out-edges): K neurons with input ``B_w`` and outputs into every
  target ``t`` of ``w``: the same SVD with ``N = E[B_w [v_perp_t1; v_perp_t2; ...]^T]``; gain
  ``sum_t d_t + sigma'(0) sum lambda^2``.

Which pairs are offered: every pair that keeps the graph acyclic (gromo's
``GrowingDAG.find_possible_extensions`` offers the same: targets that are not ancestors of
the source), rather than only pairs ordered by one fixed topological order, which would hide
valid expansions between unrelated nodes depending on tie-breaking. gromo also drops new
nodes ``u -> new -> v`` where a one-hop path ``u -> w -> v`` already exists; we keep them
(their gain decides) and let policies restrict the space.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from growenv import tiny
from growenv.amplitude import AmplitudeResult, amplitude_grid, best_amplitude
from growenv.losses import PerSampleLoss, prepare_target, resolve_loss
from growenv.nets.dag import neuron_fit
from growenv.nets.dag.net import IN, OUT, GrowingDAG, descendants
from growenv.nets.dag.neuron_fit import FittedNeurons
from growenv.nets.dag.statistics import (
    DagLayout,
    DagStatistics,
    block,
    dag_statistics,
    residual_correlation,
)
from growenv.threads import single_threaded

KINDS = ("edge", "node", "widen")
FITS = ("tiny", "nonlinear")
START_SIGNAL = 1e-6  # see fit_inputs
SCALINGS = ("sqrt", "output")


# --------------------------------------------------------------------------- results
@dataclass
class NodeReport:
    """Best update of node ``name``'s in-edges and its bottleneck.

    ``update_weights[s]`` (width, width_s) for every in-edge source ``s``; ``update_bias``
    (width,); ``update_gain`` ``d``; ``bottleneck`` ``Psi = E||v_perp||^2``.
    """

    name: str
    width: int
    update_gain: torch.Tensor
    bottleneck: torch.Tensor
    update_weights: dict[str, torch.Tensor] = field(repr=False)
    update_bias: torch.Tensor = field(repr=False)


@dataclass
class DagCandidate:
    """What a preview or an apply needs (see :func:`apply_growth` for the amplitude rule).

    ``edge_weight``: the new edge's weight (kind ``"edge"``, scaled by ``gamma``).
    ``in_weights`` (source -> (K, width_s)), ``in_bias`` (K,), ``out_weights``
    (target -> (width_t, K)): the new neurons (kinds ``"node"``, ``"widen"``). ``scaling``:
    how ``gamma`` scales them: ``"sqrt"`` (TINY's neurons, ``sqrt(gamma)`` each side) or
    ``"output"`` (fitted neurons: the in-weights as fitted, ``gamma`` on the out-weights, so
    the whole move is linear in ``gamma``). ``update_weights`` ((s, t) -> (width_t,
    width_s), existing edges) and ``update_biases`` (t -> (width_t,)): the best update of
    the affected nodes (``gamma``).
    ``widths`` and ``in_sources`` (the in-edge sources of each updated node): the graph
    around the candidate when it was computed (checked on use).
    """

    kind: str
    source: str
    target: str | None
    edge_weight: torch.Tensor | None
    in_weights: dict[str, torch.Tensor]
    in_bias: torch.Tensor | None
    out_weights: dict[str, torch.Tensor]
    update_weights: dict[tuple[str, str], torch.Tensor]
    update_biases: dict[str, torch.Tensor]
    eigenvalues: torch.Tensor
    widths: dict[str, int] = field(repr=False)
    in_sources: dict[str, tuple[str, ...]] = field(repr=False, default_factory=dict)
    scaling: str = "sqrt"

    @property
    def num_neurons(self) -> int:
        return 0 if self.in_bias is None else self.in_bias.shape[0]

    @property
    def targets(self) -> list[str]:
        """Nodes whose pre-activation the candidate changes."""
        return list(dict.fromkeys([*self.update_biases, *self.out_weights]))

    def added_parameters(self) -> int:
        """Parameters the candidate adds to the net."""
        if self.kind == "edge":
            return self.edge_weight.numel()
        k = self.num_neurons
        fan = sum(w.shape[1] for w in self.in_weights.values())
        return k * (fan + 1) + sum(w.shape[0] * k for w in self.out_weights.values())

    def added_macs(self) -> int:
        """Multiply-adds per sample the candidate adds."""
        if self.kind == "edge":
            return self.edge_weight.numel()
        return sum(w.numel() for w in (*self.in_weights.values(), *self.out_weights.values()))


@dataclass
class Expansion:
    """One expansion of the graph and its TINY analysis.

    Attributes
    ----------
    kind
        ``"edge"``, ``"node"`` or ``"widen"``.
    source, target
        Node names; for ``"widen"`` the widened node is ``source`` and ``target`` is None.
    eigenvalues
        ``lambda_k`` (descending) of the new neurons (``"node"``, ``"widen"``); empty for
        edges.
    update_gain
        ``d`` of the best update that comes with it (edge: over the enlarged inputs; node:
        ``d_v``; widen: ``sum_t d_t``).
    first_order_gain
        ``update_gain + sigma'(0) sum lambda_k^2`` over the significant ``lambda_k``.
    num_significant
        Number of significant ``lambda_k`` (at least 1 where any is positive), per leading
        index of the statistics.
    """

    kind: str
    source: str
    target: str | None
    eigenvalues: torch.Tensor
    update_gain: torch.Tensor
    first_order_gain: torch.Tensor
    num_significant: torch.Tensor
    slope_at_zero: float
    inputs: tuple[tuple[str, int], ...] = field(repr=False)
    outputs: tuple[tuple[str, int], ...] = field(repr=False)
    neurons: tiny.NeuronSolution | None = field(repr=False)
    raw_correlation: torch.Tensor | None = field(repr=False)
    updates: dict[str, NodeReport] = field(repr=False)
    edge_update: tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor] | None = field(
        repr=False, default=None
    )
    source_width: int = 0  # width of the source node when solved
    fitted: FittedNeurons | None = field(repr=False, default=None)
    fitted_slopes: torch.Tensor | None = field(repr=False, default=None)
    fit_macs: int = 0  # multiply-adds of the fit (cost model of neuron_fit.fit_macs)

    @property
    def key(self) -> tuple[str, str, str | None]:
        return self.kind, self.source, self.target

    @property
    def estimated_gain(self) -> torch.Tensor:
        """The gain the default :meth:`candidate` is expected to bring, which ranks
        expansions: ``d`` plus what the fitted neurons take up of ``E||v_perp||^2``
        (``fit="nonlinear"``), else TINY's :attr:`first_order_gain`."""
        if self.fitted is not None:
            return self.update_gain + self.fitted.gain
        return self.first_order_gain

    def gain(self, num_neurons: int) -> torch.Tensor:
        """``update_gain + sigma'(0) sum_{k <= K} lambda_k^2``."""
        return tiny.first_order_gain(
            self.update_gain, self.eigenvalues, self.slope_at_zero, num_neurons
        )

    def linear_gain(self, num_neurons: int | None = None, with_update: bool = True) -> torch.Tensor:
        """Exact ``-dL/dgamma`` at ``gamma = 0`` for :meth:`candidate` (``num_neurons``).

        Edges: ``update_gain``. New neurons: ``d + sigma'(0) <P, A^T Omega^T>`` with ``P =
        E[B v^T]`` the raw correlation; it differs from TINY's :attr:`first_order_gain`
        (which fits ``v_perp``) by the cross term between the update and the new neurons.
        """
        d = self.update_gain if with_update else torch.zeros_like(self.update_gain)
        if self.kind == "edge":
            return d
        k = self._k(num_neurons)
        if self.fitted is not None:  # E[v . omega h] per neuron, from the fit's samples
            return d + self.fitted_slopes[..., :k].sum(-1)
        alpha, omega = self.neurons.alpha[..., :k, :], self.neurons.omega[..., :, :k]
        cross = (self.raw_correlation * (alpha.transpose(-1, -2) @ omega.transpose(-1, -2))).sum(
            (-1, -2)
        )
        return d + self.slope_at_zero * cross

    def _k(self, num_neurons: int | None) -> int:
        if num_neurons is None and self.fitted is not None:
            num_neurons = self.fitted.alpha.shape[-2]
        elif num_neurons is None:
            num_neurons = max(int(self.num_significant.max()), 1)
        if isinstance(num_neurons, bool) or not isinstance(num_neurons, int) or num_neurons < 1:
            raise ValueError(f"num_neurons: expected an int >= 1, got {num_neurons!r}")
        if self.fitted is not None:
            return min(num_neurons, self.fitted.alpha.shape[-2])
        return min(num_neurons, self.eigenvalues.shape[-1])

    def candidate(self, num_neurons: int | None = None, with_update: bool = True) -> DagCandidate:
        """The candidate: the new edge, or the ``num_neurons`` best neurons (TINY: default the
        significant ones, clipped to the rank; fitted: default all, the first ``num_neurons``
        of them by what each takes up), with the best update of the affected nodes
        (``with_update=False``: none)."""
        widths = dict(self.inputs) | dict(self.outputs) | {self.source: self.source_width}
        if self.kind == "edge":
            upd_w, upd_b, edge_w = self.edge_update
            v = self.target
            return DagCandidate(
                "edge",
                self.source,
                v,
                edge_w,
                {},
                None,
                {},
                {(s, v): w for s, w in upd_w.items()} if with_update else {},
                {v: upd_b} if with_update else {},
                self.eigenvalues,
                widths,
                {v: tuple(upd_w)},
            )
        k = self._k(num_neurons)
        source = self.neurons if self.fitted is None else self.fitted
        alpha, omega = source.alpha[:k], source.omega[:, :k]
        in_w: dict[str, torch.Tensor] = {}
        start = 0
        for s, w in self.inputs:
            in_w[s] = alpha[:, start : start + w]
            start += w
        out_w: dict[str, torch.Tensor] = {}
        start = 0
        for t, w in self.outputs:
            out_w[t] = omega[start : start + w]
            start += w
        upd_w: dict[tuple[str, str], torch.Tensor] = {}
        upd_b: dict[str, torch.Tensor] = {}
        if with_update:
            for t, rep in self.updates.items():
                upd_b[t] = rep.update_bias
                for s, w in rep.update_weights.items():
                    upd_w[(s, t)] = w
        return DagCandidate(
            self.kind,
            self.source,
            self.target,
            None,
            in_w,
            alpha[:, -1],
            out_w,
            upd_w,
            upd_b,
            self.eigenvalues[:k],
            widths,
            {t: tuple(rep.update_weights) for t, rep in self.updates.items()},
            "sqrt" if self.fitted is None else "output",
        )


@dataclass
class DagReport:
    """Per-node bottlenecks (``nodes``, name -> :class:`NodeReport`, every node but ``in``)
    and every expansion (``expansions``) of a net, from one statistics pass."""

    nodes: dict[str, NodeReport]
    expansions: list[Expansion]
    loss: torch.Tensor
    num_samples: int
    statistics: DagStatistics = field(repr=False)

    def expansion(self, kind: str, source: str, target: str | None = None) -> Expansion:
        """The expansion ``(kind, source, target)``, or a ``KeyError`` naming it."""
        for e in self.expansions:
            if e.key == (kind, source, target):
                return e
        raise KeyError(f"no expansion {kind} {source!r} -> {target!r} in this report")

    def table(self) -> str:
        """Plain-text table of the expansions (synchronises with the device)."""
        rows = ["kind   source -> target     lambda_1   update_gain  first_order_gain"]
        for e in self.expansions:
            lam = float(e.eigenvalues[0]) if e.eigenvalues.numel() else 0.0
            tgt = "-" if e.target is None else e.target
            rows.append(
                f"{e.kind:<6} {e.source:>6} -> {tgt:<8} {lam:9.3e}  {float(e.update_gain):11.3e}"
                f"  {float(e.first_order_gain):16.3e}"
            )
        return "\n".join(rows)


# ----------------------------------------------------------------- batched solves
def _buckets(sizes: Sequence[int]) -> list[list[int]]:
    """Indices grouped by size rounded up to a power of two (padding at most doubles)."""
    groups: dict[int, list[int]] = {}
    for i, d in enumerate(sizes):
        groups.setdefault(max(d, 1).bit_length(), []).append(i)
    return list(groups.values())


def batched_best_updates(
    s_list: Sequence[torch.Tensor], m_list: Sequence[torch.Tensor], rtol: float, atol: float
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """``dW* = (S^+ M)^T``, ``d = <M, S^+ M>`` and ``S^{-1/2}`` of every pair ``(S, M)``.

    Matrices are zero-padded (inert: zero eigenvalues are dropped) into one batched ``eigh``
    per size bucket; leading dimensions of the inputs are kept.
    """
    groups = _buckets([s.shape[-1] for s in s_list])
    dws, gains, isq, _ = tiny.best_updates_grouped(
        list(s_list), list(m_list), groups, rtol=rtol, atol=atol
    )
    return dws, gains, isq


def batched_neurons(
    inv_sqrt: Sequence[torch.Tensor], n_list: Sequence[torch.Tensor]
) -> list[tiny.NeuronSolution]:
    """TINY neurons (SVD of ``S^{-1/2} N``) of every pair, one batched SVD per size bucket."""
    groups = _buckets([max(n.shape[-2], n.shape[-1]) for n in n_list])
    return tiny.new_neurons_grouped(list(inv_sqrt), list(n_list), groups)


# ------------------------------------------------------------------------ the solve
def _allowed_pairs(layout: DagLayout, edges: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """``(u, v)``: ``u != out``, ``v != in``, ``u != v``, no path ``v -> u``."""
    desc = {v: descendants(v, edges) for v in layout.order}
    return [
        (u, v)
        for u in layout.order
        if u != OUT
        for v in layout.order
        if v != IN and u not in desc[v]
    ]


def solve(
    stats: DagStatistics,
    slope_at_zero: float,
    rtol: float | None = None,
    atol: float = tiny.DEFAULT_ATOL,
    statistical_threshold: float = tiny.DEFAULT_STATISTICAL_THRESHOLD,
    dtype: torch.dtype = torch.float64,
    kinds: Sequence[str] = KINDS,
    fit: str = "tiny",
    neurons: int | None = None,
    activation: nn.Module | None = None,
    sigma0: float = 0.0,
    fit_seed: int = 0,
    fit_iterations: int = neuron_fit.DEFAULT_ITERATIONS,
) -> tuple[dict[str, NodeReport], list[Expansion]]:
    """Node reports and every expansion of ``kinds`` from the statistics (pure function).

    Solves run in ``dtype`` and results come back in the statistics' dtype. With
    ``fit="nonlinear"`` every new-node and widening expansion also gets ``neurons`` neurons
    fitted with ``activation`` (value ``sigma0`` at 0) to its residual
    (:mod:`.neuron_fit`; the statistics must keep their samples).
    """
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"kinds: expected a subset of {KINDS}, got {k!r}")
    check_fit(fit, neurons)
    if fit == "nonlinear" and (stats.samples is None or activation is None):
        raise ValueError(
            'fit: "nonlinear" needs the statistics\' samples (dag_statistics(..., '
            "keep_samples=True)) and the activation"
        )
    layout, edges = stats.layout, list(stats.edges)
    out_dtype = stats.covariance.dtype
    if rtol is None:
        rtol = tiny.default_rtol(out_dtype)
    cov, cross = stats.covariance.to(dtype), stats.cross.to(dtype)
    widths = {v: (b - a) for v, (a, b) in layout.act.items()}
    widths.update({v: (b - a) for v, (a, b) in layout.grad.items()})
    srcs = {v: [u for u in layout.order if (u, v) in edges] for v in layout.grad}
    tgts = {u: [v for v in layout.order if (u, v) in edges] for u in layout.act}

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(out_dtype)

    # 1. every node's best update over its inputs B_v
    targets = list(layout.grad)
    rows = {v: layout.rows(srcs[v]) for v in targets}
    s_v = [block(cov, rows[v], rows[v]) for v in targets]
    m_v = [block(cross, rows[v], layout.cols([v])) for v in targets]
    dws, gains, isq = batched_best_updates(s_v, m_v, rtol, atol)
    dw = dict(zip(targets, dws, strict=True))
    gain = dict(zip(targets, gains, strict=True))
    inv_sqrt_in = dict(zip(targets, isq, strict=True))
    full = full_update(layout, rows, dw, cov, cross.shape[-1])
    q = residual_correlation(cov, cross, full)  # E[X v_perp^T], every node at once

    nodes: dict[str, NodeReport] = {}
    for v in targets:
        upd_w, start = {}, 0
        for s in srcs[v]:
            upd_w[s] = cast(dw[v][..., start : start + widths[s]])
            start += widths[s]
        nodes[v] = NodeReport(
            v,
            widths[v],
            cast(gain[v]),
            cast(tiny.bottleneck(stats.vv[v].to(dtype), gain[v])),
            upd_w,
            cast(dw[v][..., -1]),
        )

    def report(
        kind, u, v, sol, update_gain, inputs, outputs, raw, updates, edge_update=None
    ) -> Expansion:
        if sol is None:
            eig = update_gain.new_zeros((*update_gain.shape, 0))
            count = torch.zeros(update_gain.shape, dtype=torch.long, device=eig.device)
        else:
            eig = sol.eigenvalues
            count = tiny.significant_count(eig, statistical_threshold)
        fo = tiny.first_order_gain(update_gain, eig, slope_at_zero, count)
        neurons = None
        if sol is not None:
            neurons = tiny.NeuronSolution(cast(eig), cast(sol.alpha), cast(sol.omega))
        return Expansion(
            kind, u, v, cast(eig), cast(update_gain), cast(fo), count, slope_at_zero,
            inputs, outputs, neurons, None if raw is None else cast(raw), updates, edge_update,
            widths[u],
        )  # fmt: skip

    expansions: list[Expansion] = []
    pairs = _allowed_pairs(layout, edges)
    # 2. new edges: B_v enlarged by b_u
    if "edge" in kinds:
        todo = [(u, v) for u, v in pairs if (u, v) not in edges and widths[u] * widths[v] > 0]
        r_e = [layout.rows([*srcs[v], u]) for u, v in todo]
        s_e = [block(cov, r, r) for r in r_e]
        m_e = [block(cross, r, layout.cols([v])) for r, (_, v) in zip(r_e, todo, strict=True)]
        dws_e, gains_e, _ = batched_best_updates(s_e, m_e, rtol, atol)
        for (u, v), dwe, ge in zip(todo, dws_e, gains_e, strict=True):
            upd, start = {}, 0
            for s in srcs[v]:
                upd[s] = cast(dwe[..., start : start + widths[s]])
                start += widths[s]
            edge_w = cast(dwe[..., start : start + widths[u]])
            ins = ((u, widths[u]), *((s, widths[s]) for s in srcs[v]))
            expansions.append(
                report("edge", u, v, None, ge, ins, ((v, widths[v]),), None, {},
                       (upd, cast(dwe[..., -1]), edge_w))
            )  # fmt: skip
    # 3. new nodes u -> new -> v: N = E[[b_u; 1] v_perp_v^T], a block of q
    if "node" in kinds:
        todo = [(u, v) for u, v in pairs if widths[v] > 0]
        sources = sorted({u for u, _ in todo}, key=layout.order.index)
        r_u = {u: layout.rows([u]) for u in sources}
        s_u = [block(cov, r_u[u], r_u[u]) for u in sources]
        _, _, isq_u = batched_best_updates(s_u, [s[..., :0] for s in s_u], rtol, atol)
        isq_of = dict(zip(sources, isq_u, strict=True))
        n_list = [block(q, r_u[u], layout.cols([v])) for u, v in todo]
        sols = batched_neurons([isq_of[u] for u, _ in todo], n_list)
        for (u, v), sol in zip(todo, sols, strict=True):
            raw = block(cross, r_u[u], layout.cols([v]))
            expansions.append(
                report("node", u, v, sol, gain[v], ((u, widths[u]),), ((v, widths[v]),), raw,
                       {v: nodes[v]})
            )  # fmt: skip
    # 4. widen w: inputs B_w (S_w factored in step 1), residuals of all of w's targets
    if "widen" in kinds:
        todo_w = [
            w for w in layout.order if w not in (IN, OUT) and sum(widths[t] for t in tgts[w]) > 0
        ]
        n_list = [block(q, rows[w], layout.cols(tgts[w])) for w in todo_w]
        sols = batched_neurons([inv_sqrt_in[w] for w in todo_w], n_list)
        for w, sol in zip(todo_w, sols, strict=True):
            raw = block(cross, rows[w], layout.cols(tgts[w]))
            d = torch.stack([gain[t] for t in tgts[w]]).sum(0)
            ins = tuple((s, widths[s]) for s in srcs[w])
            outs = tuple((t, widths[t]) for t in tgts[w])
            expansions.append(
                report("widen", w, None, sol, d, ins, outs, raw, {t: nodes[t] for t in tgts[w]})
            )
    if fit == "nonlinear":
        x_all, v_all = stats.samples  # the fit runs in the statistics' dtype
        resid = v_all - x_all @ full.to(x_all).transpose(-1, -2)  # every node's v_perp
        todo = [e for e in expansions if e.kind != "edge"]
        if todo:
            problem = fit_inputs(
                todo, layout, srcs, tgts, x_all, v_all, resid, neurons, fit_seed,
                fit_iterations, cast,
            )  # fmt: skip
            fits = neuron_fit.fit_many(
                problem.inputs, problem.residuals, problem.starts, activation, sigma0,
                fit_iterations,
            )  # fmt: skip
            store_fits(problem, fits, activation, sigma0)
    return nodes, expansions


def full_update(
    layout: DagLayout,
    rows: dict[str, list[int]],
    updates: dict[str, torch.Tensor],
    like: torch.Tensor,
    num_cols: int,
) -> torch.Tensor:
    """Every node's best update written over the full activation vector: ``(..., O, D + 1)``
    with ``updates[v]`` (over ``v``'s input rows ``rows[v]``) in ``v``'s columns, zero
    elsewhere (leading dimensions and dtype of ``like``)."""
    full = like.new_zeros((*like.shape[:-2], num_cols, like.shape[-1]))
    for v, dw in updates.items():
        c = torch.as_tensor(layout.cols([v]), device=like.device)
        r = torch.as_tensor(rows[v], device=like.device)
        full[..., c[:, None], r[None, :]] = dw.to(full)
    return full


def check_fit(fit: str, neurons: int | None) -> None:
    """One-line errors for the ``fit`` and ``neurons`` arguments."""
    if fit not in FITS:
        raise ValueError(f"fit: expected one of {FITS}, got {fit!r}")
    if fit == "nonlinear" and (
        isinstance(neurons, bool) or not isinstance(neurons, int) or neurons < 1
    ):
        raise ValueError(
            f'neurons: fit="nonlinear" needs the neurons per growth, an int >= 1, got {neurons!r}'
        )


def _expansion_seed(seed: int, key: tuple[str, str, str | None]) -> int:
    """A seed per expansion, so that its start does not depend on which others are solved."""
    return zlib.crc32(repr((int(seed), *key)).encode()) & 0x7FFFFFFF


@dataclass
class FitProblem:
    """The neuron fits of some expansions, prepared for :func:`~.neuron_fit.fit_many`: each
    expansion's inputs ``b``, residual, raw moves ``v`` and start directions. Problems of
    several nets (same number of samples) can be fitted in one ``fit_many`` call (the lockstep
    DAG env does) and stored back with :func:`store_fits`."""

    expansions: list[Expansion]
    inputs: list[torch.Tensor]
    residuals: list[torch.Tensor]
    raws: list[torch.Tensor]
    starts: list[torch.Tensor]
    neurons: int
    iterations: int
    cast: object = field(repr=False)


def fit_inputs(
    expansions: Sequence[Expansion],
    layout: DagLayout,
    srcs: dict[str, list[str]],
    tgts: dict[str, list[str]],
    x_all: torch.Tensor,
    v_all: torch.Tensor,
    resid: torch.Tensor,
    neurons: int,
    seed: int,
    iterations: int,
    cast,
) -> FitProblem:
    """The :class:`FitProblem` of ``expansions`` (new nodes and widenings)."""
    problem = FitProblem(list(expansions), [], [], [], [], neurons, iterations, cast)
    for e in expansions:
        rows = layout.rows([e.source]) if e.kind == "node" else layout.rows(srcs[e.source])
        cols = layout.cols([e.target] if e.kind == "node" else tgts[e.source])
        b = block_cols(x_all, rows)
        problem.inputs.append(b)
        problem.residuals.append(block_cols(resid, cols))
        problem.raws.append(block_cols(v_all, cols))
        gen = torch.Generator().manual_seed(_expansion_seed(seed, e.key))
        # TINY's directions start the fit where they carry a signal: lambda^2 above a
        # millionth of the residual they could take up (else they are rounding noise)
        psi = sum(rep.bottleneck for rep in e.updates.values())
        signal = e.eigenvalues.square() > START_SIGNAL * psi.unsqueeze(-1)
        sig = int(signal.sum(-1).min()) if e.eigenvalues.numel() else 0
        tiny_alpha = None if e.neurons is None else e.neurons.alpha.to(b)
        problem.starts.append(neuron_fit.start_directions(b, tiny_alpha, sig, neurons, gen))
    return problem


def store_fits(
    problem: FitProblem, fits: Sequence[FittedNeurons], activation: nn.Module, sigma0: float
) -> None:
    """Put ``fits`` (of :func:`~.neuron_fit.fit_many` on ``problem``) into its expansions
    (:attr:`Expansion.fitted`, :attr:`Expansion.fitted_slopes`, :attr:`Expansion.fit_macs`)."""
    cast, neurons, iterations = problem.cast, problem.neurons, problem.iterations
    for e, f, b, v in zip(problem.expansions, fits, problem.inputs, problem.raws, strict=True):
        h, _ = neuron_fit.features(activation, sigma0, b, f.alpha)
        # E[v . omega_k h_k] per neuron: -dL/dgamma at 0 of each fitted neuron
        slopes = ((v @ f.omega) * h).mean(-2)
        e.fitted = FittedNeurons(cast(f.alpha), cast(f.omega), cast(f.gain))
        e.fitted_slopes = cast(slopes)
        e.fit_macs = neuron_fit.fit_macs(b.shape[-2], b.shape[-1], v.shape[-1], neurons, iterations)


def fit_problem(
    net: GrowingDAG,
    report: DagReport,
    expansions: Sequence[Expansion],
    neurons: int,
    seed: int = 0,
    iterations: int = neuron_fit.DEFAULT_ITERATIONS,
) -> FitProblem:
    """The :class:`FitProblem` that :func:`fit_neurons` solves (without solving it)."""
    check_fit("nonlinear", neurons)
    stats = report.statistics
    if stats.samples is None:
        raise ValueError("report: expected a report of bottleneck(..., keep_samples=True)")
    if tuple(net.edges) != stats.edges or DagLayout.of(net.nodes) != stats.layout:
        raise ValueError("report: the net was grown since the report was computed")
    layout, edges = stats.layout, list(stats.edges)
    srcs = {v: [u for u in layout.order if (u, v) in edges] for v in layout.grad}
    tgts = {u: [v for v in layout.order if (u, v) in edges] for u in layout.act}
    x_all, v_all = stats.samples
    dw = {
        v: torch.cat([*(r.update_weights[s] for s in srcs[v]), r.update_bias[..., None]], -1)
        for v, r in report.nodes.items()
    }
    rows = {v: layout.rows(srcs[v]) for v in dw}
    full = full_update(layout, rows, dw, x_all, v_all.shape[-1])
    resid = v_all - x_all @ full.transpose(-1, -2)
    todo = [e for e in expansions if e.kind != "edge"]
    return fit_inputs(
        todo, layout, srcs, tgts, x_all, v_all, resid, neurons, seed, iterations,
        lambda t: t.to(x_all.dtype),
    )  # fmt: skip


def fit_neurons(
    net: GrowingDAG,
    report: DagReport,
    expansions: Sequence[Expansion],
    neurons: int,
    seed: int = 0,
    iterations: int = neuron_fit.DEFAULT_ITERATIONS,
) -> None:
    """Fit ``neurons`` neurons to the residual of each of ``expansions`` (new nodes and
    widenings of ``report``; edges are skipped), in place, as ``bottleneck(...,
    fit="nonlinear")`` does for all of them: for strategies that look at a part of the
    space. ``report`` must come from ``bottleneck(..., keep_samples=True)`` (or
    ``fit="nonlinear"``) on ``net`` as it is now."""
    problem = fit_problem(net, report, expansions, neurons, seed, iterations)
    if not problem.expansions:
        return
    with single_threaded(net.device):
        fits = neuron_fit.fit_many(
            problem.inputs, problem.residuals, problem.starts, net.activation, net.sigma0,
            iterations,
        )  # fmt: skip
        store_fits(problem, fits, net.activation, net.sigma0)


def block_cols(t: torch.Tensor, cols: list[int]) -> torch.Tensor:
    """``t[..., :, cols]`` (a copy)."""
    return t.index_select(-1, torch.as_tensor(cols, dtype=torch.long, device=t.device))


def bottleneck(
    net: GrowingDAG,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str | PerSampleLoss = "mse",
    *,
    batch_size: int | None = None,
    rtol: float | None = None,
    atol: float = tiny.DEFAULT_ATOL,
    statistical_threshold: float = tiny.DEFAULT_STATISTICAL_THRESHOLD,
    solve_dtype: torch.dtype = torch.float64,
    kinds: Sequence[str] = KINDS,
    fit: str = "tiny",
    neurons: int | None = None,
    fit_seed: int = 0,
    fit_iterations: int = neuron_fit.DEFAULT_ITERATIONS,
    keep_samples: bool = False,
) -> DagReport:
    """Per-node bottlenecks and every expansion of ``net``: one forward+backward pass, one
    batched solve per kind and size bucket.

    Parameters
    ----------
    net
        A :class:`~growenv.nets.dag.net.GrowingDAG`.
    x, y
        Data (``x`` (n, in_features)); streamed in ``batch_size`` chunks if given.
    loss
        ``"mse"`` (``l_i = ||f(x_i) - y_i||^2``), ``"cross_entropy"`` or a callable.
    rtol, atol, statistical_threshold, solve_dtype
        As for :func:`growenv.bottleneck` of MLPs.
    kinds
        The expansion kinds to solve (default all).
    fit
        ``"tiny"``: new neurons in TINY's closed form (first order in the activation;
        clipped to the rank). ``"nonlinear"``: ``neurons`` neurons of every new node and
        widening fitted to the residual with the activation (:mod:`.neuron_fit`; the pass
        keeps its samples), which also sees what the linearisation cannot, e.g. a new node
        ``in -> new -> out`` once the edge ``in -> out`` exists.
    neurons, fit_seed, fit_iterations
        For ``fit="nonlinear"``: neurons per expansion, the seed of the random start
        directions (one stream per expansion), Levenberg-Marquardt steps.
    keep_samples
        Keep the pass's per-sample activations and moves in ``report.statistics`` (implied
        by ``fit="nonlinear"``), so that :func:`fit_neurons` can fit a part of the space later.
    """
    check_fit(fit, neurons)
    keep = keep_samples or fit == "nonlinear"
    stats = dag_statistics(net, x, y, loss=loss, batch_size=batch_size, keep_samples=keep)
    with single_threaded(net.device):
        nodes, expansions = solve(
            stats, net.slope0, rtol, atol, statistical_threshold, solve_dtype, kinds,
            fit, neurons, net.activation, net.sigma0, fit_seed, fit_iterations,
        )  # fmt: skip
    return DagReport(nodes, expansions, stats.loss, stats.num_samples, stats)


# --------------------------------------------------------------- preview and apply
def check_candidate(net: GrowingDAG, candidate: DagCandidate) -> None:
    """Raise a one-line ``ValueError`` unless ``candidate`` fits ``net`` as it is now."""
    if not isinstance(candidate, DagCandidate):
        raise TypeError(f"candidate: expected a DagCandidate, got {type(candidate).__name__}")
    if candidate.scaling not in SCALINGS:
        raise ValueError(
            f"candidate.scaling: expected one of {SCALINGS}, got {candidate.scaling!r}"
        )
    stale = "(was the net grown since the candidate was computed?)"
    for v, w in candidate.widths.items():
        if v not in net.nodes or net.nodes[v] != w:
            raise ValueError(f"candidate: node {v!r} is missing or has a new width {stale}")
    for t, sources in candidate.in_sources.items():
        if set(net.in_edges(t)) != set(sources):
            raise ValueError(f"candidate: the in-edges of {t!r} changed {stale}")
    for s, t in candidate.update_weights:
        if (s, t) not in net.edges:
            raise ValueError(f"candidate: edge {s!r} -> {t!r} is missing {stale}")
    if candidate.kind == "edge":
        net.check_new_edge(candidate.source, candidate.target)
    elif candidate.kind == "node":
        u, v = candidate.source, candidate.target
        if u in descendants(v, net.edges):
            raise ValueError(f"candidate: node {u!r} -> new -> {v!r} would close a cycle {stale}")
    elif candidate.kind == "widen":
        w = candidate.source
        if set(candidate.in_weights) != set(net.in_edges(w)) or set(candidate.out_weights) != set(
            net.out_edges(w)
        ):
            raise ValueError(f"candidate: the edges of {w!r} changed {stale}")
    else:
        raise ValueError(f"candidate.kind: expected one of {KINDS}, got {candidate.kind!r}")


def _gammas(gamma: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(gamma, dtype=like.dtype, device=like.device).reshape(-1)


def _base_forward(net: GrowingDAG, x: torch.Tensor) -> tuple[dict, dict]:
    """Pre-activations (every node but ``in``) and post-activations of one plain forward."""
    pre: dict[str, torch.Tensor] = {}
    post: dict[str, torch.Tensor] = {IN: x}
    for v in list(net.nodes)[1:]:
        a = net.preactivation(v, post)
        pre[v] = a
        post[v] = a if v == OUT else net.activation(a)
    return pre, post


@torch.no_grad()
def preview_outputs(
    net: GrowingDAG,
    x: torch.Tensor,
    candidates: Sequence[DagCandidate],
    gammas: torch.Tensor,
    base: tuple[dict, dict] | None = None,
) -> torch.Tensor:
    """Outputs ``(C, G, n, out)`` of the net with each candidate applied at each amplitude.

    One plain forward (``base``: ``(pre, post)`` of :func:`_base_forward`, computed if not
    given) serves every candidate: a candidate changes only the pre-activations of its
    targets and their descendants, so only those are recomputed, as changes from the plain
    forward, batched over the candidates that change each node and over the amplitudes:
    ``a_v^c = a_v + sum_{s changed} W_sv (h_s^c - h_s) + gamma t_c(v) + sqrt(gamma)
    Omega_c h_new``, with ``t_c(v)`` the update's (and new edge's) output on the plain
    activations plus its part through changed sources. A new neuron's input is never
    affected by its own candidate (its sources are not descendants of its targets). Equal to
    the plain forward of the grown net up to the order of the floating-point sums (exactly
    equal at ``gamma = 0``).
    """
    gammas = gammas.to(device=x.device, dtype=x.dtype)
    pre, post = _base_forward(net, x) if base is None else base
    num_c, num_g, n = len(candidates), gammas.shape[0], x.shape[0]
    g_ = gammas.view(-1, 1, 1)
    r_ = gammas.clamp(min=0).sqrt().view(-1, 1, 1)
    order = list(net.nodes)
    edges = net.edges
    desc: dict[str, set[str]] = {}
    changed: list[set[str]] = []
    for c in candidates:
        nodes: set[str] = set()
        for t in c.targets:
            if t not in desc:
                desc[t] = descendants(t, edges)
            nodes |= desc[t]
        changed.append(nodes)
    out = post[OUT].expand(num_c, num_g, n, net.out_features).clone()
    # dh[v]: (index of candidates changing v, (C_v, G, n, w_v) change of v's output)
    dh: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for v in order[1:]:
        idx = [ci for ci in range(num_c) if v in changed[ci]]
        if not idx:
            continue
        w = net.nodes[v]
        pos = {ci: k for k, ci in enumerate(idx)}
        da = None
        for s in net.in_edges(v):  # changes propagated through existing edges
            if s in dh:
                sidx, ds = dh[s]
                prop = F.linear(ds, net.weight(s, v))
                if da is None and len(sidx) == len(idx):  # the same candidates, same order
                    da = prop
                    continue
                if da is None:
                    da = x.new_zeros(len(idx), num_g, n, w)
                rows = torch.as_tensor([pos[int(ci)] for ci in sidx], device=x.device)
                da.index_add_(0, rows, prop)
        if da is None:
            da = x.new_zeros(len(idx), num_g, n, w)
        for k, ci in enumerate(idx):
            c = candidates[ci]
            lin = None  # the update and the new edge: scaled by gamma
            if v in c.update_biases:
                lin = c.update_biases[v].to(x).expand(n, w)
                for (s, tt), wt in c.update_weights.items():
                    if tt != v:
                        continue
                    lin = lin + F.linear(post[s], wt.to(x))
            if c.kind == "edge" and c.target == v:
                term = F.linear(post[c.source], c.edge_weight.to(x))
                lin = term if lin is None else lin + term
            if lin is not None:
                part = g_ * lin
                for (s, tt), wt in c.update_weights.items():
                    if tt == v and s in changed[ci]:  # widen: a target feeding another
                        sidx, ds = dh[s]
                        j = int((sidx == ci).nonzero()[0, 0])
                        part = part + g_ * F.linear(ds[j], wt.to(x))
                da[k] += part
            if v in c.out_weights:
                z = c.in_bias.to(x)
                for s, a in c.in_weights.items():
                    z = z + F.linear(post[s], a.to(x))
                if c.scaling == "output":  # fitted neurons: gamma on the out-weights
                    hidden = net.activation(z) - net.sigma0  # (n, K)
                    da[k] += g_ * F.linear(hidden, c.out_weights[v].to(x))
                else:
                    hidden = net.activation(r_ * z) - net.sigma0  # (G, n, K); 0 at gamma = 0
                    da[k] += r_ * F.linear(hidden, c.out_weights[v].to(x))
        sidx = torch.as_tensor(idx, device=x.device)
        da += pre[v]
        if v == OUT:
            out[sidx] = da
        else:
            dh[v] = (sidx, net.activation(da).sub_(post[v]))
    return out


def extended_forward(
    net: GrowingDAG,
    x: torch.Tensor,
    candidate: DagCandidate,
    gamma: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """Preview: the output with ``candidate`` applied at ``gamma``, the net unchanged.

    ``gamma`` a float -> (n, out); a 1-D tensor of G amplitudes -> (G, n, out). ``gamma``
    scales the best update and the new edge; new neurons by ``sqrt(gamma)`` each side (TINY)
    or ``gamma`` on their out-weights (fitted; ``candidate.scaling``).
    """
    net.check_input(x)
    if x.ndim != 2:
        raise ValueError(f"x: expected shape (n, {net.in_features}), got {tuple(x.shape)}")
    check_candidate(net, candidate)
    x = x.to(device=net.device, dtype=net.dtype)
    out = preview_outputs(net, x, [candidate], _gammas(gamma, x))[0]
    return out[0] if torch.as_tensor(gamma).ndim == 0 else out


def amplitude_search_many(
    net: GrowingDAG,
    candidates: Sequence[DagCandidate],
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str | PerSampleLoss = "mse",
    gammas: torch.Tensor | None = None,
    chunk_elements: int = 2**24,
) -> list[AmplitudeResult]:
    """The best amplitude of every candidate on ``(x, y)``: one batched preview per chunk of
    candidates (at most ``chunk_elements`` activations each), all amplitudes at once.

    Amplitudes: :func:`growenv.amplitude.amplitude_grid` (``gamma = 0`` always included, so
    ``loss_drop >= 0``); the best per candidate by :func:`growenv.amplitude.best_amplitude`.
    """
    net.check_input(x)
    for c in candidates:
        check_candidate(net, c)
    loss_fn = resolve_loss(loss)
    x = x.to(device=net.device, dtype=net.dtype)
    y = prepare_target(loss, y.to(net.device), x.shape[0], net.out_features)
    grid = amplitude_grid(gammas, x)
    per = grid.shape[0] * x.shape[0] * max(sum(net.nodes.values()), 1)
    chunk = max(1, chunk_elements // per)
    results: list[AmplitudeResult] = []
    with torch.no_grad():
        base = _base_forward(net, x)
    for i in range(0, len(candidates), chunk):
        out = preview_outputs(net, x, candidates[i : i + chunk], grid, base)
        losses = loss_fn(out, y).mean(-1)  # (C, G)
        results.extend(best_amplitude(row, grid) for row in losses)
    return results


def amplitude_search(
    net: GrowingDAG,
    candidate: DagCandidate,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str | PerSampleLoss = "mse",
    gammas: torch.Tensor | None = None,
) -> AmplitudeResult:
    """:func:`amplitude_search_many` of one candidate."""
    return amplitude_search_many(net, [candidate], x, y, loss, gammas)[0]


@torch.no_grad()
def apply_growth(
    net: GrowingDAG,
    candidate: DagCandidate,
    gamma: float | torch.Tensor = 1.0,
    optimizer: torch.optim.Optimizer | None = None,
) -> str | None:
    """Grow ``net`` in place by ``candidate`` at ``gamma`` (equals :func:`extended_forward`).

    The update and a new edge are scaled by ``gamma``, new neurons by ``sqrt(gamma)`` on
    each side (``candidate.scaling == "sqrt"``, TINY) or by ``gamma`` on their out-weights
    (``"output"``, fitted neurons); with ``sigma(0) != 0`` the targets' biases are shifted by
    minus the out-scale times ``sigma(0) sum_k omega_k`` so that the function is continuous
    in ``gamma``. Optimizer
    state is kept (grown parameters zero-padded; new ones join its first group). Returns
    the new node's name (kind ``"node"``), else None.
    """
    check_candidate(net, candidate)
    g = float(gamma.reshape(())) if isinstance(gamma, torch.Tensor) else float(gamma)
    if not math.isfinite(g) or g < 0:
        raise ValueError(f"gamma: expected a finite number >= 0, got {gamma!r}")
    root = math.sqrt(g)
    in_scale, out_scale = (1.0, g) if candidate.scaling == "output" else (root, root)
    for (s, t), w in candidate.update_weights.items():
        net.weight(s, t).add_(g * w.to(net.weight(s, t)))
    for t, b in candidate.update_biases.items():
        net.bias(t).add_(g * b.to(net.bias(t)))
    if candidate.kind == "edge":
        net.add_edge(candidate.source, candidate.target, g * candidate.edge_weight, optimizer)
        return None
    if net.sigma0 != 0.0:
        for t, om in candidate.out_weights.items():
            net.bias(t).sub_(out_scale * net.sigma0 * om.to(net.bias(t)).sum(1))
    in_w = {s: in_scale * a for s, a in candidate.in_weights.items()}
    out_w = {t: out_scale * o for t, o in candidate.out_weights.items()}
    bias = in_scale * candidate.in_bias
    if candidate.kind == "widen":
        net.widen(candidate.source, in_w, bias, out_w, optimizer)
        return None
    name = net.new_node_name()
    net.add_node(name, candidate.num_neurons, bias, optimizer)
    net.add_edge(candidate.source, name, in_w[candidate.source], optimizer)
    net.add_edge(name, candidate.target, out_w[candidate.target], optimizer)
    return name
