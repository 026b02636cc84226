"""n-step returns of growth episodes (pure): the sum a value learner regresses on, and the
accumulator that turns each env's transitions into n-step ones."""

from __future__ import annotations

import collections
from collections.abc import Sequence

import numpy as np

__all__ = ["NStepAccumulator", "n_step_return"]


def n_step_return(rewards: Sequence[float], gamma: float) -> float:
    """``sum_k gamma^k r_k`` of a sequence of rewards."""
    total = 0.0
    for r in reversed(list(rewards)):
        total = float(r) + gamma * total
    return total


class NStepAccumulator:
    """Turns each env's transitions into n-step ones: ``(obs_t, a_t, sum_{k<m} gamma^k
    r_{t+k}, obs_{t+m}, mask_{t+m}, gamma^m or 0 at the end)`` with ``m = n`` or fewer at
    the episode's end."""

    def __init__(self, n_envs: int, n: int, gamma: float) -> None:
        self.n, self.gamma = int(n), float(gamma)
        self.queues: list[collections.deque] = [collections.deque() for _ in range(n_envs)]

    def push(
        self,
        env: int,
        obs: np.ndarray,
        action: int,
        reward: float,
        next_obs: np.ndarray,
        next_mask: np.ndarray,
        done: bool,
    ) -> list[tuple[np.ndarray, int, float, np.ndarray, np.ndarray, float]]:
        """Add one step of env ``env``; return the n-step transitions it completes."""
        queue = self.queues[env]
        queue.append((obs, int(action), float(reward)))
        out = []
        if done:
            while queue:
                rewards = [r for _, _, r in queue]
                o, a, _ = queue.popleft()
                out.append((o, a, n_step_return(rewards, self.gamma), next_obs, next_mask, 0.0))
        elif len(queue) == self.n:
            rewards = [r for _, _, r in queue]
            o, a, _ = queue.popleft()
            disc = self.gamma**self.n
            out.append((o, a, n_step_return(rewards, self.gamma), next_obs, next_mask, disc))
        return out
