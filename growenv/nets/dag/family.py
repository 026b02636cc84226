"""The ``"dag"`` family: :class:`~growenv.nets.dag.net.GrowingDAG` and its verbs and costs.

A DAG grows by *expansions* (a new edge, a new node, a wider node; see
:mod:`growenv.nets.dag.expansions`), not by numbered sites of a chain, so the family has no
``"sites"`` capability: :class:`~growenv.env.growth_env.GrowthEnv` cannot drive it yet, and
the protocol's site-indexed members :meth:`DagFamily.build` and :meth:`DagFamily.search_macs`
raise ``NotImplementedError`` instead of inventing a meaning.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from growenv import tiny
from growenv.amplitude import AmplitudeResult
from growenv.data.tasks import Task
from growenv.nets.dag.expansions import (
    DagCandidate,
    DagReport,
    amplitude_search,
    apply_growth,
    bottleneck,
    extended_forward,
)
from growenv.nets.dag.net import IN, OUT, GrowingDAG
from growenv.nets.family import check_options

_NO_SITES = (
    "the 'dag' family has no numbered sites (it grows by expansions: edge, node, widen); {what}"
)


class DagFamily:
    """Fully connected DAGs (:class:`~growenv.nets.dag.net.GrowingDAG`) on flat inputs.

    The public verbs (:func:`growenv.bottleneck`, ...) call :mod:`growenv.nets.dag`'s own
    functions unchanged; the report is a :class:`~growenv.nets.dag.expansions.DagReport`
    (``report.expansions``, ``report.nodes``). The cost model counts the edges' weights
    (:meth:`GrowingDAG.macs`).
    """

    name = "dag"
    net_class = GrowingDAG
    capabilities: frozenset[str] = frozenset()
    options: Mapping[str, tuple] = {}
    #: A hidden node may have width 0 (``GrowingDAG`` accepts widths >= 0).
    min_width = 0

    def validate_options(self, **options: Any) -> dict[str, Any]:
        """``{}``: DAGs take no family options (any given one is rejected)."""
        return check_options(self.name, self.options, options)

    def prepare_task(self, task: Task) -> Task:
        """The task with inputs flattened to ``(n, in_features)``."""
        return task.flattened()

    def build(
        self,
        task: Task,
        widths: list[int],
        *,
        activation: Any = "selu",
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> GrowingDAG:
        """Not defined for DAGs: hidden ``widths`` of a chain do not say which graph to build.

        Raises
        ------
        NotImplementedError
            Always; build a :class:`~growenv.nets.dag.net.GrowingDAG` directly (e.g. the
            empty graph ``GrowingDAG(task.in_features, task.out_features)``).
        """
        raise NotImplementedError(
            _NO_SITES.format(
                what="build(task, widths) is not defined for it; construct a GrowingDAG "
                "(nodes, edges) directly"
            )
        )

    # ----------------------------------------------------------------------- verbs
    def bottleneck(
        self,
        net: GrowingDAG,
        x: Any,
        y: Any = None,
        *,
        loss: Any = "mse",
        batch_size: int | None = None,
        rtol: float | None = None,
        atol: float = tiny.DEFAULT_ATOL,
        statistical_threshold: float = tiny.DEFAULT_STATISTICAL_THRESHOLD,
        solve_dtype: torch.dtype = torch.float64,
        **ignored: Any,
    ) -> DagReport:
        """:func:`~growenv.nets.dag.expansions.bottleneck` (every expansion's statistics and
        solve). The MLP- and conv-only arguments of :func:`growenv.bottleneck`
        (``input_factors``, ``kernel``, ``raw_correlation``) are ignored, as each family
        ignores the other's."""
        return bottleneck(
            net,
            x,
            y,
            loss,
            batch_size=batch_size,
            rtol=rtol,
            atol=atol,
            statistical_threshold=statistical_threshold,
            solve_dtype=solve_dtype,
        )

    def extended_forward(
        self, net: GrowingDAG, x: torch.Tensor, candidate: DagCandidate, gamma: Any = 1.0
    ) -> torch.Tensor:
        """:func:`~growenv.nets.dag.expansions.extended_forward`."""
        return extended_forward(net, x, candidate, gamma)

    def amplitude_search(
        self,
        net: GrowingDAG,
        candidate: DagCandidate,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        loss: Any = "mse",
        gammas: torch.Tensor | None = None,
    ) -> AmplitudeResult:
        """:func:`~growenv.nets.dag.expansions.amplitude_search`."""
        return amplitude_search(net, candidate, x, y, loss, gammas)

    def apply_growth(
        self,
        net: GrowingDAG,
        candidate: DagCandidate,
        gamma: Any = 1.0,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        """:func:`~growenv.nets.dag.expansions.apply_growth` (the name of a new node is
        ``net.new_node_name()`` before the call)."""
        apply_growth(net, candidate, gamma, optimizer)

    # ------------------------------------------------------------------ cost model
    def training_macs(self, net: GrowingDAG, samples: int) -> int:
        """Forward + backward: ``3 x`` the forward multiply-adds per sample."""
        return 3 * net.macs() * samples

    def statistics_macs(self, net: GrowingDAG, samples: int, **options: Any) -> int:
        """The streamed statistics pass (the solve is not counted, as for conv).

        Per sample: the forward (:meth:`GrowingDAG.macs`), the backward to the
        pre-activations (every edge not out of ``in``: the input needs no gradient), and the
        products ``X^T X`` and ``X^T G`` of :func:`~growenv.nets.dag.statistics.dag_statistics`,
        ``D (D + O)`` with ``D`` the widths of every node but ``out`` plus the constant and
        ``O`` the widths of every node but ``in``.
        """
        self.validate_options(**options)
        nodes = net.nodes
        backward = sum(net.weight(u, v).numel() for u, v in net.edges if u != IN)
        d = sum(w for v, w in nodes.items() if v != OUT) + 1
        o = sum(w for v, w in nodes.items() if v != IN)
        return (net.macs() + backward + d * (d + o)) * samples

    def search_macs(self, net: GrowingDAG, site: int, num_gammas: int, samples: int) -> int:
        """Not defined for DAGs: a candidate is an expansion, not a site index.

        Raises
        ------
        NotImplementedError
            Always.
        """
        raise NotImplementedError(
            _NO_SITES.format(what="search_macs(net, site, ...) is not defined for it")
        )

    def evaluate_macs(self, net: GrowingDAG, samples: int) -> int:
        """One forward pass per sample (:meth:`GrowingDAG.macs`)."""
        return net.macs() * samples


FAMILY = DagFamily()
