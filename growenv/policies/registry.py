"""The one registry of growth policies: specs, capability flags, descriptions, construction.

Every place that needs to know which policies exist or what they can do (``make_policy``, the
CLI's help, the harness's choice between the lockstep and the single env) reads
:data:`POLICIES`. A new policy is its module plus one :class:`PolicyEntry` here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from growenv.nets.family import format_choices
from growenv.policies.annealing import AnnealingPolicy
from growenv.policies.base import Policy
from growenv.policies.dag import BICRestrictedPolicy, RestrictedPolicy, WholeSpacePolicy
from growenv.policies.heuristics import (
    BICPolicy,
    GreedyLossPolicy,
    GreedyPolicy,
    PeriodicPolicy,
    RandomPolicy,
    RoundRobinPolicy,
)
from growenv.policies.lookahead import LookaheadPolicy

__all__ = ["POLICIES", "PolicyEntry", "make_policy", "policy_entry", "policy_specs"]


@dataclass(frozen=True)
class PolicyEntry:
    """One registered policy.

    Attributes
    ----------
    name
        The spec's name (``"greedy"``; for a learned policy the part before ``":PATH"``).
    description
        One line for help texts.
    build
        ``build(**kwargs)``, or ``build(path, **kwargs)`` for a learned policy, returns a
        fresh :class:`~growenv.policies.base.Policy`.
    reads_env
        Calls env methods beyond the observation, the info dict and the action masks (the
        amplitude searches and lookahead rollouts of :class:`~growenv.policies.base.PolicyEnv`).
    lockstep
        Can run its seeds together in a :class:`~growenv.env.lockstep.LockstepVecEnv`.
    learned
        Loads a trained model: its spec is ``"name:PATH"``.
    nets
        The net families (``EnvConfig.net``) whose envs it runs on, or ``None`` for all
        (the DAG strategies need the expansion slots; a round over numbered sites needs
        sites).
    """

    name: str
    description: str
    build: Callable[..., Policy]
    reads_env: bool = False
    lockstep: bool = False
    learned: bool = False
    nets: tuple[str, ...] | None = None

    @property
    def spec(self) -> str:
        """How the policy is named on the command line (``"ppo:PATH"`` when learned)."""
        return f"{self.name}:PATH" if self.learned else self.name

    def net_obstacle(self, net: str) -> str | None:
        """Why the policy cannot run on envs of net family ``net`` (one line without the
        argument's name), or ``None`` when it can."""
        if self.nets is not None and net not in self.nets:
            return f"{self.spec!r} runs on envs with net={format_choices(self.nets)}, got {net!r}"
        return None

    def check_net(self, net: str) -> None:
        """Raise a one-line ``ValueError`` (``"policy: 'restricted' runs on envs with
        net='dag', got 'mlp'"``) when the policy does not run on envs of ``net``."""
        obstacle = self.net_obstacle(net)
        if obstacle is not None:
            raise ValueError(f"policy: {obstacle}")


def _load_ppo(path: str, **kwargs: Any) -> Policy:
    # deferred: loading stable-baselines3 costs seconds; only a PPO policy needs it
    return importlib.import_module("growenv.policies.ppo").load(path, **kwargs)


def _load_value(path: str, **kwargs: Any) -> Policy:
    return importlib.import_module("growenv.policies.value").load(path, **kwargs)


def _load_lookahead_skip(path: str, **kwargs: Any) -> Policy:
    return importlib.import_module("growenv.policies.lookahead").load_skip(path, **kwargs)


def _load_lookahead_learned(path: str, **kwargs: Any) -> Policy:
    return importlib.import_module("growenv.policies.lookahead").load_learned(path, **kwargs)


POLICIES: dict[str, PolicyEntry] = {
    entry.name: entry
    for entry in (
        PolicyEntry(
            "greedy", "largest first-order TINY gain (MaxEigenValue)", GreedyPolicy, lockstep=True
        ),
        PolicyEntry(
            "greedy-loss",
            "largest real loss drop after the amplitude search (AmplitudeFactor)",
            GreedyLossPolicy,
            reads_env=True,
        ),
        PolicyEntry(
            "round-robin",
            "every site in turn (Naive); DAG: expansion kinds in turn, best gain within",
            RoundRobinPolicy,
            lockstep=True,
        ),
        PolicyEntry("random", "uniform over the valid actions", RandomPolicy, lockstep=True),
        PolicyEntry(
            "bic", "lowest Bayesian information criterion after growth", BICPolicy, reads_env=True
        ),
        PolicyEntry(
            "annealing",
            "random proposals accepted by a Metropolis rule",
            AnnealingPolicy,
            reads_env=True,
        ),
        PolicyEntry(
            "periodic",
            "a round over all sites every few steps",
            PeriodicPolicy,
            lockstep=True,
            nets=("mlp", "conv"),
        ),
        PolicyEntry(
            "whole-space",
            "DAG: every expansion's gamma search, the largest real loss drop (Douka et al.)",
            WholeSpacePolicy,
            reads_env=True,
            nets=("dag",),
        ),
        PolicyEntry(
            "restricted",
            "DAG: the expansions into the node of largest bottleneck, searched (Douka et al.)",
            RestrictedPolicy,
            reads_env=True,
            nets=("dag",),
        ),
        PolicyEntry(
            "bic-restricted",
            "DAG: the restricted expansion of lowest BIC (Douka et al.; gate=True: only if it "
            "lowers the BIC)",
            BICRestrictedPolicy,
            reads_env=True,
            nets=("dag",),
        ),
        PolicyEntry(
            "lookahead",
            "each candidate (DAG: each kind's best) grown on a copy and trained to the end "
            "without growing again; the lowest validation loss grows (a rollout)",
            LookaheadPolicy,
            reads_env=True,
        ),
        PolicyEntry(
            "lookahead-skip",
            "a trained value agent with the skip action decides when to grow (after a first "
            "growth), the lookahead where",
            _load_lookahead_skip,
            reads_env=True,
            learned=True,
            nets=("dag",),
        ),
        PolicyEntry(
            "lookahead-learned",
            "a trained value agent scoring every slot proposes its top 3, the lookahead "
            "chooses among them",
            _load_lookahead_learned,
            reads_env=True,
            learned=True,
            nets=("dag",),
        ),
        PolicyEntry("ppo", "a trained MaskablePPO agent", _load_ppo, lockstep=True, learned=True),
        PolicyEntry(
            "dqn",
            "a trained value-based agent (double DQN or contextual bandit over expansion features)",
            _load_value,
            lockstep=True,
            learned=True,
        ),
    )
}
"""The registered policies by name, in the order help texts list them."""


def policy_specs() -> tuple[str, ...]:
    """Every policy's spec as help texts and error messages list them (``"ppo:PATH"``)."""
    return tuple(entry.spec for entry in POLICIES.values())


def _split(spec: str) -> tuple[PolicyEntry, str | None]:
    """The entry of ``spec`` and its path (``None`` unless the entry is learned)."""
    if not isinstance(spec, str):
        raise TypeError(f"spec: expected a string, got {type(spec).__name__}")
    name, sep, path = spec.partition(":")
    entry = POLICIES.get(name)
    if entry is None or entry.learned != bool(sep):
        raise ValueError(f"unknown policy {spec!r}; valid policies: {', '.join(policy_specs())}")
    return entry, path if sep else None


def policy_entry(spec: str) -> PolicyEntry:
    """The registry entry of ``spec`` (``"greedy"``, ``"ppo:PATH"``, ...).

    Raises
    ------
    ValueError
        For an unknown spec (the message lists the valid ones).
    """
    return _split(spec)[0]


def make_policy(spec: str, **kwargs: Any) -> Policy:
    """Build a policy from its spec.

    Parameters
    ----------
    spec
        A name of :data:`POLICIES` (``"greedy"``, ``"greedy-loss"``, ``"round-robin"``,
        ``"random"``, ``"bic"``, ``"annealing"``, ``"periodic"``; for DAG envs also
        ``"whole-space"``, ``"restricted"``, ``"bic-restricted"``), or ``"ppo:PATH"`` /
        ``"dqn:PATH"`` for a learned policy (a trained agent loaded with
        ``growenv.policies.ppo.load(PATH)`` / ``growenv.policies.value.load(PATH)``).
    **kwargs
        Passed to the policy's constructor (or to the learned policy's loader).

    Returns
    -------
    Policy
        A fresh policy; call ``reset(seed)`` before each episode.

    Raises
    ------
    ValueError
        For an unknown spec (the message lists the valid ones) or an empty model path.
    """
    entry, path = _split(spec)
    if not entry.learned:
        return entry.build(**kwargs)
    if not path:
        raise ValueError(f"spec {entry.spec!r}: the path of the trained agent is missing")
    return entry.build(path, **kwargs)
