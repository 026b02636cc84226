"""The growth-policy interface and the registry that builds policies from short specs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from growenv.env.growth_env import GrowthEnv

__all__ = ["POLICY_NAMES", "Policy", "make_policy", "make_rng", "valid_sites"]

# Stream of np.random.SeedSequence used for policies, so that a policy seeded with the same
# integer as the environment does not replay the environment's own random draws.
_POLICY_STREAM = 0x9E3779B9


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

    def act(self, observation: np.ndarray, info: dict[str, Any], env: GrowthEnv) -> int:
        """Return the action for the current state.

        Parameters
        ----------
        observation
            The environment's observation vector.
        info
            The ``info`` dict of the last ``reset`` / ``step``.
        env
            The *unwrapped* environment (policies may query it, e.g.
            ``env.evaluate_candidates()``, but must not step it).
        """
        ...


def make_rng(seed: int | None) -> np.random.Generator:
    """A policy's own generator for ``seed`` (independent of the environment's stream)."""
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng(np.random.SeedSequence([int(seed), _POLICY_STREAM]))


def valid_sites(info: dict[str, Any], env: GrowthEnv) -> np.ndarray:
    """Indices of the sites that may grow now (``info["action_mask"]`` over the sites)."""
    mask = np.asarray(info["action_mask"], dtype=bool)[: env.max_sites]
    return np.flatnonzero(mask)


def _builders() -> dict[str, Any]:
    from growenv.policies.annealing import AnnealingPolicy
    from growenv.policies.heuristics import (
        BICPolicy,
        GreedyLossPolicy,
        GreedyPolicy,
        PeriodicPolicy,
        RandomPolicy,
        RoundRobinPolicy,
    )

    return {
        "greedy": GreedyPolicy,
        "greedy-loss": GreedyLossPolicy,
        "round-robin": RoundRobinPolicy,
        "random": RandomPolicy,
        "bic": BICPolicy,
        "annealing": AnnealingPolicy,
        "periodic": PeriodicPolicy,
    }


POLICY_NAMES = (
    "greedy",
    "greedy-loss",
    "round-robin",
    "random",
    "bic",
    "annealing",
    "periodic",
    "ppo:PATH",
)


def make_policy(spec: str, **kwargs: Any) -> Policy:
    """Build a policy from its spec.

    Parameters
    ----------
    spec
        One of ``"greedy"``, ``"greedy-loss"``, ``"round-robin"``, ``"random"``, ``"bic"``,
        ``"annealing"``, ``"periodic"``, or ``"ppo:PATH"`` (a trained agent loaded with
        ``growenv.policies.ppo.load(PATH)``).
    **kwargs
        Passed to the policy's constructor (or to ``growenv.policies.ppo.load``).

    Returns
    -------
    Policy
        A fresh policy; call ``reset(seed)`` before each episode.

    Raises
    ------
    ValueError
        For an unknown spec (the message lists the valid ones) or an empty PPO path.
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec: expected a string, got {type(spec).__name__}")
    if spec.startswith("ppo:"):
        path = spec[len("ppo:") :]
        if not path:
            raise ValueError("spec 'ppo:PATH': the path of the trained agent is missing")
        from growenv.policies import ppo  # deferred: loads stable-baselines3

        return ppo.load(path, **kwargs)
    builders = _builders()
    if spec not in builders:
        raise ValueError(f"unknown policy {spec!r}; valid policies: {', '.join(POLICY_NAMES)}")
    return builders[spec](**kwargs)
