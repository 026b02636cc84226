"""The DAG family (Douka et al., ESANN 2025): networks of any DAG shape of fully connected
layers, grown from the empty graph by new edges, new nodes and wider nodes in closed form."""

from growenv.nets.dag.expansions import (
    KINDS,
    DagCandidate,
    DagReport,
    Expansion,
    NodeReport,
    amplitude_search,
    amplitude_search_many,
    apply_growth,
    bottleneck,
    check_candidate,
    extended_forward,
    fit_neurons,
    preview_outputs,
    solve,
)
from growenv.nets.dag.net import IN, OUT, GrowingDAG
from growenv.nets.dag.statistics import DagLayout, DagStatistics, dag_statistics

dag_bottleneck = bottleneck

__all__ = [
    "IN",
    "KINDS",
    "OUT",
    "DagCandidate",
    "DagLayout",
    "DagReport",
    "DagStatistics",
    "Expansion",
    "GrowingDAG",
    "NodeReport",
    "amplitude_search",
    "amplitude_search_many",
    "apply_growth",
    "bottleneck",
    "check_candidate",
    "dag_bottleneck",
    "dag_statistics",
    "extended_forward",
    "fit_neurons",
    "preview_outputs",
    "solve",
]
