"""The DAG side of :class:`~growenv.env.growth_env.GrowthEnv` (``net="dag"``): slot bookkeeping
of one episode's graph, the measurement of a :class:`~growenv.nets.dag.DagReport` as
:class:`~growenv.env.episode.Measurement`, and the architecture view the episode reads.

Actions are the fixed slots of :class:`~growenv.nets.dag.slots.SlotLayout` (``max_nodes``
hidden nodes, indexed in creation order); :class:`DagSlots` keeps the episode's node order
and which expansion of the last report each slot holds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from growenv.env.episode import GraphFacts, Measurement
from growenv.env.features import TOP_K
from growenv.nets.dag import IN, OUT, DagCandidate, DagReport, Expansion, GrowingDAG
from growenv.nets.dag.slots import KINDS, SlotLayout, depths

__all__ = ["DagArchitecture", "DagSlots"]


class DagArchitecture:
    """What an :class:`~growenv.env.episode.Episode` reads of a DAG (the ``Architecture``
    protocol): hidden widths in creation order, counts, and what each slot's candidate adds
    (0 for slots the graph does not offer)."""

    def __init__(self, net: GrowingDAG, hidden: Sequence[str], slots: dict[int, Expansion]):
        self._net = net
        self._hidden = list(hidden)
        self._slots = slots
        self._cache: dict[tuple[int, int], DagCandidate] = {}

    @property
    def hidden_widths(self) -> list[int]:
        nodes = self._net.nodes
        return [nodes[v] for v in self._hidden]

    def num_parameters(self) -> int:
        return self._net.num_parameters()

    def flops(self) -> int:
        return self._net.macs()

    def _candidate(self, slot: int, num_neurons: int) -> DagCandidate | None:
        e = self._slots.get(slot)
        if e is None:
            return None
        key = (slot, int(num_neurons))
        if key not in self._cache:
            self._cache[key] = e.candidate(int(num_neurons))
        return self._cache[key]

    def added_parameters(self, site: int, num_neurons: int) -> int:
        c = self._candidate(site, num_neurons)
        return 0 if c is None else c.added_parameters()

    def added_flops(self, site: int, num_neurons: int) -> int:
        c = self._candidate(site, num_neurons)
        return 0 if c is None else c.added_macs()


class DagSlots:
    """One episode's slot bookkeeping for a DAG env.

    Parameters
    ----------
    max_nodes
        Most hidden nodes (the layout's size).

    Attributes
    ----------
    layout
        The :class:`~growenv.nets.dag.slots.SlotLayout`.
    hidden
        The hidden nodes' names in creation order (index ``i + 1`` is ``hidden[i]``).
    expansions
        Slot -> expansion of the last report that the graph offers (node slots only while
        there are fewer than ``max_nodes`` hidden nodes).
    """

    def __init__(self, max_nodes: int) -> None:
        self.layout = SlotLayout(int(max_nodes))
        self.hidden: list[str] = []
        self.expansions: dict[int, Expansion] = {}

    def start(self, net: GrowingDAG) -> None:
        """A new episode on ``net`` (its hidden nodes, in topological order, get indices
        ``1, 2, ...``)."""
        self.hidden = list(net.hidden_nodes)
        self.layout.node_names(self.hidden)  # raises when there are more than max_nodes
        self.expansions = {}

    @property
    def names(self) -> list[str | None]:
        """Node names by index (``None`` where no node has the index yet)."""
        return self.layout.node_names(self.hidden, IN, OUT)

    def grown(self, new_node: str | None) -> None:
        """Record a growth (``new_node``: the name ``apply_growth`` returned, if any)."""
        if new_node is not None:
            self.hidden.append(new_node)
        self.expansions = {}

    def describe(self, slot: int) -> str:
        """``"edge in -> h1"``, ``"node in -> new -> out"``, ``"widen h1"``."""
        return self.layout.describe(slot, self.names)

    # ------------------------------------------------------------------ measurement
    def measure(
        self,
        net: GrowingDAG,
        report: DagReport,
        *,
        train_loss: float,
        stats_loss: float,
        val_loss: float,
        val_accuracy: float | None,
        fits_pending: bool = False,
    ) -> tuple[Measurement, DagArchitecture]:
        """The measurement of ``report`` in slot order (one host transfer of the
        expansions' numbers) and the architecture view.

        ``fits_pending``: the report's neurons are TINY's and the nonlinear fits come later
        (``fit_scope="chosen"``); the mask then reads :attr:`Measurement.gain_bound`, the
        update's gain plus the targets' ``Psi`` for new nodes and widenings (what a fit can at
        most take up), so that it offers every slot the fitted report would offer."""
        layout, names = self.layout, self.names
        slots = layout.slots_of(report.expansions, names)
        if len(self.hidden) >= layout.max_nodes:  # a new node would not get an index
            slots = {s: e for s, e in slots.items() if e.kind != "node"}
        self.expansions = slots
        n = layout.num_slots
        order = sorted(slots)
        rank = max([TOP_K] + [slots[s].eigenvalues.shape[-1] for s in order])
        table = np.zeros((n, 4 + rank))
        ranks = np.zeros(n)
        if order:
            rows = []
            for s in order:
                e = slots[s]
                eig = e.eigenvalues.reshape(-1)
                head = torch.stack(
                    [
                        e.update_gain.reshape(()),
                        torch.zeros((), dtype=eig.dtype, device=eig.device),
                        e.num_significant.reshape(()).to(eig),
                        e.estimated_gain.reshape(()).to(eig),
                    ]
                )
                rows.append(torch.cat([head, torch.nn.functional.pad(eig, (0, rank - len(eig)))]))
                ranks[s] = eig.numel()
            table[order] = torch.stack(rows).double().cpu().numpy()
        node_names = list(report.nodes)
        node_host = (
            torch.stack(
                [
                    torch.stack([r.update_gain.reshape(()), r.bottleneck.reshape(())])
                    for r in report.nodes.values()
                ]
            )
            .double()
            .cpu()
            .numpy()
        )
        index = {name: i for i, name in enumerate(names) if name is not None}
        num_nodes = layout.num_nodes
        node_gain = np.full(num_nodes, np.nan)
        node_psi = np.full(num_nodes, np.nan)
        for name, (d, psi) in zip(node_names, node_host, strict=True):
            node_gain[index[name]], node_psi[index[name]] = d, psi
        widths = net.nodes
        node_width = np.array([0 if v is None else widths[v] for v in names], dtype=float)
        edges = [(index[u], index[v]) for u, v in net.edges]
        in_deg, out_deg = np.zeros(num_nodes), np.zeros(num_nodes)
        for u, v in edges:
            out_deg[u] += 1
            in_deg[v] += 1
        present_nodes = {i: names[i] is not None for i in range(num_nodes)}
        depth = np.array(depths(num_nodes, edges, present_nodes), dtype=float)
        kind = np.zeros(n)
        src_w, tgt_w, tgt_psi = np.zeros(n), np.zeros(n), np.zeros(n)
        psi_of = {v: node_psi[index[v]] for v in node_names}
        for s, e in slots.items():
            kind[s] = KINDS.index(e.kind)
            src_w[s] = widths[e.source]
            targets = [e.target] if e.target is not None else net.out_edges(e.source)
            tgt_w[s] = sum(widths[t] for t in targets)
            tgt_psi[s] = sum(psi_of[t] for t in targets)
        table[:, 1] = tgt_psi
        gain_bound = None
        if fits_pending:
            gain_bound = np.where(kind == KINDS.index("edge"), table[:, 3], table[:, 0] + tgt_psi)
        present = np.zeros(n, dtype=bool)
        present[order] = True
        graph = GraphFacts(
            kind=kind,
            source_width=src_w,
            target_width=tgt_w,
            target_bottleneck=tgt_psi,
            node_names=names,
            node_width=node_width,
            node_update_gain=node_gain,
            node_bottleneck=node_psi,
            in_degree=in_deg,
            out_degree=out_deg,
            depth=depth,
            edges=edges,
            max_nodes=layout.max_nodes,
            describe=self.describe,
        )
        measurement = Measurement.from_table(
            np.concatenate([table[:, :3], table[:, 4:]], axis=1),
            ranks,
            train_loss=train_loss,
            stats_loss=stats_loss,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            slope_at_zero=net.slope0,
            estimated_gain=table[:, 3].copy(),
            present=present,
            graph=graph,
            gain_bound=gain_bound,
        )
        return measurement, DagArchitecture(net, self.hidden, slots)

    def expansion(self, slot: int) -> Expansion:
        """The expansion slot ``slot`` holds now.

        Raises
        ------
        ValueError
            One line when the current graph does not offer it.
        """
        e = self.expansions.get(slot)
        if e is None:
            raise ValueError(
                f"site: slot {slot} ({self.describe(slot)}) is not offered by the current "
                "graph (its nodes do not exist, the edge exists or would close a cycle, or "
                "the graph has max_nodes hidden nodes)"
            )
        return e
