"""Fixed action slots of a growing DAG: every expansion a graph of at most ``max_nodes``
hidden nodes can offer, numbered once (pure functions; no env or torch imports).

Nodes are numbered by *index*, in creation order: ``0`` is ``in``, ``1 .. max_nodes`` are the
hidden nodes in the order they were created (the start graph's hidden nodes first, in its
topological order), ``max_nodes + 1`` is ``out``. An index keeps its meaning for the whole
episode (a node never moves), so slot ``s`` always means the same expansion of the same
nodes, whatever the graph grew since.

Slots, in this order (``M = max_nodes``, ``P = (M + 1)^2 - M`` pairs):

* ``0 .. P - 1``: **edge** ``i -> j`` for every pair ``(i, j)``, ``i`` in ``0 .. M``, ``j``
  in ``1 .. M + 1``, ``i != j``, ordered by ``i`` then ``j``;
* ``P .. 2P - 1``: **node** ``i -> new -> j``, the same pairs in the same order;
* ``2P .. 2P + M - 1``: **widen** ``k`` for ``k`` in ``1 .. M``.

So ``num_slots(M) = 2 (M + 1)^2 - M`` (``M = 8``: 154). A slot is *present* when the report of
the current graph offers its expansion (both nodes exist, the edge is absent, it keeps the
graph acyclic, ...); the env further masks slots by gain and budget, and "node" slots once
the graph has ``max_nodes`` hidden nodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

KINDS = ("edge", "node", "widen")
IN_INDEX = 0

__all__ = ["KINDS", "SlotLayout", "depths", "num_slots"]


def num_slots(max_nodes: int) -> int:
    """Number of slots of a layout of ``max_nodes`` hidden nodes: ``2 (M + 1)^2 - M``."""
    m = int(max_nodes)
    return 2 * (m + 1) ** 2 - m


@dataclass(frozen=True)
class SlotLayout:
    """The slot numbering of DAGs with at most ``max_nodes`` hidden nodes (module doc).

    Parameters
    ----------
    max_nodes
        Most hidden nodes (>= 1).
    """

    max_nodes: int

    def __post_init__(self) -> None:
        m = self.max_nodes
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(f"max_nodes: expected an int >= 1, got {m!r}")

    # ------------------------------------------------------------------ numbering
    @property
    def out_index(self) -> int:
        """Index of ``out``: ``max_nodes + 1``."""
        return self.max_nodes + 1

    @property
    def num_nodes(self) -> int:
        """Node indices ``0 .. max_nodes + 1``: ``max_nodes + 2``."""
        return self.max_nodes + 2

    @cached_property
    def pairs(self) -> tuple[tuple[int, int], ...]:
        """``(i, j)`` of the edge and node slots, in slot order."""
        m = self.max_nodes
        return tuple((i, j) for i in range(m + 1) for j in range(1, m + 2) if i != j)

    @cached_property
    def _pair_index(self) -> dict[tuple[int, int], int]:
        return {p: n for n, p in enumerate(self.pairs)}

    @property
    def num_slots(self) -> int:
        """All slots: :func:`num_slots` of ``max_nodes``."""
        return 2 * len(self.pairs) + self.max_nodes

    def slot(self, kind: str, source: int, target: int | None = None) -> int:
        """The slot of expansion ``(kind, source index, target index)`` (widen: no target).

        Raises
        ------
        ValueError
            One line naming the kind or the indices that no slot has.
        """
        if kind == "widen":
            if target is not None or not 1 <= source <= self.max_nodes:
                raise ValueError(
                    f"slot: widen takes a hidden node index in 1..{self.max_nodes} and no "
                    f"target, got ({source!r}, {target!r})"
                )
            return 2 * len(self.pairs) + source - 1
        if kind not in KINDS:
            raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
        n = self._pair_index.get((source, target))
        if n is None:
            raise ValueError(
                f"slot: no {kind} slot for nodes ({source!r}, {target!r}) with max_nodes="
                f"{self.max_nodes} (source in 0..{self.max_nodes}, target in "
                f"1..{self.out_index}, source != target)"
            )
        return n if kind == "edge" else len(self.pairs) + n

    def key(self, slot: int) -> tuple[str, int, int | None]:
        """``(kind, source index, target index)`` of ``slot`` (widen: target ``None``)."""
        p = len(self.pairs)
        if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < self.num_slots:
            raise ValueError(f"slot: expected an int in [0, {self.num_slots}), got {slot!r}")
        if slot < 2 * p:
            i, j = self.pairs[slot % p]
            return ("edge" if slot < p else "node"), i, j
        return "widen", slot - 2 * p + 1, None

    @cached_property
    def kinds(self) -> tuple[str, ...]:
        """Kind of every slot."""
        return tuple(self.key(s)[0] for s in range(self.num_slots))

    @cached_property
    def sources(self) -> tuple[int, ...]:
        """Source index of every slot (widen: the widened node)."""
        return tuple(self.key(s)[1] for s in range(self.num_slots))

    @cached_property
    def targets(self) -> tuple[int, ...]:
        """Target index of every slot (widen: ``-1``)."""
        return tuple(-1 if (t := self.key(s)[2]) is None else t for s in range(self.num_slots))

    # ------------------------------------------------------------------ names
    def node_names(self, hidden: Sequence[str], in_name: str = "in", out_name: str = "out"):
        """Names by index: ``[in, hidden..., None (absent)..., out]`` (length ``num_nodes``).

        Raises
        ------
        ValueError
            When there are more than ``max_nodes`` hidden nodes.
        """
        hidden = list(hidden)
        if len(hidden) > self.max_nodes:
            raise ValueError(
                f"max_nodes: expected an int >= {len(hidden)} (the graph has {len(hidden)} "
                f"hidden nodes), got {self.max_nodes}"
            )
        pad = [None] * (self.max_nodes - len(hidden))
        return [in_name, *hidden, *pad, out_name]

    def slots_of(self, expansions: Iterable[Any], names: Sequence[str | None]) -> dict[int, Any]:
        """Slot -> expansion for expansions with ``.kind``, ``.source``, ``.target`` (node
        names, widen: target ``None``), ``names`` from :meth:`node_names`.

        Raises
        ------
        ValueError
            For an expansion naming a node that has no index.
        """
        index = {name: i for i, name in enumerate(names) if name is not None}
        out: dict[int, Any] = {}
        for e in expansions:
            if e.source not in index or (e.target is not None and e.target not in index):
                raise ValueError(
                    f"expansion {e.kind} {e.source!r} -> {e.target!r}: a node without an "
                    f"index (nodes by index: {list(names)})"
                )
            target = None if e.target is None else index[e.target]
            out[self.slot(e.kind, index[e.source], target)] = e
        return out

    def describe(self, slot: int, names: Sequence[str | None] | None = None) -> str:
        """``"edge in -> h1"``, ``"node in -> new -> out"``, ``"widen h2"`` (indices ``#i``
        for nodes without a name)."""
        kind, i, j = self.key(slot)

        def name(k: int) -> str:
            n = None if names is None else names[k]
            return f"#{k}" if n is None else n

        if kind == "widen":
            return f"widen {name(i)}"
        if kind == "node":
            return f"node {name(i)} -> new -> {name(j)}"
        return f"edge {name(i)} -> {name(j)}"

    def restricted(
        self,
        node: int,
        edges: Iterable[tuple[int, int]],
    ) -> list[int]:
        """Slots of the bottleneck-restricted space of node index ``node`` (Douka et al.):
        edges and new nodes into ``node``, widening ``node`` itself, and widening every
        node ``w`` with an edge ``w -> node`` (its new neurons output into ``node``)."""
        feeders = {u for u, v in edges if v == node}
        out = []
        for s in range(self.num_slots):
            kind, i, j = self.key(s)
            if kind in ("edge", "node") and j == node:
                out.append(s)
            elif kind == "widen" and (i == node or i in feeders):
                out.append(s)
        return out


def depths(num_nodes: int, edges: Iterable[tuple[int, int]], present: Mapping[int, bool]):
    """Depth of every node index: the length of the longest path ending at it (nodes without
    in-edges and absent ones: 0)."""
    succ: dict[int, list[int]] = {}
    indeg = dict.fromkeys((i for i in range(num_nodes) if present.get(i)), 0)
    for u, v in edges:
        succ.setdefault(u, []).append(v)
        indeg[v] = indeg.get(v, 0) + 1
    depth = [0] * num_nodes
    ready = [i for i, d in indeg.items() if d == 0]
    while ready:
        u = ready.pop()
        for v in succ.get(u, []):
            depth[v] = max(depth[v], depth[u] + 1)
            indeg[v] -= 1
            if indeg[v] == 0:
                ready.append(v)
    return depth
