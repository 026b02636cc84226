"""Trained value-based agents (double DQN, contextual bandit) as growth policies.

``make_policy("dqn:RUN")`` loads a run of :func:`growenv.learners.value.train_value_agent`
with :func:`load`; the policy acts greedily on the masked Q-values of its
:class:`~growenv.learners.scorer.SlotScorer`, which scores any number of slots (a DAG agent
runs on envs of any ``max_nodes``, a site agent on any ``max_sites``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from growenv.errors import UserError
from growenv.learners.scorer import (
    BEST_MODEL_FILE,
    MODEL_FILE,
    SlotScorer,
    infer_layout,
    load_scorer,
)
from growenv.policies.base import PolicyEnv
from growenv.threads import using_threads

__all__ = ["ValuePolicy", "agent_file", "load"]


class ValuePolicy:
    """Greedy masked argmax of a :class:`SlotScorer`'s Q-values.

    Deterministic: :meth:`reset` has nothing to seed, and acting touches no random state.

    Parameters
    ----------
    scorer
        The trained scorer.
    name
        The label of result rows.
    device
        Torch device of the scorer.
    """

    def __init__(self, scorer: SlotScorer, name: str = "dqn", device: str = "cpu") -> None:
        self.scorer = scorer
        self.name = name
        self.device = torch.device(device)
        self.path: Path | None = None  # the model file, when loaded by load()

    def reset(self, seed: int | None = None) -> None:
        """Start an episode (greedy: nothing to seed)."""

    def q_values(self, observation: np.ndarray, env: PolicyEnv) -> np.ndarray:
        """Q of every action (``-inf`` where ``env.action_masks()`` is false)."""
        kind = "dag" if getattr(env, "slot_layout", None) is not None else "sites"
        if kind != self.scorer.kind:
            raise UserError(
                f"policy {self.name!r}: expected a {self.scorer.kind} env (net="
                f"{'dag' if self.scorer.kind == 'dag' else 'mlp or conv'}, where it was "
                f"trained), got a {kind} env"
            )
        obs = np.asarray(observation, dtype=np.float32).reshape(-1)
        layout = infer_layout(obs.size, kind)
        mask = np.asarray(env.action_masks(), dtype=bool)
        with torch.no_grad(), using_threads(1):
            q = self.scorer(
                torch.as_tensor(obs[None], device=self.device),
                layout,
                torch.as_tensor(mask[None], device=self.device),
            )
        return q[0].cpu().numpy()

    def act(self, observation: np.ndarray, info: dict[str, Any], env: PolicyEnv) -> int:
        """The valid action of largest Q."""
        return int(np.argmax(self.q_values(observation, env)))


def agent_file(path: str | Path) -> Path:
    """The model a run directory's agent is: ``best_model.pt`` when training saved one,
    else ``model.pt``; a file path is itself."""
    path = Path(path)
    if not path.is_dir():
        return path
    best = path / BEST_MODEL_FILE
    return best if best.is_file() else path / MODEL_FILE


def load(path: str | Path, device: str = "cpu") -> ValuePolicy:
    """Load a trained value agent (a run directory, or a ``.pt`` model of one).

    The run's env settings (its ``config.json``, read by
    :func:`growenv.policies.ppo.run_settings`) are what ``growenv bench`` evaluates it with
    unless overridden, as for ``ppo:RUN``.

    Raises
    ------
    UserError
        One line, when there is no model at ``path`` or it is not a saved value model.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"path: expected a value agent's run directory or .pt, got {path}")
    model_path = agent_file(path)
    if not model_path.is_file():
        raise UserError(f"path: expected model.pt or best_model.pt in {path}; neither exists")
    policy = ValuePolicy(load_scorer(model_path, device), name=f"dqn:{path}", device=device)
    policy.path = model_path
    return policy
