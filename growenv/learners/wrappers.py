"""Reward variants of a growth env as gymnasium wrappers."""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np

from growenv.learners.rollouts import play_out

__all__ = ["REWARD_MODES", "PairedReward", "TerminalReward", "make_reward_wrapper"]

REWARD_MODES = ("step", "terminal", "paired")
"""``step``: the env's reward every step; ``terminal``: :class:`TerminalReward`;
``paired``: :class:`PairedReward`."""


def make_reward_wrapper(env: gym.Env, mode: str, reference: str = "round-robin") -> gym.Env:
    """``env`` wrapped for reward ``mode`` (:data:`REWARD_MODES`; ``reference``: the
    heuristic of ``"paired"``)."""
    if mode == "terminal":
        return TerminalReward(env)
    if mode == "paired":
        return PairedReward(env, reference)
    return env


class TerminalReward(gym.Wrapper):
    """Reward 0 until the episode ends (terminated or truncated), then the episode's summed
    reward (so the return is unchanged, only its timing). ``action_masks()`` passes through.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._total = 0.0

    def reset(self, **kwargs: Any):
        self._total = 0.0
        return self.env.reset(**kwargs)

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._total += float(reward)
        out = 0.0
        if terminated or truncated:
            out, self._total = self._total, 0.0
        return obs, out, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """The wrapped env's valid actions."""
        return self.env.get_wrapper_attr("action_masks")()


class PairedReward(gym.Wrapper):
    """The env's reward minus a reference heuristic's reward at the same step of the same
    episode (common random numbers).

    At each reset a copy of the env, taken right after the reset (same task, start net and
    generators), runs the heuristic ``reference`` to its end; step ``t`` then pays
    ``r_t - r_t^ref`` (the reference's remaining rewards are subtracted at the agent's last
    step, and the agent's rewards past the reference's end are paid whole). The return is
    therefore the episode's return minus the reference's, ``log(L_ref / L)`` of the final
    validation losses for log-ratio rewards without costs. The subtracted amount does not
    depend on the agent's actions, so at every state each action's expected return shifts by
    the same amount; what it removes is the spread of returns across tasks. The reference's
    episode is training overhead and is not charged to the agent's episode.
    ``action_masks()`` passes through.
    """

    def __init__(self, env: gym.Env, reference: str = "round-robin") -> None:
        super().__init__(env)
        from growenv.policies import make_policy

        self.reference = reference
        self._policy = make_policy(reference)
        self._ref: list[float] = []
        self._t = 0

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        twin = copy.deepcopy(self.env.unwrapped)
        self._policy.reset(int(kwargs.get("seed") or 0))
        self._ref, self._t = play_out(twin, self._policy, obs, info), 0
        twin.close()
        return obs, info

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        t, self._t = self._t, self._t + 1
        ref = self._ref[t] if t < len(self._ref) else 0.0
        if terminated or truncated:
            ref += sum(self._ref[t + 1 :])
        info["reference_reward"] = ref
        return obs, float(reward) - ref, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """The wrapped env's valid actions."""
        return self.env.get_wrapper_attr("action_masks")()
