"""The growth strategies of Douka et al. (ESANN 2025) as policies of the DAG env.

They read the env through :class:`~growenv.policies.base.PolicyEnv`: the slot layout
(``env.slot_layout``), the per-node bottlenecks and edges of ``info`` (``node_bottlenecks``,
``graph_edges``, by node index) and the amplitude searches (``env.evaluate_candidates``,
counted in the episode's compute). The same decisions as pure functions of a report, with
their own cost model, are :mod:`growenv.policies.dag_strategies` (the experiment's).

* :class:`WholeSpacePolicy` (``"whole-space"``): every valid expansion's gamma search (one
  batched search), the largest real loss drop on the statistics split.
* :class:`RestrictedPolicy` (``"restricted"``): the same over the bottleneck-restricted
  space of the node ``A*`` of largest ``Psi`` (:meth:`~growenv.nets.dag.slots.SlotLayout.
  restricted`: edges and new nodes into ``A*``, widening ``A*`` or a node feeding it).
* :class:`BICRestrictedPolicy` (``"bic-restricted"``): the restricted candidate of lowest
  ``BIC = k ln n + n ln(MSE)`` after growth, grown only if it lowers the current BIC.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from growenv.policies.base import PolicyEnv, valid_sites
from growenv.policies.heuristics import BICPolicy, GreedyLossPolicy, _best, bic_after_growth

__all__ = [
    "BICRestrictedPolicy",
    "RestrictedPolicy",
    "WholeSpacePolicy",
    "bottleneck_node",
    "restricted_slots",
]


def _layout(env: PolicyEnv, name: str):
    layout = env.slot_layout
    if layout is None:
        raise ValueError(
            f"policy: {name!r} needs an env with DAG expansion slots (net='dag'); this env "
            "grows numbered sites"
        )
    return layout


def bottleneck_node(info: dict[str, Any]) -> int:
    """Index of the node ``A*`` of largest bottleneck ``Psi`` (``info["node_bottlenecks"]``,
    ``-inf`` for ``in`` and absent indices; ties: the lowest index, i.e. the earliest
    created, ``out`` last)."""
    psi = np.nan_to_num(np.asarray(info["node_bottlenecks"], dtype=float), nan=-np.inf)
    return int(np.argmax(psi))


def restricted_slots(info: dict[str, Any], env: PolicyEnv, name: str = "restricted"):
    """``(A*, valid slots of the restricted space of A*)``."""
    layout = _layout(env, name)
    node = bottleneck_node(info)
    space = np.asarray(layout.restricted(node, info["graph_edges"]), dtype=int)
    valid = valid_sites(info, env)
    return node, np.intersect1d(space, valid)


class WholeSpacePolicy(GreedyLossPolicy):
    """Douka et al.'s *whole search space*: every valid expansion's candidate gets its gamma
    search (``env.evaluate_candidates()``: one batched search on the statistics split), the
    largest real loss drop grows; skip when none is positive. Greedy-loss on a DAG env.

    Parameters
    ----------
    skip_nonpositive
        Skip growth when the best real drop is ``<= 0``. Default True.
    """

    name = "whole-space"

    def act(self, observation: np.ndarray, info: dict[str, Any], env: PolicyEnv) -> int:
        """The valid slot with the largest real loss drop, or skip."""
        _layout(env, self.name)
        return super().act(observation, info, env)


class RestrictedPolicy:
    """Douka et al.'s *bottleneck-restricted* space: only the expansions that feed the node
    ``A*`` of largest ``Psi`` (:func:`restricted_slots`), each with its gamma search
    (``env.evaluate_candidates(slots)``); the largest real loss drop grows, skip when no
    restricted slot is valid or none drops the loss.

    Attributes
    ----------
    last
        ``{"node", "slots", "drops"}`` of the last call (``None`` before the first).
    """

    name = "restricted"

    def __init__(self, skip_nonpositive: bool = True) -> None:
        self.skip_nonpositive = bool(skip_nonpositive)
        self.last: dict[str, Any] | None = None

    def reset(self, seed: int | None = None) -> None:
        """Forget the last call (the policy is deterministic)."""
        self.last = None

    def act(self, observation: np.ndarray, info: dict[str, Any], env: PolicyEnv) -> int:
        """The restricted slot with the largest real loss drop, or skip."""
        node, slots = restricted_slots(info, env, self.name)
        self.last = {"node": node, "slots": slots, "drops": None}
        if slots.size == 0:
            return env.skip_action
        drops = np.asarray(env.evaluate_candidates(slots=slots)["loss_drop"], dtype=float)
        self.last["drops"] = drops
        best = _best(drops, slots)
        if self.skip_nonpositive and not drops[best] > 0:
            return env.skip_action
        return best


class BICRestrictedPolicy(BICPolicy):
    """Douka et al.'s *BIC + restricted*: the restricted candidate (:func:`restricted_slots`)
    of lowest BIC after growth (``k = params + candidate_params``, loss ``stats_loss -
    loss_drop``, ``n`` the statistics samples; :func:`~growenv.policies.heuristics.bic`),
    grown (the paper's rule: the BIC chooses among the restricted expansions); with
    ``gate=True`` only if it is below the current BIC, else skip (:class:`BICPolicy`'s rule
    over the restricted space).

    Parameters
    ----------
    gate
        Grow only what lowers the current BIC (default False, as in the paper).

    Attributes
    ----------
    last_bic
        ``(current BIC, per-slot BIC after growth (inf elsewhere))`` of the last call.
    """

    name = "bic-restricted"

    def __init__(self, gate: bool = False) -> None:
        super().__init__()
        self.gate = bool(gate)

    def act(self, observation: np.ndarray, info: dict[str, Any], env: PolicyEnv) -> int:
        """The restricted slot of lowest BIC (with ``gate``: if it beats the current BIC,
        else skip)."""
        _, slots = restricted_slots(info, env, self.name)
        if slots.size == 0:
            return env.skip_action
        drops = np.asarray(env.evaluate_candidates(slots=slots)["loss_drop"], dtype=float)
        current, after = bic_after_growth(info, env, slots, drops)
        self.last_bic = (current, after)
        best = int(slots[int(np.argmin(after[slots]))])
        return best if not self.gate or after[best] < current else env.skip_action
