"""Rollout labels for approximate policy iteration from a base heuristic.

A rollout algorithm (Bertsekas, *Rollout, Policy Iteration, and Distributed Reinforcement
Learning*, 2020) improves a base policy ``pi``: in state ``s`` it takes, among candidate
actions ``a``, the one whose return ``Q^pi(s, a)`` (take ``a``, then follow ``pi`` to the end)
is largest. With the env copied at ``s`` every candidate's rollout sees the same random
numbers (the same minibatches and candidate draws), so the comparison between candidates
has no sampling noise of its own, and in a deterministic env the improved policy is never
worse than ``pi`` on the same episode. It costs one rollout per candidate at every step,
about ``3 x (remaining steps)`` env steps per decision here, far more than any heuristic.

Approximate policy iteration keeps the improvement and drops that cost: a scorer is
regressed on the rollouts' *advantages* (each candidate's return minus the mean over the
state's candidates: what separates actions, without the spread of returns across tasks)
in the states the learner visits, then acts greedily on its scores with no rollout at all.

:class:`RolloutLabels` computes the labels (a gym wrapper: ``info["rollout_returns"]`` of
each step holds every candidate's ``Q^pi`` of the state the action was taken in);
:func:`advantage_loss` is the pure regression loss; :class:`LabelBuffer` keeps the labelled
states.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from growenv.validation import choice

__all__ = [
    "ROLLOUT_BASES",
    "LabelBuffer",
    "RolloutLabels",
    "advantage_loss",
    "never_obstacle",
    "never_returns",
    "play_out",
    "rollout_returns",
]

ROLLOUT_BASES = ("round-robin", "greedy", "never")
"""Base policies a rollout can continue from any state: greedy reads only the state;
round-robin's turn is set from the episode's growth history
(:meth:`~growenv.policies.heuristics.RoundRobinPolicy.sync`); ``"never"`` grows no more (skip
to the end of the episode), so its rollouts are training alone
(:meth:`~growenv.env.growth_env.GrowthEnv.lookahead_losses`, no statistics pass) and its
``Q(s, a)`` is the lookahead's ``log(L_val(t) / L_val(end))`` (:func:`never_returns`)."""


def play_out(
    env: Any, policy: Any, obs: np.ndarray, info: dict[str, Any], sync: bool = False
) -> list[float]:
    """Step ``policy`` on ``env`` (unwrapped, from ``obs``/``info``) until the episode ends;
    the rewards, in order. With ``sync``, the policy's state is set from the episode before
    every act (``policy.sync(env)``, when it has one)."""
    rewards: list[float] = []
    done = False
    while not done:
        if sync and hasattr(policy, "sync"):
            policy.sync(env)
        obs, reward, terminated, truncated, info = env.step(int(policy.act(obs, info, env)))
        rewards.append(float(reward))
        done = terminated or truncated
    return rewards


def rollout_returns(env: Any, candidates: np.ndarray, base: str) -> tuple[np.ndarray, int, float]:
    """Roll every candidate action out from a copy of ``env`` (unwrapped), then ``base``.

    Parameters
    ----------
    env
        A GrowthEnv in the state to label; it is not stepped (each rollout runs on a deep
        copy, so all of them see the env's random numbers from this state on).
    candidates
        Boolean ``(S + 2,)``: the actions to roll out.
    base
        The heuristic followed after the action (:data:`ROLLOUT_BASES`).

    Returns
    -------
    returns, steps, macs
        ``Q^base(s, a)`` per action (the rewards summed in step order; NaN where not a
        candidate), the env steps and the multiply-adds the rollouts took.
    """
    from growenv.policies import make_policy

    if choice("base", base, ROLLOUT_BASES) == "never":
        return never_returns(env, candidates)
    out = np.full(len(candidates), np.nan)
    steps, macs = 0, 0.0
    for action in np.flatnonzero(candidates):
        twin = copy.deepcopy(env)
        policy = make_policy(base)
        obs, reward, terminated, truncated, info = twin.step(int(action))
        rest = [] if terminated or truncated else play_out(twin, policy, obs, info, True)
        out[action] = sum(rest, float(reward))  # summed in step order
        steps += 1 + len(rest)
        macs += twin.episode.compute - env.episode.compute
        twin.close()
    return out, steps, macs


def never_obstacle(env_config: Any) -> str | None:
    """Why the base policy "never" cannot label envs of ``env_config`` (an
    :class:`~growenv.env.config.EnvConfig`), or ``None``: its returns are log loss ratios,
    which need the log-ratio reward and no growth costs."""
    c = env_config
    if c.reward == "log_ratio" and not c.cost_per_param and not c.cost_per_flop:
        return None
    return (
        "'never' needs env_kwargs reward='log_ratio' and no growth costs (its returns are log "
        f"loss ratios), got reward={c.reward!r}, cost_per_param={c.cost_per_param}, "
        f"cost_per_flop={c.cost_per_flop}"
    )


def never_returns(env: Any, candidates: np.ndarray) -> tuple[np.ndarray, int, float]:
    """:func:`rollout_returns` with the base policy "never grow again".

    The return of growing slot ``a`` (or skipping) and then skipping to the end is
    ``log(L_val(t) / L_val(end))`` (the log-ratio rewards telescope; growth costs must be 0),
    where ``L_val(end)`` is ``env.lookahead_losses`` of ``a`` (skip: no growth) on a copy of
    ``env``; stop's return is 0. Diverged rollouts (infinite loss) are left unlabelled.

    Returns
    -------
    returns, steps, macs
        As :func:`rollout_returns`; ``steps`` counts the env steps the rollouts stand for
        (each covers the rest of the episode), ``macs`` their multiply-adds (not charged to
        ``env``'s episode).
    """
    cfg = env.config
    problem = never_obstacle(cfg)
    if problem is not None:
        raise ValueError(f"rollout_base: {problem}")
    out = np.full(len(candidates), np.nan)
    actions = np.flatnonzero(candidates)
    if candidates[env.stop_action]:
        out[env.stop_action] = 0.0
    rolled = actions[actions != env.stop_action]
    if rolled.size == 0:
        return out, 0, 0.0
    twin = copy.deepcopy(env)
    losses = twin.lookahead_losses(rolled)
    macs = twin.episode.compute - env.episode.compute
    twin.close()
    now = max(float(env.episode.measurement.val_loss), 1e-12)
    finite = np.isfinite(losses)
    out[rolled[finite]] = np.log(now / np.maximum(losses[finite], 1e-12))
    remaining = max(cfg.max_steps - env.step_count, 1)
    return out, int(rolled.size) * remaining, float(macs)


def advantage_loss(q: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean squared error between centred scores and centred rollout returns.

    Parameters
    ----------
    q
        Scores ``(B, A)`` (unmasked).
    labels
        Rollout returns ``(B, A)``, NaN where an action was not labelled.

    Returns
    -------
    torch.Tensor
        Over the rows with at least two labelled actions,
        ``mean [(q_a - mean_L q) - (y_a - mean_L y)]^2`` over their labelled actions ``a``
        (``L``: the row's labelled actions); 0 when no row has two.
    """
    known = torch.isfinite(labels)
    rows = known.sum(1) >= 2
    if not bool(rows.any()):
        return q.sum() * 0.0
    q, y, known = q[rows], labels[rows], known[rows]
    w = known.to(q.dtype)
    n = w.sum(1, keepdim=True)
    y = torch.where(known, y, torch.zeros_like(y))
    q_c = q - (q * w).sum(1, keepdim=True) / n
    y_c = y - (y * w).sum(1, keepdim=True) / n
    return (((q_c - y_c) ** 2) * w).sum() / w.sum()


class LabelBuffer:
    """A ring buffer of ``(observation, rollout returns)`` rows, sampled uniformly."""

    def __init__(self, capacity: int, obs_size: int, n_actions: int) -> None:
        self.capacity, self.size, self._next = int(capacity), 0, 0
        self.obs = np.zeros((self.capacity, obs_size), np.float32)
        self.labels = np.full((self.capacity, n_actions), np.nan, np.float32)

    def add(self, obs: np.ndarray, labels: np.ndarray) -> None:
        """Store one labelled state (rows without two labelled actions are skipped: they
        carry no advantage)."""
        if int(np.isfinite(labels).sum()) < 2:
            return
        self.obs[self._next], self.labels[self._next] = obs, labels
        self._next = (self._next + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
        """A uniform minibatch ``{"obs", "labels"}`` (with replacement)."""
        idx = rng.integers(0, self.size, size=batch)
        return {"obs": self.obs[idx], "labels": self.labels[idx]}


class RolloutLabels(gym.Wrapper):
    """Before every step, roll out each candidate action from a copy of the env and report
    the returns in ``info["rollout_returns"]`` (length ``S + 2``, NaN where not a candidate).

    Parameters
    ----------
    env
        A GrowthEnv (its rewards are the env's own: no reward wrapper inside).
    base
        The heuristic followed after the candidate action (:data:`ROLLOUT_BASES`).
    candidates
        ``(obs, mask) -> bool (S + 2,)``: the actions to label in a state (a learner's action
        set, e.g. each kind's best expansion).

    The rollouts are training overhead: they run on copies and are not charged to the
    episode's compute; ``info["rollout_macs"]`` holds their multiply-adds (``rollout_steps``
    and ``rollout_macs`` count them over the wrapper's life). ``action_masks()`` passes
    through.
    """

    def __init__(
        self,
        env: gym.Env,
        base: str = "round-robin",
        candidates: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    ) -> None:
        super().__init__(env)
        self.base = choice("rollout_base", base, ROLLOUT_BASES)
        self.candidates = candidates
        self._obs: np.ndarray | None = None
        self.rollout_steps = 0
        self.rollout_macs = 0.0

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self._obs = obs
        return obs, info

    def action_masks(self) -> np.ndarray:
        """The wrapped env's valid actions."""
        return self.env.get_wrapper_attr("action_masks")()

    def returns(self) -> np.ndarray:
        """``Q^base`` of every candidate action in the current state (NaN elsewhere)."""
        mask = np.asarray(self.action_masks(), dtype=bool)
        chosen = mask if self.candidates is None else self.candidates(self._obs, mask)
        out, steps, macs = rollout_returns(self.env.unwrapped, chosen, self.base)
        self.rollout_steps += steps
        self.rollout_macs += macs
        return out

    def step(self, action: Any):
        before = self.rollout_macs
        labels = self.returns()
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["rollout_returns"] = labels
        info["rollout_macs"] = self.rollout_macs - before
        self._obs = obs
        return obs, reward, terminated, truncated, info
