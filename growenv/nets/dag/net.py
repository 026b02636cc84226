"""GrowingDAG: a directed acyclic graph of fully connected layers (Douka et al., ESANN 2025).

Nodes are hidden states: ``in`` (the input), ``out`` (the output) and hidden nodes. Edge
``(u, v)`` is a linear map from ``u``'s post-activation to ``v``'s pre-activation; a node's
pre-activation is the sum of its in-edges plus one bias; hidden nodes apply the activation,
``out`` does not. The empty graph (no hidden node, no edge) outputs the bias of ``out``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from growenv.activations import activation_name, resolve_activation, value_and_slope_at_zero
from growenv.nets.base import GrowingNet
from growenv.optim import grow_parameter

IN = "in"
OUT = "out"


# --------------------------------------------------------------------------- graph helpers
def topological_order(nodes: Sequence[str], edges: Iterable[tuple[str, str]]) -> list[str]:
    """Kahn's order of ``nodes``: among the ready nodes the earliest in ``nodes`` comes first,
    except that ``out`` waits until it is the last one (it has no out-edges).

    Raises
    ------
    ValueError
        If the edges contain a cycle.
    """
    rank = {v: i for i, v in enumerate(nodes)}
    indeg = dict.fromkeys(nodes, 0)
    succ: dict[str, list[str]] = {v: [] for v in nodes}
    for u, v in edges:
        succ[u].append(v)
        indeg[v] += 1
    ready = sorted((v for v in nodes if indeg[v] == 0), key=rank.__getitem__)
    order: list[str] = []
    while ready:
        pick = next((v for v in ready if v != OUT), ready[0])
        ready.remove(pick)
        order.append(pick)
        for w in succ[pick]:
            indeg[w] -= 1
            if indeg[w] == 0:
                ready.append(w)
        ready.sort(key=rank.__getitem__)
    if len(order) != len(nodes):
        stuck = [v for v in nodes if v not in order]
        raise ValueError(f"edges: the graph has a cycle through {sorted(stuck)}")
    return order


def descendants(node: str, edges: Iterable[tuple[str, str]]) -> set[str]:
    """Nodes reachable from ``node`` (``node`` included)."""
    succ: dict[str, list[str]] = {}
    for u, v in edges:
        succ.setdefault(u, []).append(v)
    seen = {node}
    stack = [node]
    while stack:
        for w in succ.get(stack.pop(), []):
            if w not in seen:
                seen.add(w)
                stack.append(w)
    return seen


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return value


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"node name: expected a non-empty str, got {name!r}")
    return name


class GrowingDAG(GrowingNet):
    """A DAG of fully connected layers whose nodes, edges and widths grow.

    Parameters
    ----------
    in_features, out_features
        Widths of the nodes ``in`` and ``out`` (always present).
    nodes
        Hidden nodes: a mapping name -> width (width >= 0). ``"in"``/``"out"`` may be
        listed only with their widths.
    edges
        Edges ``(u, v)``: a linear map from ``u``'s post-activation to ``v``'s
        pre-activation. No edge into ``in``, none out of ``out``, no duplicate, no cycle.
    activation
        Name (``"selu"``, ...) or an elementwise ``nn.Module``; applied at hidden nodes.
    device, dtype
        Where the parameters live.
    generator
        Optional ``torch.Generator`` for the initialisation: an edge into ``v`` and ``v``'s
        bias are uniform in ``±1/sqrt(fan_in)``, ``fan_in`` the summed width of ``v``'s
        in-edges' sources (as one ``nn.Linear`` over their concatenation); a node without
        in-edges gets a zero bias (the empty graph outputs zeros).

    Notes
    -----
    Parameters live in ``self.weights`` (one per edge, in creation order) and
    ``self.biases`` (one per node other than ``in``); growth keeps the ``nn.Parameter``
    objects and zero-pads their optimizer state (:func:`~growenv.optim.grow_parameter`).
    """

    family = "dag"
    site_noun = "hidden nodes"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        nodes: Mapping[str, int] | None = None,
        edges: Iterable[tuple[str, str]] | None = None,
        activation: str | nn.Module = "selu",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        in_features = _check_int("in_features", in_features, 1)
        out_features = _check_int("out_features", out_features, 1)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        self.activation = resolve_activation(activation)
        self.sigma0, self.slope0 = value_and_slope_at_zero(self.activation)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self._widths: dict[str, int] = {IN: in_features}
        self._edge_index: dict[tuple[str, str], int] = {}
        self._bias_index: dict[str, int] = {}
        self._order: list[str] = [IN, OUT]
        widths = dict(nodes or {})
        if not isinstance(nodes, Mapping | None):
            raise TypeError(f"nodes: expected a mapping name -> width, got {type(nodes).__name__}")
        for key, width in ((IN, in_features), (OUT, out_features)):
            if key in widths and widths.pop(key) != width:
                raise ValueError(f"nodes[{key!r}]: its width is {key}_features ({width})")
        self._add_node_param(OUT, out_features, device, dtype)
        for name, width in widths.items():
            self._check_new_node(name, width)
            self._add_node_param(name, width, device, dtype)
        edge_list = [self._check_edge_pair(e) for e in (edges or [])]
        seen: set[tuple[str, str]] = set()
        for e in edge_list:
            if e in seen:
                raise ValueError(f"edges: duplicate edge {e[0]!r} -> {e[1]!r}")
            seen.add(e)
        self._order = topological_order(list(self._widths), edge_list)
        fan_in: dict[str, int] = {}
        for u, v in edge_list:
            fan_in[v] = fan_in.get(v, 0) + self._widths[u]
        for u, v in edge_list:
            bound = 1.0 / math.sqrt(max(fan_in[v], 1))
            w = torch.empty(self._widths[v], self._widths[u], device=device, dtype=dtype)
            w.uniform_(-bound, bound, generator=generator)
            self._edge_index[(u, v)] = len(self.weights)
            self.weights.append(nn.Parameter(w))
        with torch.no_grad():
            for v in self._order[1:]:
                if fan_in.get(v, 0) > 0:
                    bound = 1.0 / math.sqrt(fan_in[v])
                    self.bias(v).uniform_(-bound, bound, generator=generator)

    # ------------------------------------------------------------------ checks
    def _check_new_node(self, name: object, width: object) -> None:
        name = _check_name(name)
        if name in self._widths:
            raise ValueError(f"node {name!r}: already exists")
        _check_int(f"width of node {name!r}", width, 0)

    def check_node(self, name: object, role: str = "node") -> str:
        """Return ``name`` or raise a one-line error naming the unknown node."""
        if not isinstance(name, str) or name not in self._widths:
            raise ValueError(f"{role}: unknown node {name!r}; nodes are {list(self._order)}")
        return name

    def _check_edge_pair(self, edge: object) -> tuple[str, str]:
        if not (isinstance(edge, tuple | list) and len(edge) == 2):
            raise TypeError(f"edge: expected a pair (u, v), got {edge!r}")
        u = self.check_node(edge[0], "edge source")
        v = self.check_node(edge[1], "edge target")
        if v == IN:
            raise ValueError(f"edge {u!r} -> {v!r}: no edge may enter 'in'")
        if u == OUT:
            raise ValueError(f"edge {u!r} -> {v!r}: no edge may leave 'out'")
        if u == v:
            raise ValueError(f"edge {u!r} -> {v!r}: a self-loop is a cycle")
        return u, v

    def check_new_edge(self, u: object, v: object) -> tuple[str, str]:
        """Return ``(u, v)`` if it can be added: known nodes, not into ``in``, not out of
        ``out``, absent, and no path ``v -> ... -> u`` (it would close a cycle)."""
        u, v = self._check_edge_pair((u, v))
        if (u, v) in self._edge_index:
            raise ValueError(f"edge {u!r} -> {v!r}: already exists")
        if u in descendants(v, self._edge_index):
            raise ValueError(f"edge {u!r} -> {v!r}: would create a cycle ({v!r} reaches {u!r})")
        return u, v

    def check_input(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise a clear error when ``x`` is not a float tensor of shape (..., n, in)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        if x.ndim < 2 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"{name}: expected shape (n, {self.in_features}), got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")

    # ------------------------------------------------------------------- shape
    @property
    def nodes(self) -> dict[str, int]:
        """Name -> width, in topological order (``in`` first, ``out`` last)."""
        return {v: self._widths[v] for v in self._order}

    @property
    def edges(self) -> list[tuple[str, str]]:
        """Edges ``(u, v)`` in creation order."""
        return list(self._edge_index)

    @property
    def hidden_nodes(self) -> list[str]:
        """Hidden nodes in topological order."""
        return self._order[1:-1]

    def in_edges(self, v: str) -> list[str]:
        """Sources of ``v``'s in-edges, in topological order."""
        v = self.check_node(v)
        return [u for u in self._order if (u, v) in self._edge_index]

    def out_edges(self, u: str) -> list[str]:
        """Targets of ``u``'s out-edges, in topological order."""
        u = self.check_node(u)
        return [v for v in self._order if (u, v) in self._edge_index]

    def weight(self, u: str, v: str) -> nn.Parameter:
        """Weight of edge ``(u, v)``, shape ``(width_v, width_u)``."""
        u, v = self.check_node(u, "edge source"), self.check_node(v, "edge target")
        if (u, v) not in self._edge_index:
            raise ValueError(f"edge {u!r} -> {v!r}: no such edge; edges are {self.edges}")
        return self.weights[self._edge_index[(u, v)]]

    def bias(self, v: str) -> nn.Parameter:
        """Bias of node ``v`` (not ``in``), shape ``(width_v,)``."""
        v = self.check_node(v)
        if v == IN:
            raise ValueError("node 'in': has no bias (it is the input)")
        return self.biases[self._bias_index[v]]

    @property
    def in_features(self) -> int:
        return self._widths[IN]

    @property
    def out_features(self) -> int:
        return self._widths[OUT]

    @property
    def hidden_widths(self) -> list[int]:
        return [self._widths[v] for v in self.hidden_nodes]

    @property
    def num_sites(self) -> int:
        return len(self.hidden_nodes)

    @property
    def device(self) -> torch.device:
        return self.bias(OUT).device

    @property
    def dtype(self) -> torch.dtype:
        return self.bias(OUT).dtype

    def macs(self) -> int:
        """Multiply-adds of one forward pass of one sample (the edges' weights)."""
        return sum(w.numel() for w in self.weights)

    flops = macs

    def new_node_name(self) -> str:
        """The first of ``h1, h2, ...`` not yet a node."""
        i = 1
        while f"h{i}" in self._widths:
            i += 1
        return f"h{i}"

    # ------------------------------------------------------------ description
    def describe(self) -> str:
        """A text drawing: one line per node (width, in-edges) in topological order."""
        lines = [f"GrowingDAG ({activation_name(self.activation)}), {self.num_parameters()} params"]
        for v in self._order:
            srcs = self.in_edges(v)
            arrow = f" <- {', '.join(srcs)}" if srcs else ""
            lines.append(f"  {v} [{self._widths[v]}]{arrow}")
        return "\n".join(lines)

    def depth(self) -> dict[str, int]:
        """Each node's depth: the length of the longest path from ``in`` or from a node
        without in-edges (0 for those), in topological order."""
        depth: dict[str, int] = {}
        for v in self._order:
            depth[v] = max((depth[u] + 1 for u in self.in_edges(v)), default=0)
        return depth

    def to_dot(self) -> str:
        """The graph in Graphviz DOT (``dot -Tpng``): one box per node with its width, one
        arrow per edge labelled with its weight's shape."""
        lines = ["digraph GrowingDAG {", "  rankdir=LR;", "  node [shape=box];"]
        for v, w in self._widths.items():
            lines.append(f'  "{v}" [label="{v} [{w}]"];')
        for u, v in self.edges:
            lines.append(f'  "{u}" -> "{v}" [label="{self._widths[v]}x{self._widths[u]}"];')
        lines.append("}")
        return "\n".join(lines)

    def draw(self, ax: Any = None) -> Any:
        """Draw the graph with matplotlib: nodes in columns by :meth:`depth` (``in`` left,
        ``out`` right), box labels ``name [width]``, one arrow per edge. Returns the axes
        (a new figure's if ``ax`` is None)."""
        depth = self.depth()
        depth[OUT] = max(depth.values()) + (0 if self.in_edges(OUT) else 1)
        columns: dict[int, list[str]] = {}
        for v in self._order:
            columns.setdefault(depth[v], []).append(v)
        if ax is None:
            from matplotlib.figure import Figure

            rows = max(len(c) for c in columns.values())
            size = (1.8 * len(columns) + 1, 0.8 * rows + 1.5)
            ax = Figure(figsize=size).add_subplot(1, 1, 1)
        pos = {}
        for d, names in columns.items():
            for i, v in enumerate(names):
                pos[v] = (2.0 * d, (len(names) - 1) / 2 - i)
        boxes = {
            v: ax.text(x, y, f"{v} [{self._widths[v]}]", ha="center", va="center",
                       bbox={"boxstyle": "round", "fc": "white", "lw": 0.8})
            for v, (x, y) in pos.items()
        }  # fmt: skip
        for u, v in self.edges:  # arrows clipped at the boxes
            a, b = boxes[u], boxes[v]
            arrow = {"arrowstyle": "-|>", "lw": 0.8, "color": "0.3",
                     "patchA": a.get_bbox_patch(), "patchB": b.get_bbox_patch()}  # fmt: skip
            ax.annotate("", xy=pos[v], xytext=pos[u], arrowprops=arrow)
        xs = [p[0] for p in pos.values()]
        ys = [p[1] for p in pos.values()]
        ax.set_xlim(min(xs) - 1.0, max(xs) + 1.0)
        ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
        ax.set_axis_off()
        ax.set_title(f"GrowingDAG, {self.num_parameters()} parameters")
        return ax

    def extra_repr(self) -> str:
        nodes = ", ".join(f"{v}:{w}" for v, w in self.nodes.items())
        edges = ", ".join(f"{u}->{v}" for u, v in self.edges)
        return f"nodes=({nodes}), edges=({edges}), activation={activation_name(self.activation)}"

    # ----------------------------------------------------------------- forward
    def post_activations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every node's output: ``x`` for ``in``, ``sigma(a_v)`` for hidden nodes and the
        pre-activation (the net's output) for ``out``; leading dimensions of ``x`` kept."""
        h: dict[str, torch.Tensor] = {IN: x}
        for v in self._order[1:]:
            a = self.preactivation(v, h)
            h[v] = a if v == OUT else self.activation(a)
        return h

    def preactivation(self, v: str, h: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``a_v = sum_u W_uv h_u + c_v`` from the sources' outputs ``h``."""
        a = None
        for u in self.in_edges(v):
            term = F.linear(h[u], self.weight(u, v))
            a = term if a is None else a + term
        ref = h[IN]
        bias = self.bias(v)
        if a is None:
            return bias.expand(*ref.shape[:-1], bias.shape[0])
        return a + bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post_activations(x)[OUT]

    # ---------------------------------------------------------- growth verbs
    def _add_node_param(
        self, name: str, width: int, device=None, dtype=None, bias: torch.Tensor | None = None
    ) -> nn.Parameter:
        data = torch.zeros(width, device=device, dtype=dtype) if bias is None else bias
        p = nn.Parameter(data)
        self._bias_index[name] = len(self.biases)
        self.biases.append(p)
        self._widths[name] = width
        return p

    @staticmethod
    def _register(optimizer: torch.optim.Optimizer | None, p: nn.Parameter) -> None:
        if optimizer is not None:
            optimizer.param_groups[0]["params"].append(p)

    @torch.no_grad()
    def add_node(
        self,
        name: str,
        width: int,
        bias: torch.Tensor | None = None,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        """Add hidden node ``name`` of ``width`` units (bias zero unless given), no edges.

        With ``optimizer``, its bias joins the optimizer's first parameter group (fresh state).
        """
        self._check_new_node(name, width)
        if bias is not None and tuple(bias.shape) != (width,):
            raise ValueError(f"bias: expected shape ({width},), got {tuple(bias.shape)}")
        data = None if bias is None else bias.detach().to(self.bias(OUT)).clone()
        p = self._add_node_param(name, width, self.device, self.dtype, data)
        self._order = topological_order([*self._order[:-1], name, OUT], self.edges)
        self._register(optimizer, p)

    @torch.no_grad()
    def add_edge(
        self,
        u: str,
        v: str,
        weight: torch.Tensor | None = None,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        """Add edge ``u -> v`` (zero weight unless given, shape ``(width_v, width_u)``).

        With ``optimizer``, the weight joins the optimizer's first parameter group.
        """
        u, v = self.check_new_edge(u, v)
        shape = (self._widths[v], self._widths[u])
        if weight is None:
            data = torch.zeros(shape, device=self.device, dtype=self.dtype)
        else:
            if tuple(weight.shape) != shape:
                raise ValueError(
                    f"weight: expected shape {shape} for edge {u!r} -> {v!r}, "
                    f"got {tuple(weight.shape)}"
                )
            data = weight.detach().to(self.bias(OUT)).clone()
        p = nn.Parameter(data)
        self._edge_index[(u, v)] = len(self.weights)
        self.weights.append(p)
        self._order = topological_order(self._order, self.edges)
        self._register(optimizer, p)

    @torch.no_grad()
    def widen(
        self,
        node: str,
        in_weights: Mapping[str, torch.Tensor],
        bias: torch.Tensor,
        out_weights: Mapping[str, torch.Tensor],
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        """Append ``K`` units to hidden ``node``.

        Parameters
        ----------
        node
            A hidden node.
        in_weights
            Source -> ``(K, width_source)``, one per in-edge of ``node`` (all of them).
        bias
            ``(K,)``: the new units' biases.
        out_weights
            Target -> ``(width_target, K)``, one per out-edge of ``node`` (all of them).
        optimizer
            Its state of the grown parameters is zero-padded in place.
        """
        node = self.check_node(node)
        if node in (IN, OUT):
            raise ValueError(f"node {node!r}: only hidden nodes can be widened")
        k = bias.shape[0] if bias.ndim == 1 else -1
        if k < 0:
            raise ValueError(f"bias: expected shape (K,), got {tuple(bias.shape)}")
        srcs, tgts = self.in_edges(node), self.out_edges(node)
        if set(in_weights) != set(srcs) or set(out_weights) != set(tgts):
            raise ValueError(
                f"widen {node!r}: expected in_weights for {srcs} and out_weights for {tgts}, "
                f"got {list(in_weights)} and {list(out_weights)}"
            )
        for s in srcs:
            if tuple(in_weights[s].shape) != (k, self._widths[s]):
                raise ValueError(
                    f"in_weights[{s!r}]: expected shape {(k, self._widths[s])}, "
                    f"got {tuple(in_weights[s].shape)}"
                )
        for t in tgts:
            if tuple(out_weights[t].shape) != (self._widths[t], k):
                raise ValueError(
                    f"out_weights[{t!r}]: expected shape {(self._widths[t], k)}, "
                    f"got {tuple(out_weights[t].shape)}"
                )
        for s in srcs:
            w = self.weight(s, node)
            grow_parameter(w, torch.cat([w.data, in_weights[s].to(w)], 0), optimizer)
        b = self.bias(node)
        grow_parameter(b, torch.cat([b.data, bias.to(b)], 0), optimizer)
        for t in tgts:
            w = self.weight(node, t)
            grow_parameter(w, torch.cat([w.data, out_weights[t].to(w)], 1), optimizer)
        self._widths[node] += k

    def grow(self, site: int, *args: object, **kwargs: object) -> None:
        """Not for DAGs: use :meth:`add_edge`, :meth:`add_node` or :meth:`widen`."""
        raise NotImplementedError(
            "GrowingDAG.grow: a DAG grows by add_edge, add_node and widen (named nodes), "
            "not by site index"
        )

    # ------------------------------------------------------------- conversion
    @classmethod
    def from_sequential(cls, seq: nn.Sequential) -> GrowingDAG:
        """A chain ``in -> h1 -> ... -> hL -> out`` from ``nn.Sequential(Linear, act, ...,
        Linear)`` (one activation type; weights copied)."""
        if not isinstance(seq, nn.Sequential):
            raise TypeError(f"seq: expected torch.nn.Sequential, got {type(seq).__name__}")
        modules = list(seq)
        linears, acts = modules[0::2], modules[1::2]
        if not linears or len(acts) != len(linears) - 1:
            raise ValueError("seq: expected Linear, activation, Linear, ..., Linear")
        for i, m in enumerate(linears):
            if not isinstance(m, nn.Linear) or m.bias is None:
                raise TypeError(f"seq[{2 * i}]: expected torch.nn.Linear with a bias")
        for i, m in enumerate(acts):
            if isinstance(m, nn.Linear) or type(m) is not type(acts[0]):
                raise TypeError(f"seq[{2 * i + 1}]: expected the same activation throughout")
        for i in range(1, len(linears)):
            if linears[i].in_features != linears[i - 1].out_features:
                raise ValueError(f"seq[{2 * i}]: in_features does not match the previous Linear")
        names = [IN, *(f"h{i + 1}" for i in range(len(linears) - 1)), OUT]
        first = linears[0].weight
        net = cls(
            linears[0].in_features,
            linears[-1].out_features,
            nodes={names[i + 1]: m.out_features for i, m in enumerate(linears[:-1])},
            edges=list(zip(names[:-1], names[1:], strict=True)),
            activation=acts[0] if acts else "identity",
            device=first.device,
            dtype=first.dtype,
        )
        with torch.no_grad():
            for (u, v), m in zip(zip(names[:-1], names[1:], strict=True), linears, strict=True):
                net.weight(u, v).copy_(m.weight)
                net.bias(v).copy_(m.bias)
        return net
