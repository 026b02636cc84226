"""Training MaskablePPO growth agents: configuration, vector envs, callbacks, ``train``.

Training runs sb3-contrib's ``MaskablePPO`` on :class:`~growenv.env.growth_env.GrowthEnv` over
a task distribution (a new teacher each episode by default), with observation normalisation
(running mean/std, saved beside the model), periodic checkpoints, TensorBoard logs (when
``tensorboard`` is installed; CSV logs always) and an evaluation callback that runs the
agent and the greedy rule on fixed held-out tasks and logs both. The trained agent is loaded
and run by :mod:`growenv.policies.ppo`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from growenv.policies.ppo import MODEL_FILE, NORM_FILE, PPOPolicy, norm_path_for

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_ENV_KWARGS",
    "VEC_KINDS",
    "PPOConfig",
    "evaluate_against_greedy",
    "make_vec_env",
    "train",
]

CONFIG_FILE = "config.json"
VEC_KINDS = ("lockstep", "subproc", "dummy")

# Environment settings of the learned-growth experiments: cheap steps (25 optimizer steps
# between growth decisions), a parameter budget that makes the decision "where" matter, and
# a new teacher (depth 2, widths 10-80) every episode.
DEFAULT_ENV_KWARGS: dict[str, Any] = {
    "task": "teacher_student_distribution",
    "train_steps": 25,
    "max_steps": 12,
    "neurons_per_growth": 4,
    "max_params": 800,
}


@dataclass
class PPOConfig:
    """Everything a training run depends on; saved as ``config.json`` beside the model.

    PPO hyper-parameters are chosen for short episodes (12 decisions): no discount (the
    env's log-ratio rewards then sum to the log of the initial over the final validation
    loss, the quantity to maximise), GAE 0.95, a small entropy bonus so that the agent keeps
    trying sites, and a 64-64 tanh MLP for a ~62-dimensional observation.

    ``device`` is the torch device of the policy network (MaskablePPO's ``device``); the
    environments' device is the env setting ``env_kwargs["device"]`` (default ``"cpu"``).
    """

    env_kwargs: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_ENV_KWARGS))
    total_timesteps: int = 60_000
    n_envs: int = 32
    vec: str = "lockstep"
    seed: int = 0
    device: str = "cpu"
    n_steps: int = 32
    batch_size: int = 256
    n_epochs: int = 10
    learning_rate: float = 1e-4
    gamma: float = 1.0
    gae_lambda: float = 0.95
    ent_coef: float = 0.01
    clip_range: float = 0.2
    net_arch: tuple[int, ...] = (64, 64)
    normalize_obs: bool = True
    checkpoint_every: int = 5_000
    eval_every: int = 5_000
    eval_tasks: int = 4

    def validate(self) -> PPOConfig:
        """Check the settings (and build one env from ``env_kwargs``); return ``self``.

        Raises
        ------
        ValueError
            Naming the first bad setting.
        """
        for name in ("total_timesteps", "n_envs", "n_steps", "batch_size", "n_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
        if self.vec not in VEC_KINDS:
            raise ValueError(f"vec: expected one of {VEC_KINDS}, got {self.vec!r}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma: expected 0 < gamma <= 1, got {self.gamma}")
        from growenv.env.growth_env import GrowthEnv

        GrowthEnv(**self.env_kwargs)  # unknown or bad env kwargs fail here, clearly
        return self

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (``config.json``)."""
        data = dataclasses.asdict(self)
        data["net_arch"] = list(self.net_arch)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PPOConfig:
        """The config of a ``config.json`` dict; unknown keys are refused."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"config: unknown keys {sorted(unknown)}")
        data = dict(data)
        if "net_arch" in data:
            data["net_arch"] = tuple(data["net_arch"])
        return cls(**data)


# --------------------------------------------------------------------------- environments


def _make_env_fn(env_kwargs: dict[str, Any], threads: int | None):
    def _init():
        import torch
        from sb3_contrib.common.wrappers import ActionMasker  # noqa: F401  (import check)
        from stable_baselines3.common.monitor import Monitor

        from growenv.env.growth_env import GrowthEnv

        if threads is not None:
            # several processes on few cores: one thread each (OpenMP spinning otherwise
            # makes tiny matmuls ~100x slower)
            torch.set_num_threads(threads)
        return Monitor(GrowthEnv(**env_kwargs))

    return _init


def make_vec_env(config: PPOConfig):
    """The training vector env: ``n_envs`` envs seeded ``seed + i`` (SB3's convention).

    ``"lockstep"`` stacks all networks into one batched model (growenv.env.lockstep);
    ``"subproc"``/``"dummy"`` are SB3's vector envs over separate GrowthEnvs. Every kind
    builds its envs from ``config.env_kwargs`` alone (their ``device`` included).
    """
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecMonitor

    if config.vec == "lockstep":
        from growenv.env.lockstep import LockstepVecEnv

        return VecMonitor(LockstepVecEnv(config.n_envs, seed=config.seed, **config.env_kwargs))
    if config.vec == "subproc" and config.n_envs > 1:
        fns = [_make_env_fn(config.env_kwargs, 1) for _ in range(config.n_envs)]
        venv = SubprocVecEnv(fns, start_method="spawn")
    else:
        venv = DummyVecEnv([_make_env_fn(config.env_kwargs, None) for _ in range(config.n_envs)])
    venv.seed(config.seed)
    return venv


def _save_norm(venv, path: Path) -> None:
    from stable_baselines3.common.vec_env import VecNormalize

    if isinstance(venv, VecNormalize):
        rms = venv.obs_rms
        np.savez(path, mean=rms.mean, var=rms.var, clip=venv.clip_obs)


# --------------------------------------------------------------------------- evaluation


def evaluate_against_greedy(
    policy: PPOPolicy, env_kwargs: dict[str, Any], n_tasks: int, seed: int = 10**6
) -> dict[str, float]:
    """Final validation loss of the agent and of greedy on ``n_tasks`` held-out teachers."""
    from growenv.data.tasks import held_out_teachers
    from growenv.harness.episodes import run_episode
    from growenv.policies.heuristics import GreedyPolicy

    kwargs = {k: v for k, v in env_kwargs.items() if k not in ("task", "task_kwargs")}
    agent, greedy = [], []
    for i, task in enumerate(held_out_teachers(n_tasks, seed_offset=seed)):
        for pol, out in ((policy, agent), (GreedyPolicy(), greedy)):
            rows = run_episode({**kwargs, "task": task}, pol, i)
            out.append(rows[-1]["val_loss"])
    return {
        "agent_val_loss": float(np.mean(agent)),
        "greedy_val_loss": float(np.mean(greedy)),
        "agent_over_greedy": float(np.mean(np.array(agent) / np.array(greedy))),
    }


def _callbacks(config: PPOConfig, out: Path, venv):
    from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback

    class NormCheckpoint(BaseCallback):
        """Save the observation statistics with every checkpoint."""

        def __init__(self, every: int):
            super().__init__()
            self.every = every

        def _on_step(self) -> bool:
            if self.n_calls % self.every == 0:
                _save_norm(venv, out / "checkpoints" / f"obs_norm_{self.num_timesteps}_steps.npz")
            return True

    class EvalVsGreedy(BaseCallback):
        """Run the agent and greedy on fixed held-out teachers; log both."""

        def __init__(self, every: int):
            super().__init__()
            self.every = every

        def _on_step(self) -> bool:
            if self.n_calls % self.every == 0:
                rms = getattr(venv, "obs_rms", None)
                pol = PPOPolicy(
                    self.model,
                    None if rms is None else rms.mean,
                    None if rms is None else rms.var,
                    getattr(venv, "clip_obs", 10.0),
                )
                res = evaluate_against_greedy(pol, config.env_kwargs, config.eval_tasks)
                for key, value in res.items():
                    self.logger.record(f"eval/{key}", value)
                with open(out / "eval.jsonl", "a") as f:
                    f.write(json.dumps({"timesteps": self.num_timesteps, **res}) + "\n")
            return True

    every = max(config.checkpoint_every // config.n_envs, 1)
    cbs = [
        CheckpointCallback(every, str(out / "checkpoints"), name_prefix="model"),
        NormCheckpoint(every),
    ]
    if config.eval_every and config.eval_tasks:
        cbs.append(EvalVsGreedy(max(config.eval_every // config.n_envs, 1)))
    return cbs


# --------------------------------------------------------------------------- training


def _ppo_settings(config: PPOConfig) -> dict[str, Any]:
    """The MaskablePPO keyword arguments that ``config`` sets (beyond policy and env)."""
    return {
        "learning_rate": config.learning_rate,
        "n_steps": config.n_steps,
        "batch_size": config.batch_size,
        "n_epochs": config.n_epochs,
        "gamma": config.gamma,
        "gae_lambda": config.gae_lambda,
        "ent_coef": config.ent_coef,
        "clip_range": config.clip_range,
    }


def train(
    config: PPOConfig,
    out: str | Path,
    resume: str | Path | None = None,
    force: bool = False,
    progress_bar: bool = True,
    init_from: str | Path | None = None,
) -> Path:
    """Train a MaskablePPO agent; write ``model.zip``, ``obs_norm.npz``, ``config.json``.

    Parameters
    ----------
    out
        Run directory. An existing run there is never overwritten unless ``force``.
    resume
        A checkpoint (``.zip``) to continue from; its ``obs_norm_*.npz`` is loaded too.
    init_from
        A trained agent (its run directory or ``model.zip``) to start from instead of random
        weights (fine-tuning, e.g. on a costlier task): its weights and observation
        statistics are loaded, this ``config``'s PPO settings and seed apply, and the
        timesteps count from 0. The observation and action spaces must match (same
        ``max_sites``).
    """
    import torch
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.vec_env import VecNormalize

    config.validate()
    if resume is not None and init_from is not None:
        raise ValueError("train: give resume (continue a run) or init_from (fine-tune), not both")
    start_from = resume if resume is not None else init_from
    if start_from is not None:
        start_from = Path(start_from)
        if start_from.is_dir():
            start_from = start_from / MODEL_FILE
        if not start_from.is_file():
            raise FileNotFoundError(f"{'resume' if resume else 'init_from'}: no {start_from}")
    out = Path(out)
    if (out / MODEL_FILE).exists() and not force and resume is None:
        raise FileExistsError(
            f"out: {out} already holds a trained agent; pass force=True (--force) to "
            f"overwrite it or choose another directory"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps(config.to_json(), indent=2))
    venv = make_vec_env(config)
    if config.normalize_obs:
        venv = VecNormalize(venv, norm_obs=True, norm_reward=False, clip_obs=10.0)
    formats = ["csv"]
    try:
        import tensorboard  # noqa: F401

        formats.append("tensorboard")
    except ImportError:
        pass
    logger = configure(str(out / "logs"), formats)
    if start_from is not None:
        overrides = {} if resume is not None else _ppo_settings(config)
        try:
            model = MaskablePPO.load(start_from, env=venv, device=config.device, **overrides)
        except ValueError as err:  # SB3: spaces differ
            venv.close()
            raise ValueError(
                f"{'resume' if resume else 'init_from'}: {start_from} does not fit this env "
                f"(observation/action spaces depend on max_sites): {err}"
            ) from err
        if init_from is not None:
            model.set_random_seed(config.seed)
        norm = norm_path_for(start_from)
        if config.normalize_obs and norm.exists():
            data = np.load(norm)
            venv.obs_rms.mean, venv.obs_rms.var = data["mean"], data["var"]
    else:
        torch.manual_seed(config.seed)
        model = MaskablePPO(
            "MlpPolicy",
            venv,
            policy_kwargs={"net_arch": list(config.net_arch)},
            seed=config.seed,
            device=config.device,
            verbose=0,
            **_ppo_settings(config),
        )
    model.set_logger(logger)
    start = time.perf_counter()
    model.learn(
        total_timesteps=config.total_timesteps,
        callback=_callbacks(config, out, venv),
        reset_num_timesteps=resume is None,  # a fine-tuning run counts from 0
        progress_bar=progress_bar,
    )
    seconds = time.perf_counter() - start
    model.save(out / MODEL_FILE)
    _save_norm(venv, out / NORM_FILE)
    cost = {"seconds": seconds, "timesteps": int(model.num_timesteps)}
    if init_from is not None:
        cost["init_from"] = str(start_from)
    (out / "training.json").write_text(json.dumps(cost, indent=2))
    venv.close()
    return out / MODEL_FILE
