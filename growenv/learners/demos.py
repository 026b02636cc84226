"""Demonstrations for value learners: a heuristic's episodes and DQfD's large-margin loss.

Deep Q-learning from demonstrations (Hester et al., AAAI 2018) starts a value learner from a
teacher's transitions: they stay in their own buffer for the whole run, the learner is
pretrained on them, and every update adds to the TD loss a *large-margin* term that makes
the teacher's action worth at least ``margin`` more than any other allowed one,

``J_E(Q) = max_a [Q(s, a) + margin * (a != a_E)] - Q(s, a_E)``,

so the greedy policy starts as the teacher and moves away only where the TD targets say the
other action pays more. Here the teacher is a growth heuristic of the policy registry (e.g.
round-robin, the strongest rule on held-out tasks), run on training tasks.

:func:`large_margin_loss` is pure; :func:`collect_demonstrations` runs the heuristic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from growenv.learners.returns import NStepAccumulator

__all__ = ["DEMO_SEED_OFFSET", "Demonstrations", "collect_demonstrations", "large_margin_loss"]

DEMO_SEED_OFFSET = 10**7
"""Demonstration episode ``j`` of a run of seed ``s`` resets with seed
``DEMO_SEED_OFFSET + 10^4 s + j`` (the tasks are drawn from the training distribution)."""


def large_margin_loss(
    q: torch.Tensor, actions: torch.Tensor, allowed: torch.Tensor, margin: float
) -> torch.Tensor:
    """DQfD's supervised loss, averaged over the rows whose demonstrated action is allowed.

    Parameters
    ----------
    q
        Q-values ``(B, A)`` (unmasked).
    actions
        The demonstrated actions ``(B,)``.
    allowed
        ``(B, A)`` bool: the actions the learner chooses among in each state; rows whose
        demonstrated action is not allowed add nothing.
    margin
        The margin ``l(a_E, a)`` of every other action.

    Returns
    -------
    torch.Tensor
        ``mean_b max_{a allowed} [Q(s_b, a) + margin (a != a_b)] - Q(s_b, a_b)`` (0 when no
        row counts).
    """
    penalty = torch.full_like(q, float(margin))
    penalty.scatter_(1, actions[:, None], 0.0)
    best = (q + penalty).masked_fill(~allowed, float("-inf")).max(1).values
    q_demo = q.gather(1, actions[:, None])[:, 0]
    counts = allowed.gather(1, actions[:, None])[:, 0]
    if not bool(counts.any()):
        return q.sum() * 0.0
    return (best - q_demo)[counts].mean()


@dataclass
class Demonstrations:
    """n-step transitions of a teacher, with the valid-action mask of each state.

    Arrays: ``obs (N, O)``, ``action (N,)``, ``ret (N,)`` (shifted n-step return),
    ``next_obs (N, O)``, ``next_mask (N, A)``, ``disc (N,)`` (as in the replay buffer),
    ``mask (N, A)`` (valid actions at ``obs``); ``returns`` holds each episode's unshifted
    return.
    """

    obs: np.ndarray
    action: np.ndarray
    ret: np.ndarray
    next_obs: np.ndarray
    next_mask: np.ndarray
    disc: np.ndarray
    mask: np.ndarray
    returns: list[float]

    def __len__(self) -> int:
        return len(self.action)

    def sample(self, rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
        """``batch`` transitions drawn uniformly with replacement."""
        idx = rng.integers(0, len(self), batch)
        return {
            k: getattr(self, k)[idx]
            for k in ("obs", "action", "ret", "next_obs", "next_mask", "disc", "mask")
        }


def collect_demonstrations(
    env_kwargs: dict[str, Any],
    policy_spec: str,
    episodes: int,
    seed: int,
    n_step: int,
    gamma: float,
    reward_shift: float = 0.0,
    task: Any = None,
    reward_mode: str = "step",
    reward_reference: str = "round-robin",
) -> Demonstrations:
    """Run ``episodes`` episodes of the heuristic ``policy_spec`` on the training envs and
    return their n-step transitions (rewards shifted by ``reward_shift`` and, with
    ``reward_mode``, as the learner stores its own; see
    :func:`~growenv.learners.wrappers.make_reward_wrapper`).

    Episode ``j`` resets with seed ``DEMO_SEED_OFFSET + 10^4 seed + j``; ``task`` replaces
    ``env_kwargs["task"]`` as in :func:`~growenv.learners.value.train_value_agent`.
    """
    from growenv.env.growth_env import GrowthEnv
    from growenv.learners.wrappers import make_reward_wrapper
    from growenv.policies import make_policy

    env = GrowthEnv(**env_kwargs, **({} if task is None else {"task": task}))
    env = make_reward_wrapper(env, reward_mode, reward_reference)
    policy = make_policy(policy_spec)
    acc = NStepAccumulator(1, n_step, gamma)
    rows: list[tuple] = []
    masks: list[np.ndarray] = []
    returns: list[float] = []
    for j in range(int(episodes)):
        episode_seed = DEMO_SEED_OFFSET + 10**4 * int(seed) + j
        obs, info = env.reset(seed=episode_seed)
        policy.reset(episode_seed)
        done, total = False, 0.0
        state_masks: list[np.ndarray] = []
        while not done:
            mask = env.unwrapped.action_masks()
            action = int(policy.act(obs, info, env.unwrapped))
            next_obs, reward, terminated, truncated, info = env.step(action)
            done = bool(terminated or truncated)
            total += float(reward)
            state_masks.append(mask)
            next_mask = np.ones_like(mask) if done else env.unwrapped.action_masks()
            for tr in acc.push(0, obs, action, float(reward) + reward_shift, next_obs,
                               next_mask, done):  # fmt: skip
                rows.append(tr)
            obs = next_obs
        masks += state_masks  # n-step transitions come out in the order of their states
        returns.append(total)
    env.close()
    if not rows:
        raise ValueError(f"episodes: expected >= 1 demonstration episode, got {episodes}")
    obs_, action, ret, next_obs_, next_mask, disc = (np.stack(c) for c in zip(*rows, strict=True))
    return Demonstrations(
        obs=obs_.astype(np.float32),
        action=action.astype(np.int64),
        ret=ret.astype(np.float32),
        next_obs=next_obs_.astype(np.float32),
        next_mask=next_mask.astype(bool),
        disc=disc.astype(np.float32),
        mask=np.stack(masks).astype(bool),
        returns=returns,
    )
