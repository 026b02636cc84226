"""The ``"dag"`` family: :class:`~growenv.nets.dag.net.GrowingDAG` and its verbs and costs.

A DAG grows by *expansions* (a new edge, a new node, a wider node; see
:mod:`growenv.nets.dag.expansions`), not by numbered sites of a chain: the family has the
``"expansions"`` capability instead of ``"sites"``, and :class:`~growenv.env.growth_env.GrowthEnv`
drives it through the fixed slots of :mod:`growenv.nets.dag.slots`. :meth:`DagFamily.build`
builds a chain of hidden ``widths`` (``[]``: the empty graph) and
:meth:`DagFamily.search_macs` counts the search of candidates, not of a site.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from growenv import tiny
from growenv.amplitude import AmplitudeResult
from growenv.data.tasks import Task
from growenv.nets.dag import costs, slots
from growenv.nets.dag.expansions import (
    DagCandidate,
    DagReport,
    amplitude_search,
    amplitude_search_many,
    apply_growth,
    bottleneck,
    extended_forward,
)
from growenv.nets.dag.net import IN, OUT, GrowingDAG
from growenv.nets.family import EXPANSIONS, check_options

#: The neuron fits :func:`~growenv.nets.dag.expansions.bottleneck` may take (``fit=``).
NEURON_FITS = ("tiny", "nonlinear")
#: Start graphs of the env: the empty graph (``in``, ``out``, no edge) or a chain.
START_GRAPHS = ("empty", "chain")


class DagFamily:
    """Fully connected DAGs (:class:`~growenv.nets.dag.net.GrowingDAG`) on flat inputs.

    The public verbs (:func:`growenv.bottleneck`, ...) call :mod:`growenv.nets.dag`'s own
    functions unchanged; the report is a :class:`~growenv.nets.dag.expansions.DagReport`
    (``report.expansions``, ``report.nodes``). The cost model counts the edges' weights
    (:meth:`GrowingDAG.macs`).
    """

    name = "dag"
    net_class = GrowingDAG
    capabilities: frozenset[str] = frozenset({EXPANSIONS})
    #: ``neuron_fit``: how new neurons are found (``bottleneck(..., fit=...)``);
    #: ``start_graph``: what the env's episodes start from.
    options: Mapping[str, tuple] = {"neuron_fit": NEURON_FITS, "start_graph": START_GRAPHS}
    #: A hidden node may have width 0 (``GrowingDAG`` accepts widths >= 0).
    min_width = 0

    def validate_options(self, **options: Any) -> dict[str, Any]:
        """``neuron_fit`` (``"tiny"`` or ``"nonlinear"``) and ``start_graph`` (``"empty"`` or
        ``"chain"``), checked, defaults filled in (another name is rejected)."""
        return check_options(self.name, self.options, options)

    @staticmethod
    def num_slots(max_nodes: int) -> int:
        """Action slots of graphs of at most ``max_nodes`` hidden nodes
        (:func:`growenv.nets.dag.slots.num_slots`)."""
        return slots.num_slots(max_nodes)

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
        """The chain ``in -> h1 -> ... -> hL -> out`` with hidden ``widths`` for the
        (prepared) ``task``; ``widths=[]`` is the **empty graph** (``in``, ``out``, no edge:
        the output is ``out``'s bias), the DAG env's default start.

        Static baselines of given widths (the oracle of a teacher's widths) get the chain of
        those widths, as for MLPs. Weights are initialised by ``GrowingDAG``'s rule.
        """
        widths = [int(w) for w in widths]
        names = [f"h{i + 1}" for i in range(len(widths))]
        path = [IN, *names, OUT]
        return GrowingDAG(
            task.in_features,
            task.out_features,
            nodes=dict(zip(names, widths, strict=True)),
            edges=list(zip(path[:-1], path[1:], strict=True)) if widths else [],
            activation=activation,
            device=device,
            dtype=dtype,
            generator=generator,
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
        neuron_fit: str = "tiny",
        neurons: int | None = None,
        **ignored: Any,
    ) -> DagReport:
        """:func:`~growenv.nets.dag.expansions.bottleneck` (every expansion's statistics and
        solve). ``neuron_fit`` is its ``fit`` (with ``neurons`` per growth). The MLP- and
        conv-only arguments of
        :func:`growenv.bottleneck` (``input_factors``, ``kernel``, ``raw_correlation``) and
        the env option ``start_graph`` are ignored, as each family ignores the other's."""
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
            fit=neuron_fit,
            neurons=neurons,
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

    def amplitude_search_many(
        self,
        net: GrowingDAG,
        candidates: Sequence[DagCandidate],
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        loss: Any = "mse",
        gammas: torch.Tensor | None = None,
    ) -> list[AmplitudeResult]:
        """:func:`~growenv.nets.dag.expansions.amplitude_search_many`: the best amplitude of
        every candidate, one batched preview."""
        return amplitude_search_many(net, candidates, x, y, loss, gammas)

    def apply_growth(
        self,
        net: GrowingDAG,
        candidate: DagCandidate,
        gamma: Any = 1.0,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> str | None:
        """:func:`~growenv.nets.dag.expansions.apply_growth`: returns the new node's name
        (kind ``"node"``; ``net.new_node_name()`` before the call), else None."""
        return apply_growth(net, candidate, gamma, optimizer)

    # ------------------------------------------------------------------ cost model
    def training_macs(self, net: GrowingDAG, samples: int) -> int:
        """Forward + backward: ``3 x`` the forward multiply-adds per sample
        (:func:`~growenv.nets.dag.costs.training_macs`)."""
        return costs.training_macs(net.macs(), samples)

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

    def solve_macs(self, net: GrowingDAG, report: DagReport) -> int:
        """The solve of a statistics pass: every node's best update and every expansion of
        ``report`` (:func:`~growenv.nets.dag.costs.node_solve_macs`,
        :func:`~growenv.nets.dag.costs.solve_macs`)."""
        return costs.node_solve_macs(net) + sum(costs.solve_macs(e) for e in report.expansions)

    def search_macs(
        self,
        net: GrowingDAG,
        site: DagCandidate | Sequence[DagCandidate],
        num_gammas: int,
        samples: int,
    ) -> int:
        """One batched amplitude search of the candidate(s) ``site`` (a DAG's growth location
        is an expansion, given by its candidate, not a site index): one plain forward and
        every candidate's preview per amplitude (:func:`~growenv.nets.dag.costs.search_macs`).

        Raises
        ------
        TypeError
            For a site index (a DAG has no numbered sites).
        """
        if isinstance(site, int):
            raise TypeError(
                "site: the 'dag' family has no numbered sites (it grows by expansions: edge, "
                "node, widen); pass the DagCandidate(s) searched"
            )
        return costs.search_macs(net, site, num_gammas, samples)

    def evaluate_macs(self, net: GrowingDAG, samples: int) -> int:
        """One forward pass per sample (:meth:`GrowingDAG.macs`,
        :func:`~growenv.nets.dag.costs.evaluate_macs`)."""
        return costs.evaluate_macs(net.macs(), samples)


FAMILY = DagFamily()
