"""The growth-policy protocol, the narrow env interface policies may use, and shared helpers.

A policy sees the environment only through :class:`PolicyEnv`: the action layout, the valid
actions, the facts of the task and of the last measurement, and the (counted) amplitude
searches. It never steps the env nor calls its private methods. The registry that builds
policies from specs is :mod:`growenv.policies.registry`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, SupportsFloat, runtime_checkable

import numpy as np

__all__ = [
    "CandidateResult",
    "Policy",
    "PolicyEnv",
    "make_rng",
    "valid_sites",
]

# Stream of np.random.SeedSequence used for policies, so that a policy seeded with the same
# integer as the environment does not replay the environment's own random draws.
_POLICY_STREAM = 0x9E3779B9


class _Sites(Protocol):
    """The network facts a policy reads: how many sites exist now."""

    @property
    def num_sites(self) -> int: ...


class _TaskFacts(Protocol):
    """The task facts a policy reads (BIC's likelihood)."""

    @property
    def loss(self) -> str: ...

    @property
    def out_features(self) -> int: ...


class _MeasurementFacts(Protocol):
    """The facts of the last statistics pass a policy reads (BIC's sample count)."""

    @property
    def num_samples(self) -> int: ...


class CandidateResult(Protocol):
    """The outcome of one amplitude search: the best ``gamma`` and the real ``loss_drop``."""

    @property
    def gamma(self) -> SupportsFloat: ...

    @property
    def loss_drop(self) -> SupportsFloat: ...


class PolicyEnv(Protocol):
    """The part of :class:`~growenv.env.growth_env.GrowthEnv` a policy may use.

    Attributes
    ----------
    max_sites
        Number of site actions; actions ``0 .. max_sites - 1`` grow a site (DAG: an
        expansion slot).
    skip_action, stop_action
        The actions that skip growth this step and that end the episode.
    net
        The current network; policies read ``net.num_sites`` only.
    task
        The episode's task; policies read ``task.loss`` and ``task.out_features`` only.
    report
        The last statistics pass; policies read ``report.num_samples`` only.
    slot_layout
        DAG envs: the :class:`~growenv.nets.dag.slots.SlotLayout` of the growth actions
        (slot <-> ``(kind, source index, target index)``), read with the per-node facts of
        ``info`` (``node_bottlenecks``, ``graph_edges``); ``None`` for envs grown by sites.

    Notes
    -----
    ``evaluate_candidates`` and ``evaluate_candidate`` run amplitude searches on the
    statistics split, ``lookahead_losses`` trains grown copies; the env counts them in
    ``compute``. ``search_cost`` and ``lookahead_costs`` (DAG) plan those counts without
    running anything. Policies that call them are flagged
    ``reads_env`` in :data:`growenv.policies.registry.POLICIES` and do not run in the
    lockstep vector env.
    """

    max_sites: int
    skip_action: int
    stop_action: int

    @property
    def net(self) -> _Sites: ...

    @property
    def task(self) -> _TaskFacts: ...

    @property
    def report(self) -> _MeasurementFacts: ...

    @property
    def slot_layout(self) -> Any: ...

    def action_masks(self) -> np.ndarray:
        """Boolean mask over all actions (sites, skip, stop)."""
        ...

    def evaluate_candidates(self, slots: Any = None) -> dict[str, np.ndarray]:
        """``{"loss_drop", "gamma"}`` of every valid site (or of the valid ones of
        ``slots``) after its amplitude search."""
        ...

    def evaluate_candidate(self, site: int) -> CandidateResult:
        """The amplitude search of ``site``'s candidate alone."""
        ...

    def lookahead_losses(
        self,
        slots: Any,
        steps: int | None = None,
        batch_size: int | None = None,
        nested: bool = False,
        drop_worst_at: int | Sequence[int] | None = None,
    ) -> np.ndarray:
        """Validation loss of each site's growth after ``steps`` more optimizer steps (default:
        the rest of the episode) of minibatches of ``batch_size`` (default: the episode's;
        ``nested``: the first samples of the episode's own minibatches) without further
        growth, each on a copy of the env (``drop_worst_at``: the worst of 3 or more stops
        there, ``inf``; a list: one at each entry while 2 keep running)."""
        ...

    @property
    def rollout_steps(self) -> int:
        """The optimizer steps left in the episode (a rollout's default length)."""
        ...

    def search_cost(self, slots: Any, fits: bool = True) -> float:
        """DAG: the MACs ``evaluate_candidates(slots)`` charges, planned before it runs
        (``fits=False``: without the pending neuron fits)."""
        ...

    def fit_expansions(self, slots: Any) -> None:
        """DAG with ``fit_scope="chosen"``: fit the slots' pending neurons now (charged)."""
        ...

    def lookahead_costs(
        self, slots: Any, steps: int | None = None, batch_size: int | None = None
    ) -> np.ndarray:
        """DAG: the MACs ``lookahead_losses`` charges for each slot, planned before it runs."""
        ...


@runtime_checkable
class Policy(Protocol):
    """A rule that picks the next action of a :class:`~growenv.env.growth_env.GrowthEnv` episode.

    Attributes
    ----------
    name
        Short label used in result tables (e.g. ``"greedy"``).
    """

    name: str

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode; ``seed`` fixes every random choice the policy makes."""
        ...

    def act(self, observation: np.ndarray, info: dict[str, Any], env: PolicyEnv) -> int:
        """Return the action for the current state.

        Parameters
        ----------
        observation
            The environment's observation vector.
        info
            The ``info`` dict of the last ``reset`` / ``step``.
        env
            The *unwrapped* environment, seen through :class:`PolicyEnv` (policies may query
            it, e.g. ``env.evaluate_candidates()``, but must not step it).
        """
        ...


def make_rng(seed: int | None) -> np.random.Generator:
    """A policy's own generator for ``seed`` (independent of the environment's stream)."""
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng(np.random.SeedSequence([int(seed), _POLICY_STREAM]))


def valid_sites(info: dict[str, Any], env: PolicyEnv) -> np.ndarray:
    """Indices of the sites that may grow now (``info["action_mask"]`` over the sites)."""
    mask = np.asarray(info["action_mask"], dtype=bool)[: env.max_sites]
    return np.flatnonzero(mask)
