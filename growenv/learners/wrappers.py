"""Reward variants of a growth env as gymnasium wrappers."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["REWARD_MODES", "TerminalReward"]

REWARD_MODES = ("step", "terminal")
"""``step``: the env's reward every step; ``terminal``: :class:`TerminalReward`."""


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
