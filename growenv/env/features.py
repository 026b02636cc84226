"""Scale-free observation features of a growth state (pure functions of arrays).

:data:`SITE_TABLE` and :data:`GLOBAL_TABLE` (nets grown by sites), :data:`EXPANSION_TABLE`
and :data:`NODE_TABLE` (DAGs, then the same globals) are the single source of the features:
name, formula and range of every entry of the observation. The Observation Space tables of
:class:`~growenv.env.growth_env.GrowthEnv`'s docstring and of ``docs/environment.md`` are
:func:`markdown_table` of them (a test checks both). Gains are divided by the current loss so
that features mean the same thing on every task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


class Feature(NamedTuple):
    """One observation entry: its ``name``, how it is computed and the values it takes."""

    name: str
    formula: str
    range: str


#: Per-site features (one row of ``len(SITE_TABLE)`` per site slot; zero rows past the net).
SITE_TABLE = (
    Feature("present", "site present (mask)", "{0, 1}"),
    Feature("log_width", "log(1 + width)", "[0, inf)"),
    Feature("update_gain", "symlog(d / L), best-update gain", "[0, inf)"),
    Feature("lambda1_sq", "symlog(lambda_1^2 / L)", "[0, inf)"),
    Feature("lambda2_sq", "symlog(lambda_2^2 / L)", "[0, inf)"),
    Feature("lambda3_sq", "symlog(lambda_3^2 / L)", "[0, inf)"),
    Feature("sum_lambda_sq", "symlog(sum of significant lambda^2 / L)", "[0, inf)"),
    Feature("bottleneck", "symlog(Psi / L), bottleneck", "[0, inf)"),
    Feature("candidate_gain", "symlog(gain of the candidate / L)", "[0, inf)"),
    Feature("gain_per_relative_param", "symlog((gain / L) / (added params / params))", "[0, inf)"),
    Feature("relative_param_cost", "symlog(added params / params)", "[0, inf)"),
    Feature("relative_flop_cost", "symlog(added FLOPs / FLOPs)", "[0, inf)"),
    Feature(
        "significant_fraction", "significant eigenvalues / neurons per growth (<= 4)", "[0, 4]"
    ),
)
#: Global features, after the site rows.
GLOBAL_TABLE = (
    Feature("log_train_loss", "log train loss (mean of the last training phase)", "R"),
    Feature("log_val_loss", "log validation loss", "R"),
    Feature("val_accuracy", "validation accuracy (0 for regression)", "[0, 1]"),
    Feature("log_params", "log parameters", "[0, inf)"),
    Feature("log_flops", "log FLOPs (multiply-adds per sample)", "[0, inf)"),
    Feature(
        "compute_used", "compute used / max_compute (log10(MACs) / 20 without a budget)", "[0, inf)"
    ),
    Feature(
        "param_budget_left", "parameter budget left / max_params (1 without a budget)", "[0, 1]"
    ),
    Feature("step_fraction", "step / max_steps", "[0, 1]"),
    Feature("generalisation_gap", "log(val loss / train loss)", "R"),
    Feature("last_val_improvement", "symlog of the last step's relative val-loss decrease", "R"),
)
#: Per-expansion features of a DAG env (one row per slot of
#: :class:`~growenv.nets.dag.slots.SlotLayout`; zero rows for slots the graph does not offer).
EXPANSION_TABLE = (
    Feature("present", "the graph offers this expansion now", "{0, 1}"),
    Feature("kind_edge", "kind is a new edge (one-hot)", "{0, 1}"),
    Feature("kind_node", "kind is a new node (one-hot)", "{0, 1}"),
    Feature("kind_widen", "kind is widening a node (one-hot)", "{0, 1}"),
    Feature("log_source_width", "log(1 + width of the source; widen: of the node)", "[0, inf)"),
    Feature(
        "log_target_width",
        "log(1 + width of the target; widen: of its targets, summed)",
        "[0, inf)",
    ),
    Feature("update_gain", "symlog(d / L), gain of the best update that comes with it", "[0, inf)"),
    Feature("lambda1_sq", "symlog(lambda_1^2 / L) (0 for edges)", "[0, inf)"),
    Feature("lambda2_sq", "symlog(lambda_2^2 / L)", "[0, inf)"),
    Feature("lambda3_sq", "symlog(lambda_3^2 / L)", "[0, inf)"),
    Feature(
        "target_bottleneck",
        "symlog(Psi of the target / L) (widen: of its targets, summed)",
        "[0, inf)",
    ),
    Feature("estimated_gain", "symlog(estimated gain of the expansion / L)", "[0, inf)"),
    Feature("gain_per_relative_param", "symlog((gain / L) / (added params / params))", "[0, inf)"),
    Feature("relative_param_cost", "symlog(added params / params)", "[0, inf)"),
    Feature("relative_flop_cost", "symlog(added MACs / max(MACs, 1))", "[0, inf)"),
    Feature(
        "significant_fraction", "significant eigenvalues / neurons per growth (<= 4)", "[0, 4]"
    ),
    Feature("kind_grown_last", "the episode's last growth was of this kind", "{0, 1}"),
    Feature("kind_growths", "growths of this kind so far / max_steps", "[0, 1]"),
    Feature(
        "kind_idle_steps", "steps since this kind grew (never: step + 1) / max_steps", "[0, 1]"
    ),
)
#: Indices of the growth-history entries of :data:`EXPANSION_TABLE` (the last three): the
#: episode's growths by kind, from which a policy can cycle kinds (round-robin) or not.
HISTORY_COLUMNS = (16, 17, 18)
#: Per-node features of a DAG env (one row per node index: ``in``, hidden nodes in creation
#: order, zero rows for absent ones, ``out`` last), after the expansion rows.
NODE_TABLE = (
    Feature("present", "node exists", "{0, 1}"),
    Feature("log_width", "log(1 + width)", "[0, inf)"),
    Feature(
        "update_gain", "symlog(d / L), best-update gain of its in-edges (0 for in)", "[0, inf)"
    ),
    Feature("bottleneck", "symlog(Psi / L), bottleneck (0 for in)", "[0, inf)"),
    Feature("in_degree", "in-edges / (max_nodes + 1)", "[0, 1]"),
    Feature("out_degree", "out-edges / (max_nodes + 1)", "[0, 1]"),
    Feature("depth", "longest path ending at the node / (max_nodes + 1)", "[0, 1]"),
)
SITE_FEATURES = tuple(f.name for f in SITE_TABLE)
GLOBAL_FEATURES = tuple(f.name for f in GLOBAL_TABLE)
EXPANSION_FEATURES = tuple(f.name for f in EXPANSION_TABLE)
NODE_FEATURES = tuple(f.name for f in NODE_TABLE)
TOP_K = 3


def markdown_table(kind: str) -> str:
    """The Markdown table of the ``"site"``, ``"global"``, ``"expansion"`` or ``"node"``
    features (index, name, formula, range), as the env docstring and ``docs/environment.md``
    show it (a DAG env's globals follow its node rows: index ``19 S + 7 N + i`` with ``S``
    slots and ``N = max_nodes + 2`` node rows)."""
    n_site, n_exp, n_node = len(SITE_TABLE), len(EXPANSION_TABLE), len(NODE_TABLE)
    if kind == "site":
        rows, head = SITE_TABLE, f"| index (per site s: {n_site} s + i) |"
    elif kind == "global":
        rows, head = GLOBAL_TABLE, f"| index ({n_site} max_sites + i) |"
    elif kind == "expansion":
        rows, head = EXPANSION_TABLE, f"| index (per slot s: {n_exp} s + i) |"
    elif kind == "node":
        rows, head = NODE_TABLE, f"| index (per node k: {n_exp} S + {n_node} k + i) |"
    else:
        raise ValueError(f"kind: expected 'site', 'global', 'expansion' or 'node', got {kind!r}")
    head += " feature | formula | range |"
    lines = [head, "|---|---|---|---|"]
    lines += [f"| {i} | {f.name} | {f.formula} | {f.range} |" for i, f in enumerate(rows)]
    return "\n".join(lines)


def observation_size(max_sites: int) -> int:
    """Length of the observation vector: ``max_sites`` rows of site features, then the
    global features."""
    return max_sites * len(SITE_FEATURES) + len(GLOBAL_FEATURES)


def dag_observation_size(num_slots: int, max_nodes: int) -> int:
    """Length of a DAG env's observation: ``num_slots`` expansion rows, ``max_nodes + 2``
    node rows, then the global features."""
    return (
        num_slots * len(EXPANSION_FEATURES)
        + (max_nodes + 2) * len(NODE_FEATURES)
        + len(GLOBAL_FEATURES)
    )


def check_observation_shape(
    shape: tuple[int, ...], max_sites: int, source: str = "the agent"
) -> None:
    """Check, before an episode starts, that ``source`` (e.g. a trained agent) expects the
    observations an env with ``max_sites`` slots gives.

    Parameters
    ----------
    shape
        The observation shape ``source`` was built for (an SB3 model's
        ``observation_space.shape``).
    max_sites
        The env's ``max_sites``.
    source
        What expects ``shape``, for the message.

    Raises
    ------
    ValueError
        One line: ``"max_sites: expected 6 (the agent was trained on observations of shape
        (88,), from envs with max_sites=6), got 4"``.
    """
    shape = tuple(int(n) for n in shape)
    if shape == (observation_size(max_sites),):
        return
    sites, rest = divmod(shape[0] - len(GLOBAL_FEATURES), len(SITE_FEATURES)) if shape else (0, 1)
    if len(shape) == 1 and rest == 0 and sites >= 1:
        raise ValueError(
            f"max_sites: expected {sites} ({source} was trained on observations of shape "
            f"{shape}, from envs with max_sites={sites}), got {max_sites}"
        )
    raise ValueError(
        f"observation: {source} expects observations of shape {shape}, which no growth env "
        f"gives (max_sites={max_sites} gives ({observation_size(max_sites)},))"
    )


def symlog(x: np.ndarray | float) -> np.ndarray:
    """``sign(x) log(1 + |x|)``: keeps ratios spanning decades in a small range."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.log1p(np.abs(x))


def site_features(
    widths: np.ndarray,
    update_gain: np.ndarray,
    eigenvalues: np.ndarray,
    num_significant: np.ndarray,
    bottleneck: np.ndarray,
    candidate_gain: np.ndarray,
    added_params: np.ndarray,
    added_flops: np.ndarray,
    loss: float,
    params: int,
    flops: int,
    neurons: int,
    max_sites: int,
) -> np.ndarray:
    """Feature matrix ``(max_sites, len(SITE_FEATURES))``; rows past the net's sites are 0.

    ``eigenvalues`` is ``(num_sites, >= TOP_K)`` (zero padded), the rest ``(num_sites,)``.
    """
    n = len(widths)
    out = np.zeros((max_sites, len(SITE_FEATURES)), dtype=np.float64)
    if n == 0:
        return out
    scale = max(float(loss), 1e-12)
    lam_sq = eigenvalues[:, :TOP_K] ** 2
    sig = np.arange(eigenvalues.shape[1])[None, :] < num_significant[:, None]
    rel_params = added_params / max(params, 1)
    gain = candidate_gain / scale
    out[:n, 0] = 1.0
    out[:n, 1] = np.log1p(widths)
    out[:n, 2] = symlog(update_gain / scale)
    out[:n, 3 : 3 + TOP_K] = symlog(lam_sq / scale)
    out[:n, 6] = symlog((eigenvalues**2 * sig).sum(1) / scale)
    out[:n, 7] = symlog(bottleneck / scale)
    out[:n, 8] = symlog(gain)
    out[:n, 9] = symlog(gain / np.maximum(rel_params, 1e-12))
    out[:n, 10] = symlog(rel_params)
    out[:n, 11] = symlog(added_flops / max(flops, 1))
    out[:n, 12] = np.minimum(num_significant / max(neurons, 1), 4.0)
    return out


def global_features(
    train_loss: float,
    val_loss: float,
    val_accuracy: float | None,
    params: int,
    flops: int,
    compute_used: float,
    param_budget_left: float,
    step_fraction: float,
    last_val_improvement: float,
) -> np.ndarray:
    """Feature vector ``(len(GLOBAL_FEATURES),)``."""
    eps = 1e-12
    return np.array(
        [
            np.log(max(train_loss, eps)),
            np.log(max(val_loss, eps)),
            0.0 if val_accuracy is None else val_accuracy,
            np.log(max(params, 1)),
            np.log(max(flops, 1)),
            compute_used,
            param_budget_left,
            step_fraction,
            np.log(max(val_loss, eps) / max(train_loss, eps)),
            float(symlog(last_val_improvement)),
        ],
        dtype=np.float64,
    )


def expansion_features(
    present: np.ndarray,
    kind: np.ndarray,
    source_width: np.ndarray,
    target_width: np.ndarray,
    update_gain: np.ndarray,
    eigenvalues: np.ndarray,
    target_bottleneck: np.ndarray,
    estimated_gain: np.ndarray,
    added_params: np.ndarray,
    added_flops: np.ndarray,
    num_significant: np.ndarray,
    loss: float,
    params: int,
    flops: int,
    neurons: int,
    grown_kinds: Sequence[tuple[int, int]] = (),
    step: int = 0,
    max_steps: int = 1,
) -> np.ndarray:
    """Feature matrix ``(slots, len(EXPANSION_FEATURES))`` of a DAG env; rows of absent slots
    are 0.

    ``kind`` holds ``0, 1, 2`` (edge, node, widen); ``eigenvalues`` is ``(slots, >= TOP_K)``
    (zero padded), the rest ``(slots,)``. Gains and bottlenecks below 0 (rounding of
    ``E||v||^2 - d``) count as 0. ``grown_kinds`` holds the episode's growths so far as
    ``(step, kind)`` pairs in order, ``step`` the decisions taken and ``max_steps`` the
    episode's length (the history columns :data:`HISTORY_COLUMNS`).
    """
    n = len(present)
    out = np.zeros((n, len(EXPANSION_FEATURES)), dtype=np.float64)
    rows = np.flatnonzero(present)
    if rows.size == 0:
        return out
    scale = max(float(loss), 1e-12)

    def pos(x: np.ndarray) -> np.ndarray:
        return np.maximum(np.nan_to_num(np.asarray(x, dtype=np.float64)[rows]), 0.0)

    gain = pos(estimated_gain) / scale
    rel_params = pos(added_params) / max(params, 1)
    out[rows, 0] = 1.0
    out[rows, 1 + np.asarray(kind, dtype=int)[rows]] = 1.0
    out[rows, 4] = np.log1p(pos(source_width))
    out[rows, 5] = np.log1p(pos(target_width))
    out[rows, 6] = symlog(pos(update_gain) / scale)
    out[rows, 7 : 7 + TOP_K] = symlog(np.asarray(eigenvalues)[rows, :TOP_K] ** 2 / scale)
    out[rows, 10] = symlog(pos(target_bottleneck) / scale)
    out[rows, 11] = symlog(gain)
    out[rows, 12] = symlog(gain / np.maximum(rel_params, 1e-12))
    out[rows, 13] = symlog(rel_params)
    out[rows, 14] = symlog(pos(added_flops) / max(flops, 1))
    out[rows, 15] = np.minimum(pos(num_significant) / max(neurons, 1), 4.0)
    out[rows, 16:19] = kind_history(grown_kinds, step, max_steps)[np.asarray(kind, dtype=int)[rows]]
    return out


def kind_history(grown_kinds: Sequence[tuple[int, int]], step: int, max_steps: int) -> np.ndarray:
    """Per expansion kind (rows: edge, node, widen) the history columns of
    :data:`EXPANSION_TABLE`: last growth was of this kind, growths of it / ``max_steps``,
    steps since it last grew (``step + 1`` if never, counting from a virtual growth before
    step 0) / ``max_steps``, clipped to ``[0, 1]``.

    ``grown_kinds`` holds ``(step, kind)`` pairs in the order of growth.
    """
    out = np.zeros((3, 3), dtype=np.float64)
    norm = float(max(max_steps, 1))
    last_step = np.full(3, -1.0)
    for when, k in grown_kinds:
        out[k, 1] += 1.0
        last_step[k] = when
    if grown_kinds:
        out[grown_kinds[-1][1], 0] = 1.0
    out[:, 1] /= norm
    out[:, 2] = (step - last_step) / norm
    return np.clip(out, 0.0, 1.0)


def node_features(
    present: np.ndarray,
    width: np.ndarray,
    update_gain: np.ndarray,
    bottleneck: np.ndarray,
    in_degree: np.ndarray,
    out_degree: np.ndarray,
    depth: np.ndarray,
    loss: float,
    max_nodes: int,
) -> np.ndarray:
    """Feature matrix ``(max_nodes + 2, len(NODE_FEATURES))`` of a DAG env (node indices);
    rows of absent nodes are 0; NaN gains (``in``) count as 0."""
    n = len(present)
    out = np.zeros((n, len(NODE_FEATURES)), dtype=np.float64)
    rows = np.flatnonzero(present)
    scale = max(float(loss), 1e-12)
    norm = float(max_nodes + 1)

    def pos(x: np.ndarray) -> np.ndarray:
        return np.maximum(np.nan_to_num(np.asarray(x, dtype=np.float64)[rows]), 0.0)

    out[rows, 0] = 1.0
    out[rows, 1] = np.log1p(pos(width))
    out[rows, 2] = symlog(pos(update_gain) / scale)
    out[rows, 3] = symlog(pos(bottleneck) / scale)
    out[rows, 4] = np.minimum(pos(in_degree) / norm, 1.0)
    out[rows, 5] = np.minimum(pos(out_degree) / norm, 1.0)
    out[rows, 6] = np.minimum(pos(depth) / norm, 1.0)
    return out
