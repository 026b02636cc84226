"""Trained MaskablePPO agents as growth policies: load a run and act with it.

Only inference lives here; training (configuration, vector envs, callbacks, ``train``) is
:mod:`growenv.harness.ppo_training`. Importing this module does not import
stable-baselines3; :func:`load` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from growenv.policies.base import PolicyEnv

__all__ = ["MODEL_FILE", "NORM_FILE", "PPOPolicy", "load", "norm_path_for"]

MODEL_FILE = "model.zip"
"""The trained agent in a run directory (SB3's zip)."""
NORM_FILE = "obs_norm.npz"
"""The observation statistics (``mean``, ``var``, ``clip``) saved beside the model."""


class PPOPolicy:
    """A trained agent behind the :class:`~growenv.policies.base.Policy` interface.

    Observations are normalised with the statistics saved at training time; actions are
    the deterministic (argmax) choice among the valid ones (``env.action_masks()``).

    Parameters
    ----------
    model
        A ``sb3_contrib.MaskablePPO`` model.
    obs_mean, obs_var
        Running observation statistics of training (``None``: no normalisation).
    clip
        Normalised observations are clipped to ``[-clip, clip]``.
    name
        The label of result rows.
    """

    def __init__(
        self,
        model: Any,
        obs_mean: np.ndarray | None = None,
        obs_var: np.ndarray | None = None,
        clip: float = 10.0,
        name: str = "ppo",
    ) -> None:
        self.model = model
        self.obs_mean = obs_mean
        self.obs_var = obs_var
        self.clip = clip
        self.name = name
        self.deterministic = True

    def reset(self, seed: int | None = None) -> None:
        """Seed the model's sampling (``seed=None``: leave it)."""
        if seed is not None:
            self.model.set_random_seed(seed)

    def normalize(self, observation: np.ndarray) -> np.ndarray:
        """``observation`` normalised and clipped as during training."""
        if self.obs_mean is None:
            return observation
        normed = (observation - self.obs_mean) / np.sqrt(self.obs_var + 1e-8)
        return np.clip(normed, -self.clip, self.clip).astype(np.float32)

    def act(self, observation: np.ndarray, info: dict[str, Any], env: PolicyEnv) -> int:
        """The agent's action among ``env.action_masks()``."""
        expected = self.model.observation_space.shape
        if observation.shape != expected:
            raise ValueError(
                f"observation: the agent was trained on observations of shape {expected} but "
                f"got {observation.shape}; max_sites must match the training env's"
            )
        action, _ = self.model.predict(
            self.normalize(observation),
            action_masks=env.action_masks(),
            deterministic=self.deterministic,
        )
        return int(action)


def norm_path_for(model_path: Path) -> Path:
    """The observation statistics saved with ``model_path`` (``model_5000_steps.zip`` ->
    ``obs_norm_5000_steps.npz``)."""
    return model_path.with_name(model_path.stem.replace("model", "obs_norm") + ".npz")


def load(path: str | Path, device: str = "cpu") -> PPOPolicy:
    """Load a trained agent (a run directory or its ``model.zip``) as a :class:`PPOPolicy`.

    Parameters
    ----------
    path
        A run directory (its ``model.zip``) or a model file (e.g. a checkpoint).
    device
        Torch device of the policy network.

    Raises
    ------
    FileNotFoundError
        When there is no model at ``path``.
    """
    from sb3_contrib import MaskablePPO

    path = Path(path)
    model_path = path / MODEL_FILE if path.is_dir() else path
    if not model_path.exists():
        raise FileNotFoundError(f"path: no trained agent at {model_path}")
    model = MaskablePPO.load(model_path, device=device)
    norm_path = norm_path_for(model_path)
    if not norm_path.exists():
        norm_path = model_path.parent / NORM_FILE
    mean = var = None
    clip = 10.0
    if norm_path.exists():
        data = np.load(norm_path)
        mean, var, clip = data["mean"], data["var"], float(data["clip"])
    return PPOPolicy(model, mean, var, clip, name=f"ppo:{path}")
