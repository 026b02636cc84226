"""Trained MaskablePPO agents as growth policies: load a run and act with it.

Only inference lives here; training (configuration, vector envs, callbacks, ``train``) is
:mod:`growenv.harness.ppo_training`. Importing this module does not import
stable-baselines3; :func:`load` does.
"""

from __future__ import annotations

import contextlib
import json
import random
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from growenv.errors import UserError
from growenv.policies.base import PolicyEnv

__all__ = [
    "BEST_MODEL_FILE",
    "CONFIG_FILE",
    "MODEL_FILE",
    "NORM_FILE",
    "PPOPolicy",
    "agent_file",
    "check_model_file",
    "keep_global_rngs",
    "load",
    "norm_path_for",
    "read_norm",
    "run_settings",
]

MODEL_FILE = "model.zip"
"""The trained agent in a run directory (SB3's zip): the last model of the run."""
BEST_MODEL_FILE = "best_model.zip"
"""The model with the best in-training held-out (selection) evaluation, beside
:data:`MODEL_FILE` (its statistics: ``best_obs_norm.npz``; its step and score: ``best`` in
:data:`CONFIG_FILE`)."""
NORM_FILE = "obs_norm.npz"
"""The observation statistics (``mean``, ``var``, ``clip``) saved beside the model."""
CONFIG_FILE = "config.json"
"""The run's training configuration (its ``normalize_obs`` says whether statistics exist)."""
MODEL_MEMBERS = ("data", "policy.pth")
"""Members every stable-baselines3 model zip holds."""


@contextlib.contextmanager
def keep_global_rngs() -> Iterator[None]:
    """Restore the global random states (python ``random``, numpy's legacy ``np.random``,
    torch's CPU and initialised CUDA generators) when the block ends.

    What runs inside may draw from or reseed them; the code around it continues the same
    streams as if the block had not run (e.g. a held-out evaluation inside training).
    """
    import torch

    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    devices = list(range(torch.cuda.device_count())) if cuda else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002 (the legacy global state)


class PPOPolicy:
    """A trained agent behind the :class:`~growenv.policies.base.Policy` interface.

    Observations are normalised with the statistics saved at training time; actions are
    the deterministic (argmax) choice among the valid ones (``env.action_masks()``), or
    sampled (``deterministic = False``) from the agent's own torch generator state, seeded
    by :meth:`reset`. Acting never changes the global random states (python, numpy,
    torch): an evaluation inside training leaves the training's streams as they were.

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
        self.path: Path | None = None  # the model file, when loaded by load()
        self._seed: int | None = None
        self._rng_state: Any = None  # torch's state of this policy's sampling stream

    def reset(self, seed: int | None = None) -> None:
        """Seed the agent's own sampling stream (``seed=None``: leave it).

        Only stochastic actions (``deterministic = False``) draw from it; the global random
        states, the model and its training envs are untouched (SB3's ``set_random_seed``
        reseeds all of them, and the training envs too).
        """
        if seed is not None:
            self._seed, self._rng_state = int(seed), None

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
            raise UserError(
                f"observation: expected shape {expected} (the agent's training envs: max_sites "
                f"must match the training env's), got {observation.shape}"
            )
        with keep_global_rngs():
            if not self.deterministic:
                self._enter_stream()
            action, _ = self.model.predict(
                self.normalize(observation),
                action_masks=env.action_masks(),
                deterministic=self.deterministic,
            )
            if not self.deterministic:
                self._rng_state = self._stream_state()
        return int(action)

    def _device(self) -> Any:
        import torch

        return torch.device(getattr(self.model, "device", "cpu"))

    def _stream_state(self) -> Any:
        import torch

        device = self._device()
        if device.type == "cuda":
            return torch.cuda.get_rng_state(device)
        return torch.get_rng_state()

    def _enter_stream(self) -> None:
        """Inside :func:`keep_global_rngs`: make the global torch generator of the model's
        device this policy's stream (seeded by :meth:`reset`; unseeded: seed 0)."""
        import torch

        device = self._device()
        if self._rng_state is None:
            seed = 0 if self._seed is None else self._seed
            if device.type == "cuda":
                torch.cuda.manual_seed(seed)
            else:
                torch.manual_seed(seed)
        elif device.type == "cuda":
            torch.cuda.set_rng_state(self._rng_state, device)
        else:
            torch.set_rng_state(self._rng_state)


def agent_file(path: str | Path) -> Path:
    """The model file a run directory's agent is (``ppo:RUN``): its
    :data:`BEST_MODEL_FILE` when training saved one (the best held-out evaluation), else its
    :data:`MODEL_FILE` (the last model); a file path is itself."""
    path = Path(path)
    if not path.is_dir():
        return path
    best = path / BEST_MODEL_FILE
    return best if best.is_file() else path / MODEL_FILE


def run_settings(path: str | Path) -> dict[str, Any] | None:
    """The saved ``config.json`` of the run an agent comes from (a run directory, its
    ``model.zip`` / ``best_model.zip`` or a checkpoint); ``None`` without one."""
    path = Path(path)
    config = path / CONFIG_FILE if path.is_dir() else _run_config(path)
    if config is None or not config.is_file():
        return None
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"path: expected a JSON run config, got {config} ({err})") from None
    return data if isinstance(data, dict) else None


def norm_path_for(model_path: Path) -> Path:
    """The observation statistics saved with ``model_path`` (``model_5000_steps.zip`` ->
    ``obs_norm_5000_steps.npz``)."""
    return model_path.with_name(model_path.stem.replace("model", "obs_norm") + ".npz")


def check_model_file(path: Path, name: str = "path") -> None:
    """Raise unless ``path`` is a complete stable-baselines3 model zip.

    Reads the zip's directory and checks every member's CRC (a model is a few MB), so a
    truncated or corrupt file is named as such rather than failing later inside SB3.

    Parameters
    ----------
    path
        The model file.
    name
        The argument that gave it (``"path"``, ``"resume"``, ``"init_from"``): it starts the
        error message.

    Raises
    ------
    ValueError
        ``"resume: expected a complete model zip saved by stable-baselines3, got
        run/model.zip, which is truncated or corrupt (File is not a zip file)"``.
    """
    problem = None
    try:
        with zipfile.ZipFile(path) as archive:
            missing = [m for m in MODEL_MEMBERS if m not in archive.namelist()]
            broken = archive.testzip()
        if missing:
            problem = f"no {' / '.join(missing)} member"
        elif broken is not None:
            problem = f"member {broken!r} fails its CRC check"
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as err:
        problem = str(err) or type(err).__name__
    if problem is not None:
        raise UserError(
            f"{name}: expected a complete model zip saved by stable-baselines3, got {path}, "
            f"which is truncated or corrupt ({problem})"
        )


def _run_config(model_path: Path) -> Path | None:
    """The run's ``config.json`` of a model (``run/model.zip`` or ``run/checkpoints/...``)."""
    for folder in (model_path.parent, model_path.parent.parent):
        if (folder / CONFIG_FILE).is_file():
            return folder / CONFIG_FILE
        if folder.name != "checkpoints":
            return None
    return None


def read_norm(model_path: Path, name: str = "path") -> tuple[np.ndarray, np.ndarray, float] | None:
    """The observation statistics ``(mean, var, clip)`` saved with ``model_path``.

    Looks for the model's own file (:func:`norm_path_for`), then the run's
    :data:`NORM_FILE`. Returns ``None`` when there is none and the run did not normalise
    observations (its :data:`CONFIG_FILE` says ``normalize_obs: false``, or there is no
    config).

    Raises
    ------
    FileNotFoundError
        When the file is missing although the run's config says the agent was trained on
        normalised observations (it would act on raw ones: a silently wrong policy).
    ValueError
        When the statistics file cannot be read.
    """
    norm_path = norm_path_for(model_path)
    if not norm_path.exists():
        norm_path = model_path.parent / NORM_FILE
    if norm_path.exists():
        try:
            with np.load(norm_path) as data:
                return data["mean"], data["var"], float(data["clip"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
            raise UserError(
                f"{name}: expected observation statistics (mean, var, clip) in {norm_path}, "
                f"got an unreadable file ({err})"
            ) from None
    config = _run_config(model_path)
    if config is not None:
        try:
            normalized = json.loads(config.read_text()).get("normalize_obs", False)
        except (OSError, ValueError, AttributeError):
            normalized = False
        if normalized:
            files = " or ".join(dict.fromkeys([norm_path_for(model_path).name, NORM_FILE]))
            raise FileNotFoundError(
                f"{name}: expected the observation statistics {files} beside {model_path}, "
                f"because {config} says the agent was "
                "trained with normalize_obs=true (without them it would act on unnormalised "
                "observations); restore the file"
            )
    return None


def load(path: str | Path, device: str = "cpu") -> PPOPolicy:
    """Load a trained agent (a run directory or its ``model.zip``) as a :class:`PPOPolicy`.

    Parameters
    ----------
    path
        A run directory or a model file (e.g. ``RUN/model.zip``, the last model, or a
        checkpoint). A run directory loads :func:`agent_file`: ``best_model.zip`` (the best
        in-training held-out evaluation) when it exists, else ``model.zip``.
    device
        Torch device of the policy network.

    Raises
    ------
    FileNotFoundError
        When there is no model at ``path``, or no observation statistics although the run
        was trained with them (:func:`read_norm`).
    ValueError
        When the model file is truncated or corrupt (:func:`check_model_file`).
    """
    from sb3_contrib import MaskablePPO

    path = Path(path)
    model_path = agent_file(path)
    if not model_path.exists():
        raise FileNotFoundError(f"path: no trained agent at {model_path}")
    check_model_file(model_path)
    norm = read_norm(model_path)
    with keep_global_rngs():  # SB3's load reseeds python, numpy and torch with the run's seed
        model = MaskablePPO.load(model_path, device=device)
    mean, var, clip = (None, None, 10.0) if norm is None else norm
    policy = PPOPolicy(model, mean, var, clip, name=f"ppo:{path}")
    policy.path = model_path
    return policy
