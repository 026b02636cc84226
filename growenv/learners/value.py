"""Value-based growth learners: double DQN with reward shifting, and a contextual bandit.

Both learn a :class:`~growenv.learners.scorer.SlotScorer` (one network shared by every
expansion slot or site, so the agent works for any number of candidates) from a replay
buffer, acting masked epsilon-greedy on ``env.action_masks()``:

* ``algo="dqn"``: n-step double DQN (the online net picks the next action, the target net
  values it), undiscounted by default (``gamma=1``; a growth episode is short and its summed
  log-ratio reward is the objective), every reward shifted by ``reward_shift`` (the reward
  shifting of arXiv 2512.03805, which makes DQN work at dynamic algorithm configuration);
* ``algo="bandit"``: the same scorer regressed on the one-step reward (``gamma = 0``,
  ``n_step = 1``, no target net): a contextual bandit over expansion features;
* ``algo="rollout"``: approximate policy iteration from the heuristic ``rollout_base``: in
  every state visited, each action of the action set is rolled out on a copy of the env
  (the action, then the heuristic to the end) and the scorer is regressed on the returns'
  advantages (:mod:`growenv.learners.rollouts`); it then acts with no rollout. With
  ``rollout_base="never"`` the rollouts are the lookahead's (grow, then train to the end):
  the scorer learns which slots a lookahead should compare (``lookahead-learned:RUN``).

Episodes end at termination or truncation alike (``max_steps`` is part of the task and the
observation holds ``step_fraction``), so no return is bootstrapped past the end.
:func:`train_value_agent` writes a run directory that ``make_policy("dqn:RUN")`` loads
(:mod:`growenv.policies.value`). No global random state is changed: weights are initialised
and minibatches drawn inside :func:`~growenv.policies.ppo.keep_global_rngs` from the run's
seed, so the same config gives the same weights bit for bit (same machine, torch version
and thread count).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from growenv.errors import UserError
from growenv.harness.lifecycle import RunInterrupted, atomic_path, atomic_write_text, stop_signals
from growenv.harness.ppo_training import DEFAULT_ENV_KWARGS, PPOConfig, check_task_roles
from growenv.learners.demos import Demonstrations, collect_demonstrations, large_margin_loss
from growenv.learners.returns import NStepAccumulator, n_step_return
from growenv.learners.rollouts import (
    ROLLOUT_BASES,
    LabelBuffer,
    RolloutLabels,
    advantage_loss,
    never_obstacle,
)
from growenv.learners.scorer import (
    ACTION_SETS,
    BEST_MODEL_FILE,
    DAG_ACTION_SETS,
    MODEL_FILE,
    ObsLayout,
    SlotScorer,
    action_set_mask,
    infer_layout,
    layout_of,
    load_scorer,
    save_scorer,
)
from growenv.learners.wrappers import REWARD_MODES, make_reward_wrapper
from growenv.policies.ppo import keep_global_rngs
from growenv.threads import using_threads
from growenv.validation import boolean, choice, integer, real

__all__ = [
    "ALGOS",
    "BEST_MODEL_FILE",
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "MODEL_FILE",
    "PROGRESS_FILE",
    "NStepAccumulator",
    "ReplayBuffer",
    "ValueConfig",
    "ValueLearner",
    "double_dqn_target",
    "load_scorer",
    "n_step_return",
    "save_scorer",
    "train_value_agent",
]

ALGOS = ("dqn", "bandit", "rollout")
VEC_KINDS = ("dummy", "lockstep")
CONFIG_FILE = "config.json"
PROGRESS_FILE = "progress.csv"
CHECKPOINT_FILE = "checkpoint.pt"
"""Everything a resumed run continues from but the replay buffer (see
:func:`train_value_agent`)."""
NOT_SETTINGS = ("sessions", "best", "task_roles")
SELECTION_METRIC = "agent_over_greedy"
PROGRESS_COLUMNS = (
    "timesteps",
    "episodes",
    "updates",
    "epsilon",
    "loss",
    "mean_return",
    "seconds",
    "env_macs",
    "agent_val_loss",
    "greedy_val_loss",
    "agent_over_greedy",
)
_STREAM = 0x5EED_DA7A


@dataclass
class ValueConfig:
    """Everything a value-based training run depends on; saved as ``config.json``.

    Attributes
    ----------
    env_kwargs
        GrowthEnv keywords of the training envs (as ``PPOConfig.env_kwargs``).
    algo
        ``"dqn"`` (n-step double DQN), ``"bandit"`` (one-step reward regression; ``gamma``,
        ``n_step``, ``double`` and ``target_update`` are then unused) or ``"rollout"``
        (advantage regression on rollouts of ``rollout_base``; ``gamma``, ``n_step``,
        ``double``, ``target_update`` and ``reward_shift`` are unused).
    rollout_base
        The base policy a rollout follows after its first action (``algo="rollout"``;
        :data:`~growenv.learners.rollouts.ROLLOUT_BASES`): a heuristic, or ``"never"`` (no
        more growth: the rollouts are the lookahead's, training alone).
    gamma, n_step
        Discount (1: undiscounted) and steps of the bootstrapped return.
    reward_shift
        Constant added to every reward the learner stores (not to reported returns).
    reward_mode
        ``"step"`` (the env's rewards), ``"terminal"`` (0 until the episode ends, then its
        sum: :class:`~growenv.learners.wrappers.TerminalReward`) or ``"paired"`` (minus the
        rewards of ``reward_reference`` on the same episode:
        :class:`~growenv.learners.wrappers.PairedReward`).
    reward_reference
        The heuristic of ``reward_mode="paired"``.
    double
        Double DQN target (else the target net's max).
    target_update
        Gradient updates between copies of the online net into the target net.
    lr, batch_size, buffer_size
        Adam's learning rate; minibatch size; replay capacity (transitions).
    learning_starts
        Env steps before the first update; the input statistics of the scorer are frozen
        from the buffer then (``normalize_obs``).
    train_freq, gradient_steps
        Env steps (summed over envs) per update; gradient steps per update (SB3's names).
    eps_start, eps_end, eps_fraction
        Epsilon falls linearly from ``eps_start`` to ``eps_end`` over the first
        ``eps_fraction`` of ``total_timesteps``.
    hidden, node_inputs
        The scorer's hidden sizes; DAG: feed each slot its source and target node rows.
    action_set
        ``"all"``, ``"slots"`` (every valid slot; skip and stop only where none is),
        ``"best-per-kind"`` or ``"best-per-kind-skip"`` (DAG envs): the valid actions the
        agent chooses among, in training and when it is evaluated (saved with
        the scorer; see :data:`~growenv.learners.scorer.ACTION_SETS`).
    total_timesteps, n_envs, vec, seed, device
        Env steps of the run; envs stepped together (``"dummy"``: SB3's DummyVecEnv of
        GrowthEnvs; ``"lockstep"``: :class:`~growenv.env.lockstep.LockstepVecEnv`, step
        rewards only); seed of envs (``seed + i``), weights and sampling; the scorer's torch
        device.
    eval_every, eval_tasks, selection_seed_offset
        Env steps between greedy (epsilon 0) evaluations on the selection teachers (seeds
        ``selection_seed_offset ..``, disjoint from training's; 0: none), which keep
        ``best_model.pt``.
    log_every
        Env steps between rows of ``progress.csv`` (evaluations add rows too).
    demo_policy, demo_episodes
        Deep Q-learning from demonstrations (:mod:`growenv.learners.demos`): a heuristic of
        the policy registry (e.g. ``"round-robin"``) run for ``demo_episodes`` episodes on
        training tasks before the run; its transitions stay in their own buffer (0: none).
    demo_pretrain
        Gradient updates on the demonstrations alone before the first env step.
    demo_fraction
        Share of every minibatch drawn from the demonstrations.
    demo_margin, demo_weight
        DQfD's large margin and the weight of its loss, added to the TD loss of the
        demonstrated transitions.
    """

    env_kwargs: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_ENV_KWARGS))
    algo: str = "dqn"
    rollout_base: str = "round-robin"
    gamma: float = 1.0
    n_step: int = 3
    reward_shift: float = 0.0
    reward_mode: str = "step"
    reward_reference: str = "round-robin"
    double: bool = True
    target_update: int = 100
    lr: float = 1e-3
    batch_size: int = 64
    buffer_size: int = 20_000
    learning_starts: int = 200
    train_freq: int = 2
    gradient_steps: int = 1
    eps_start: float = 1.0
    eps_end: float = 0.05
    eps_fraction: float = 0.3
    hidden: tuple[int, ...] = (64, 64)
    node_inputs: bool = True
    action_set: str = "all"
    normalize_obs: bool = True
    total_timesteps: int = 2_000
    n_envs: int = 4
    vec: str = "dummy"
    seed: int = 0
    device: str = "cpu"
    eval_every: int = 500
    eval_tasks: int = 4
    selection_seed_offset: int = 10**6
    log_every: int = 100
    demo_policy: str = ""
    demo_episodes: int = 0
    demo_pretrain: int = 0
    demo_fraction: float = 0.25
    demo_margin: float = 0.8
    demo_weight: float = 1.0

    # the task roles read env_kwargs, selection_seed_offset and eval_tasks, as PPO's do
    train_task_seeds = PPOConfig.train_task_seeds
    selection_task_seeds = PPOConfig.selection_task_seeds

    def validate(self, build_env: bool = True) -> ValueConfig:
        """Check every setting (one-line ``ValueError`` naming the first bad one) and, with
        ``build_env``, the env settings (one env is built); return ``self``."""
        choice("algo", self.algo, ALGOS)
        choice("reward_mode", self.reward_mode, REWARD_MODES)
        choice("vec", self.vec, VEC_KINDS)
        choice("action_set", self.action_set, ACTION_SETS)
        choice("rollout_base", self.rollout_base, ROLLOUT_BASES)
        real("gamma", self.gamma, 0.0, 1.0)
        real("reward_shift", self.reward_shift, finite=True)
        real("lr", self.lr, 0.0, exclusive=True, finite=True)
        for name in ("eps_start", "eps_end"):
            real(name, getattr(self, name), 0.0, 1.0)
        real("eps_fraction", self.eps_fraction, 0.0, 1.0)
        real("demo_fraction", self.demo_fraction, 0.0, 1.0, exclusive=True)
        real("demo_margin", self.demo_margin, 0.0, finite=True)
        real("demo_weight", self.demo_weight, 0.0, finite=True)
        boolean("double", self.double)
        boolean("node_inputs", self.node_inputs)
        boolean("normalize_obs", self.normalize_obs)
        for name in (
            "n_step",
            "target_update",
            "batch_size",
            "buffer_size",
            "train_freq",
            "gradient_steps",
            "total_timesteps",
            "n_envs",
            "log_every",
        ):
            integer(name, getattr(self, name), 1)
        for name in (
            "learning_starts",
            "seed",
            "eval_every",
            "eval_tasks",
            "selection_seed_offset",
            "demo_episodes",
            "demo_pretrain",
        ):
            integer(name, getattr(self, name), 0)
        self._validate_heuristics()
        if not isinstance(self.hidden, (tuple, list)) or not self.hidden:
            raise UserError(f"hidden: expected one or more layer sizes, got {self.hidden!r}")
        for h in self.hidden:
            integer("hidden", h, 1)
        if not isinstance(self.env_kwargs, dict):
            raise UserError(f"env_kwargs: expected a dict, got {self.env_kwargs!r}")
        if self.algo == "rollout" and self.vec != "dummy":
            raise UserError(f"vec: expected 'dummy' with algo='rollout' (it copies each env), "
                            f"got {self.vec!r}")  # fmt: skip
        if self.algo == "rollout" and self.reward_mode != "step":
            raise UserError(f"reward_mode: expected 'step' with algo='rollout', got "
                            f"{self.reward_mode!r}")  # fmt: skip
        if self.vec == "lockstep" and self.reward_mode != "step":
            raise UserError(
                f"reward_mode: expected 'step' with vec='lockstep', got {self.reward_mode!r}"
            )
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError, ValueError):
            raise UserError(f"device: expected a torch device, got {self.device!r}") from None
        if build_env:
            from growenv.env.config import EnvConfig

            env_config = EnvConfig.from_kwargs(**self.env_kwargs)
            if self.action_set in DAG_ACTION_SETS and not env_config.expansions:
                raise UserError(
                    f"action_set: {self.action_set!r} needs a dag env (env_kwargs net='dag'), "
                    f"got net={env_config.net!r}"
                )
            if self.algo == "rollout" and self.rollout_base == "never":
                problem = never_obstacle(env_config)
                if problem is not None:
                    raise UserError(f"rollout_base: {problem}")
            check_task_roles(
                {
                    "train": (self.train_task_seeds(), "env_kwargs task_kwargs"),
                    "selection": (
                        self.selection_task_seeds(),
                        "selection_seed_offset, eval_tasks",
                    ),
                }
            )
        return self

    def _validate_heuristics(self) -> None:
        """The heuristics named by ``reward_reference`` and ``demo_*`` (one line each)."""
        from growenv.policies.registry import POLICIES

        heuristics = [name for name, entry in POLICIES.items() if not entry.learned]
        if self.reward_reference not in heuristics:
            raise UserError(
                f"reward_reference: expected a heuristic ({', '.join(heuristics)}), "
                f"got {self.reward_reference!r}"
            )
        if not isinstance(self.demo_policy, str) or (
            self.demo_policy and self.demo_policy not in heuristics
        ):
            raise UserError(
                f"demo_policy: expected '' or a heuristic ({', '.join(heuristics)}), "
                f"got {self.demo_policy!r}"
            )
        if self.demo_episodes and not self.demo_policy:
            raise UserError(
                f"demo_policy: expected a heuristic with demo_episodes={self.demo_episodes}, got ''"
            )
        if self.demo_pretrain and not self.demo_episodes:
            raise UserError(
                f"demo_episodes: expected >= 1 with demo_pretrain={self.demo_pretrain}, got 0"
            )

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        data = dataclasses.asdict(self)
        data["hidden"] = list(self.hidden)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ValueConfig:
        """The config of a ``config.json`` dict (run records are skipped; unknown keys are
        refused with one line)."""
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k not in NOT_SETTINGS}
        unknown = set(data) - known
        if unknown:
            raise UserError(f"config: unknown keys {sorted(unknown)}")
        if "hidden" in data:
            data["hidden"] = tuple(data["hidden"])
        return cls(**data)

    @property
    def effective_gamma(self) -> float:
        """``gamma`` (0 for the bandit and rollouts, which bootstrap nothing)."""
        return 0.0 if self.algo in ("bandit", "rollout") else float(self.gamma)

    @property
    def effective_n_step(self) -> int:
        """``n_step`` (1 for the bandit and rollouts)."""
        return 1 if self.algo in ("bandit", "rollout") else int(self.n_step)

    def epsilon(self, timesteps: int) -> float:
        """Exploration rate after ``timesteps`` env steps (linear schedule)."""
        span = self.eps_fraction * self.total_timesteps
        frac = 1.0 if span <= 0 else min(timesteps / span, 1.0)
        return float(self.eps_start + frac * (self.eps_end - self.eps_start))


# --------------------------------------------------------------------------- pure math


def double_dqn_target(
    returns: torch.Tensor,
    discounts: torch.Tensor,
    q_online_next: torch.Tensor,
    q_target_next: torch.Tensor,
    double: bool = True,
) -> torch.Tensor:
    """Bootstrapped targets ``R + d Q_target(s', a*)`` of a batch.

    Parameters
    ----------
    returns
        ``(B,)`` n-step returns ``sum_k gamma^k r_k``.
    discounts
        ``(B,)`` ``gamma^n`` of the bootstrap, 0 where the episode ended.
    q_online_next, q_target_next
        ``(B, A)`` Q-values of the next states by the online and the target net, ``-inf``
        on masked actions.
    double
        ``a* = argmax q_online_next`` (double DQN), else the target's own max.
    """
    if double:
        best = q_online_next.argmax(1, keepdim=True)
        value = q_target_next.gather(1, best)[:, 0]
    else:
        value = q_target_next.max(1).values
    value = torch.where(discounts > 0, value, torch.zeros_like(value))
    return returns + discounts * value


class ReplayBuffer:
    """A ring buffer of n-step transitions (numpy arrays); sampling uses the caller's
    :class:`numpy.random.Generator`."""

    def __init__(self, capacity: int, obs_size: int, n_actions: int) -> None:
        self.capacity, self.size, self.pos = int(capacity), 0, 0
        self.obs = np.zeros((capacity, obs_size), np.float32)
        self.next_obs = np.zeros((capacity, obs_size), np.float32)
        self.action = np.zeros(capacity, np.int64)
        self.ret = np.zeros(capacity, np.float32)
        self.disc = np.zeros(capacity, np.float32)
        self.next_mask = np.zeros((capacity, n_actions), bool)

    def add(self, obs, action, ret, next_obs, next_mask, disc) -> None:
        """Store one transition (overwriting the oldest when full)."""
        i = self.pos
        self.obs[i], self.action[i], self.ret[i] = obs, action, ret
        self.next_obs[i], self.next_mask[i], self.disc[i] = next_obs, next_mask, disc
        self.pos, self.size = (i + 1) % self.capacity, min(self.size + 1, self.capacity)

    def sample(self, rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
        """``batch`` transitions drawn uniformly with replacement."""
        idx = rng.integers(0, self.size, batch)
        return {
            "obs": self.obs[idx],
            "action": self.action[idx],
            "ret": self.ret[idx],
            "next_obs": self.next_obs[idx],
            "next_mask": self.next_mask[idx],
            "disc": self.disc[idx],
        }


# --------------------------------------------------------------------------- model files


# --------------------------------------------------------------------------- learner


class ValueLearner:
    """Masked epsilon-greedy collection, replay and DQN/bandit updates on any vector env.

    ``venv`` follows SB3's VecEnv conventions (``reset() -> obs``, ``step(actions) -> obs,
    rewards, dones, infos`` with auto-reset and ``info["terminal_observation"]``);
    ``masks()`` returns the ``(n_envs, S + 2)`` valid actions. The weights are initialised
    from ``config.seed`` and exploration and minibatches drawn from the learner's own numpy
    generator; no global random state is read or changed.
    """

    def __init__(
        self, config: ValueConfig, layout: ObsLayout, venv: Any, masks: Callable[[], np.ndarray]
    ) -> None:
        self.config, self.layout, self.venv, self.masks = config, layout, venv, masks
        self.device = torch.device(config.device)
        with keep_global_rngs():  # the weights come from the seed; the caller's state stays
            torch.manual_seed(config.seed)
            # a non-dag layout with action_set "best-per-kind" is a one-line ValueError here
            scorer_args = (layout.kind, tuple(config.hidden), config.node_inputs, config.action_set)
            self.online = SlotScorer(*scorer_args)
        self.online.to(self.device)
        self.target = SlotScorer(*scorer_args)
        self.target.to(self.device).load_state_dict(self.online.state_dict())
        self.optim = torch.optim.Adam(self.online.parameters(), lr=config.lr)
        self.rng = np.random.default_rng(np.random.SeedSequence([config.seed, _STREAM]))
        n_actions = layout.num_slots + 2
        self.buffer = ReplayBuffer(config.buffer_size, layout.size, n_actions)
        self.labels = (  # rollouts learn from labelled states, not from the replay buffer
            LabelBuffer(config.buffer_size, layout.size, n_actions)
            if config.algo == "rollout"
            else None
        )
        self.acc = NStepAccumulator(venv.num_envs, config.effective_n_step, config.effective_gamma)
        self.timesteps = self.updates = self.episodes = 0
        self.start_timesteps = 0  # where this session began (a resumed run: its checkpoint)
        self.normalised = not config.normalize_obs
        self.returns: collections.deque = collections.deque(maxlen=20)
        self.losses: collections.deque = collections.deque(maxlen=50)
        self._ep_return = np.zeros(venv.num_envs)
        self._ep_compute = np.zeros(venv.num_envs)
        self.env_macs = 0.0  # multiply-adds of the training envs' episodes and rollouts
        self.obs: np.ndarray | None = None
        self.demos: Demonstrations | None = None

    # ---------------------------------------------------------------- acting
    def q_values(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Masked Q ``(B, A)`` of the online net (``-inf`` on invalid actions)."""
        with torch.no_grad(), using_threads(1):
            o = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
            m = torch.as_tensor(mask, dtype=torch.bool, device=self.device)
            return self.online(o, self.layout, m).cpu().numpy()

    def select(self, obs: np.ndarray, mask: np.ndarray, epsilon: float) -> np.ndarray:
        """Masked epsilon-greedy actions: a uniform valid action with probability
        ``epsilon``, else the valid action of largest Q."""
        greedy = self.q_values(obs, mask).argmax(1)
        actions = greedy.copy()
        allowed = mask
        if epsilon > 0:  # exploration draws from the scorer's action set
            with torch.no_grad():
                o, m = torch.as_tensor(obs, dtype=torch.float32), torch.as_tensor(mask)
                allowed = self.online.allowed(o, self.layout, m).numpy()
        for i in range(len(obs)):
            if self.rng.random() < epsilon:
                actions[i] = self.rng.choice(np.flatnonzero(allowed[i]))
        return actions

    # ---------------------------------------------------------------- learning
    def add_demonstrations(self, demos: Demonstrations) -> None:
        """Keep ``demos`` for the run: a share ``demo_fraction`` of every minibatch, with
        DQfD's large-margin loss on it (:func:`~growenv.learners.demos.large_margin_loss`)."""
        self.demos = demos

    def pretrain(self, updates: int) -> None:
        """``updates`` gradient steps on the demonstrations alone (the scorer's input
        statistics are frozen from them first)."""
        if self.demos is None:
            raise ValueError("pretrain: expected demonstrations (add_demonstrations) first")
        with using_threads(1):
            if not self.normalised:
                self._freeze_normalisation(self.demos.obs)
            for _ in range(int(updates)):
                self.losses.append(self.update())
        self.target.load_state_dict(self.online.state_dict())

    def _rollout_update(self) -> float:
        """One gradient step of advantage regression on a minibatch of labelled states."""
        assert self.labels is not None
        batch = self.labels.sample(self.rng, self.config.batch_size)
        obs = torch.as_tensor(batch["obs"], device=self.device)
        labels = torch.as_tensor(batch["labels"], device=self.device)
        loss = advantage_loss(self.online(obs, self.layout), labels)
        self.optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.online.parameters(), 10.0)
        self.optim.step()
        self.updates += 1
        return float(loss.detach())

    def _minibatch(self) -> tuple[dict[str, np.ndarray], int]:
        """A minibatch (replay, then demonstrations) and how many rows are demonstrations."""
        cfg = self.config
        if self.demos is None:
            return self.buffer.sample(self.rng, cfg.batch_size), 0
        n_demo = cfg.batch_size
        if self.buffer.size:
            n_demo = min(max(1, round(cfg.demo_fraction * cfg.batch_size)), cfg.batch_size - 1)
        demo = self.demos.sample(self.rng, n_demo)
        if n_demo == cfg.batch_size:
            return demo, n_demo
        replay = self.buffer.sample(self.rng, cfg.batch_size - n_demo)
        batch = {k: np.concatenate([replay[k], demo[k]]) for k in replay}
        batch["mask"] = demo["mask"]
        return batch, n_demo

    def update(self) -> float:
        """One gradient step on a replay minibatch (with demonstrations: a share of them,
        with the large-margin loss); returns the loss."""
        cfg = self.config
        if cfg.algo == "rollout":
            return self._rollout_update()
        batch, n_demo = self._minibatch()
        t = {k: torch.as_tensor(v, device=self.device) for k, v in batch.items()}
        q_all = self.online(t["obs"], self.layout)
        q = q_all.gather(1, t["action"][:, None])[:, 0]
        with torch.no_grad():
            if cfg.algo == "bandit":
                y = t["ret"]
            else:
                mask = t["next_mask"]
                y = double_dqn_target(
                    t["ret"],
                    t["disc"],
                    self.online(t["next_obs"], self.layout, mask),
                    self.target(t["next_obs"], self.layout, mask),
                    cfg.double,
                )
        loss = torch.nn.functional.smooth_l1_loss(q, y)
        if n_demo:
            obs_e, act_e = t["obs"][-n_demo:], t["action"][-n_demo:]
            with torch.no_grad():
                allowed = self.online.allowed(obs_e, self.layout, t["mask"])
            margin = large_margin_loss(q_all[-n_demo:], act_e, allowed, cfg.demo_margin)
            loss = loss + cfg.demo_weight * margin
        self.optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.online.parameters(), 10.0)
        self.optim.step()
        self.updates += 1
        if cfg.algo == "dqn" and self.updates % cfg.target_update == 0:
            self.target.load_state_dict(self.online.state_dict())
        return float(loss.detach())

    def _freeze_normalisation(self, obs: np.ndarray | None = None) -> None:
        if obs is None:
            buffer = self.buffer if self.labels is None else self.labels
            obs = buffer.obs[: buffer.size]
        obs = torch.as_tensor(obs, device=self.device)
        for net in (self.online, self.target):
            net.set_normalisation(obs, self.layout)
        self.normalised = True

    def step(self) -> None:
        """One vector step of every env, its transitions stored, and the updates due (the
        scorer's work on one torch thread: its matrices are small)."""
        with using_threads(1):
            self._step()

    def _step(self) -> None:
        cfg = self.config
        if self.obs is None:
            self.obs = self.venv.reset()
        mask = self.masks()
        actions = self.select(self.obs, mask, cfg.epsilon(self.timesteps))
        new_obs, rewards, dones, infos = self.venv.step(actions)
        new_mask = self.masks()
        for i in range(len(actions)):
            done = bool(dones[i])
            self._ep_return[i] += float(rewards[i])
            # the episode's multiply-adds so far, reset included (NaN: a venv that does not
            # report them leaves the count unknown, not low)
            compute = float(infos[i].get("compute", np.nan))
            self.env_macs += compute - self._ep_compute[i] + infos[i].get("rollout_macs", 0.0)
            self._ep_compute[i] = 0.0 if done else compute
            if self.labels is not None:  # rollouts: the labelled state, no transition
                self.labels.add(self.obs[i], infos[i]["rollout_returns"])
            else:
                next_obs = infos[i]["terminal_observation"] if done else new_obs[i]
                next_mask = np.ones_like(new_mask[i]) if done else new_mask[i]
                for tr in self.acc.push(
                    i, self.obs[i], actions[i], float(rewards[i]) + cfg.reward_shift,
                    next_obs, next_mask, done,
                ):  # fmt: skip
                    self.buffer.add(*tr)
            if done:
                self.episodes += 1
                self.returns.append(self._ep_return[i])
                self._ep_return[i] = 0.0
        self.obs = new_obs
        before, self.timesteps = self.timesteps, self.timesteps + len(actions)
        warm = self.start_timesteps + cfg.learning_starts
        filled = self.buffer.size if self.labels is None else self.labels.size
        if self.timesteps < warm or filled < 1:
            return
        if not self.normalised:
            self._freeze_normalisation()
        due = (self.timesteps - warm) // cfg.train_freq - (
            max(before, warm) - warm
        ) // cfg.train_freq
        if before < warm <= self.timesteps:
            due += 1
        for _ in range(due * cfg.gradient_steps):
            self.losses.append(self.update())

    # ---------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        """What a resumed run continues from (no replay buffer)."""
        return {
            "online": self.online.state_dict(),
            "target": self.target.state_dict(),
            "optim": self.optim.state_dict(),
            "rng": json.dumps(self.rng.bit_generator.state),
            "timesteps": self.timesteps,
            "updates": self.updates,
            "episodes": self.episodes,
            "normalised": self.normalised,
            "env_macs": float(self.env_macs),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state`'s dict."""
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        self.optim.load_state_dict(state["optim"])
        self.rng.bit_generator.state = json.loads(state["rng"])
        self.timesteps = self.start_timesteps = int(state["timesteps"])
        self.updates, self.episodes = int(state["updates"]), int(state["episodes"])
        self.normalised = bool(state["normalised"])
        self.env_macs = float(state.get("env_macs", 0.0))


# --------------------------------------------------------------------------- runs


def _make_venv(config: ValueConfig, task: Any, seed: int):
    """The training envs and their masks function."""
    if config.vec == "lockstep":
        from stable_baselines3.common.vec_env import VecMonitor

        from growenv.env.lockstep import LockstepVecEnv

        extra = {} if task is None else {"task": task}
        venv = LockstepVecEnv(config.n_envs, seed=seed, **config.env_kwargs, **extra)
        return VecMonitor(venv), venv.action_masks
    from stable_baselines3.common.vec_env import DummyVecEnv

    from growenv.env.growth_env import GrowthEnv

    def make():
        env = GrowthEnv(**config.env_kwargs, **({} if task is None else {"task": task}))
        if config.algo == "rollout":
            return RolloutLabels(env, config.rollout_base, _candidates(config, env))
        return make_reward_wrapper(env, config.reward_mode, config.reward_reference)

    venv = DummyVecEnv([make for _ in range(config.n_envs)])
    venv.seed(seed)
    return venv, lambda: np.stack(venv.env_method("action_masks"))


def _candidates(config: ValueConfig, env: Any) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The actions a rollout learner labels in a state: its action set's."""
    layout = layout_of_env(int(env.observation_space.shape[0]), env)

    def candidates(obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        o, m = torch.as_tensor(obs, dtype=torch.float32)[None], torch.as_tensor(mask)[None]
        return action_set_mask(config.action_set, o, layout, m)[0].numpy()

    return candidates


def _write_progress(path: Path, row: dict[str, Any]) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=PROGRESS_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in PROGRESS_COLUMNS})


def _truncate_progress(path: Path, timesteps: int) -> None:
    """Drop the rows of ``progress.csv`` logged after ``timesteps`` (a run resumed from a
    checkpoint logs them again)."""
    if not path.is_file():
        return
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    keep = [r for r in rows if int(float(r["timesteps"])) <= timesteps]
    if len(keep) == len(rows):
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=PROGRESS_COLUMNS)
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in PROGRESS_COLUMNS} for r in keep)


def selection_tasks(config: ValueConfig) -> list[Any]:
    """The selection teachers of ``config`` (seeds ``selection_task_seeds()``): drawn from
    the training distribution (its ``task_kwargs``: classes, depths, widths, split sizes)
    when the env's task is ``teacher_student_distribution``, else from the default one."""
    from growenv.data.tasks import TeacherStudentDistribution, held_out_teachers
    from growenv.env.config import DISTRIBUTION_NAME

    n, offset = config.eval_tasks, config.selection_seed_offset
    if config.env_kwargs.get("task") != DISTRIBUTION_NAME:
        return held_out_teachers(n, seed_offset=offset)
    fields = {f.name for f in dataclasses.fields(TeacherStudentDistribution)}
    kwargs = config.env_kwargs.get("task_kwargs") or {}
    dist = TeacherStudentDistribution(**{k: v for k, v in kwargs.items() if k in fields})
    overrides = {k: v for k, v in kwargs.items() if k not in fields}
    return dist.held_out_teachers(n, seed_offset=offset, **overrides)


def _evaluate(learner: ValueLearner, config: ValueConfig) -> dict[str, float]:
    """Final validation loss of the greedy agent and of the greedy rule on the selection
    teachers (global random states kept)."""
    from growenv.harness.episodes import run_episode
    from growenv.policies.heuristics import GreedyPolicy
    from growenv.policies.value import ValuePolicy

    policy = ValuePolicy(learner.online, name="dqn:training", device=config.device)
    kwargs = {k: v for k, v in config.env_kwargs.items() if k not in ("task", "task_kwargs")}
    agent, greedy = [], []
    with keep_global_rngs():
        for i, task in enumerate(selection_tasks(config)):
            for pol, losses in ((policy, agent), (GreedyPolicy(), greedy)):
                losses.append(run_episode({**kwargs, "task": task}, pol, i)[-1]["val_loss"])
    return {
        "agent_val_loss": float(np.mean(agent)),
        "greedy_val_loss": float(np.mean(greedy)),
        SELECTION_METRIC: float(np.mean(np.array(agent) / np.array(greedy))),
    }


def train_value_agent(
    config: ValueConfig,
    out_dir: str | Path,
    task: Any = None,
    resume: bool = False,
    on_eval: Callable[[int, dict[str, float]], Any] | None = None,
) -> Path:
    """Train a value-based growth agent (double DQN or contextual bandit); write a run.

    Files in ``out_dir``: ``config.json`` (the settings, ``task_roles``, ``best``,
    ``sessions``), ``model.pt`` (last scorer), ``best_model.pt`` (the scorer of the best
    greedy evaluation on the selection teachers, lowest mean final validation loss over
    greedy's; only with ``eval_every > 0``), ``progress.csv`` (timesteps, episodes,
    updates, epsilon, mean loss, mean episode return, seconds, ``env_macs``: multiply-adds
    of the training envs' episodes and rollouts, not of demonstrations or evaluations;
    evaluations) and ``checkpoint.pt`` (resume state, saved at every evaluation, on
    SIGINT/SIGTERM and at the end).

    Parameters
    ----------
    config
        The settings (validated here).
    out_dir
        Run directory; an existing run there (``config.json`` or ``model.pt``) is refused
        unless ``resume``.
    task
        A task object (``Task``, distribution, callable) for the training envs instead of
        ``env_kwargs["task"]``.
    resume
        Continue the run in ``out_dir`` from its ``checkpoint.pt`` (weights, target net,
        optimiser, input statistics, counters and sampling state). The replay buffer is not
        kept: it refills, and updates wait ``learning_starts`` env steps again; envs restart
        with seeds ``seed + timesteps + i``. A resumed run is therefore not bitwise equal to
        an uninterrupted one.
    on_eval
        Called as ``on_eval(timesteps, result)`` after each evaluation.

    Returns
    -------
    Path
        ``out_dir/model.pt``.

    Raises
    ------
    FileExistsError
        An existing run without ``resume``.
    FileNotFoundError
        ``resume`` without a checkpoint.
    RunInterrupted
        On SIGINT/SIGTERM, after saving ``checkpoint.pt`` and ``model.pt``.
    """
    config.validate()
    out = Path(out_dir)
    ckpt = out / CHECKPOINT_FILE
    if resume:
        if not ckpt.is_file():
            raise FileNotFoundError(f"resume: expected {ckpt}, a run's checkpoint; it is missing")
    elif (out / CONFIG_FILE).exists() or (out / MODEL_FILE).exists():
        raise FileExistsError(
            f"out_dir: {out} already holds a run; resume it (resume=True) or choose another "
            "directory"
        )
    out.mkdir(parents=True, exist_ok=True)
    saved = json.loads((out / CONFIG_FILE).read_text()) if resume else {}
    sessions = saved.get("sessions", [])
    best = saved.get("best")
    layout = layout_of(config.env_kwargs)
    stop = {"flag": False}
    with keep_global_rngs():
        state = torch.load(ckpt, weights_only=True) if resume else None
        start = 0 if state is None else int(state["timesteps"])
        if state is not None:
            _truncate_progress(out / PROGRESS_FILE, start)
        venv, masks = _make_venv(config, task, config.seed + start)
        learner = ValueLearner(config, layout, venv, masks)
        if state is not None:
            learner.load_state(state)
        session = {"start_timesteps": start, "status": "running", "started": time.ctime()}
        sessions.append(session)
        clock = time.perf_counter()
        if config.demo_episodes:  # the same episodes on resume; pretrained only once
            demos = collect_demonstrations(
                config.env_kwargs,
                config.demo_policy,
                config.demo_episodes,
                config.seed,
                config.effective_n_step,
                config.effective_gamma,
                config.reward_shift,
                task,
                config.reward_mode,
                config.reward_reference,
            )
            learner.add_demonstrations(demos)
            session["demo_mean_return"] = float(np.mean(demos.returns))
            if state is None and config.demo_pretrain:
                learner.pretrain(config.demo_pretrain)

        def write_config() -> None:
            data = {**config.to_json(), "task_roles": _roles(config), "sessions": sessions}
            if best is not None:
                data["best"] = best
            atomic_write_text(out / CONFIG_FILE, json.dumps(data, indent=2) + "\n")

        def save(status: str) -> None:
            session.update(
                status=status,
                end_timesteps=learner.timesteps,
                seconds=time.perf_counter() - clock,
            )
            save_scorer(learner.online, out / MODEL_FILE, {"timesteps": learner.timesteps})
            with atomic_path(ckpt) as tmp:
                torch.save(learner.state(), tmp)
            write_config()

        write_config()
        next_log = (start // config.log_every + 1) * config.log_every
        every = config.eval_every
        next_eval = (start // every + 1) * every if every else None
        try:
            with stop_signals(lambda signum: stop.update(flag=True)):
                while learner.timesteps < config.total_timesteps and not stop["flag"]:
                    learner.step()
                    t = learner.timesteps
                    row: dict[str, Any] | None = None
                    evaluated = next_eval is not None and t >= next_eval and learner.normalised
                    if evaluated:
                        next_eval = (t // every + 1) * every
                        result = _evaluate(learner, config)
                        row = dict(result)
                        if best is None or result[SELECTION_METRIC] < best[SELECTION_METRIC]:
                            best = {"timesteps": t, **result, "model": BEST_MODEL_FILE}
                            save_scorer(learner.online, out / BEST_MODEL_FILE, {"timesteps": t})
                            write_config()
                        if on_eval is not None:
                            on_eval(t, result)
                    if row is not None or t >= next_log or t >= config.total_timesteps:
                        next_log = (t // config.log_every + 1) * config.log_every
                        row = row or {}
                        row.update(
                            timesteps=t,
                            episodes=learner.episodes,
                            updates=learner.updates,
                            epsilon=config.epsilon(t),
                            loss=float(np.mean(learner.losses)) if learner.losses else "",
                            mean_return=float(np.mean(learner.returns)) if learner.returns else "",
                            seconds=round(time.perf_counter() - clock, 3),
                            env_macs=f"{learner.env_macs:.6g}",
                        )
                        _write_progress(out / PROGRESS_FILE, row)
                    if evaluated:  # a resumable point (a Ray trial runs off the main thread,
                        save("running")  # where no signal handler can save it)
        finally:
            venv.close()
        if stop["flag"] and learner.timesteps < config.total_timesteps:
            save("interrupted")
            raise RunInterrupted(
                f"train interrupted at {learner.timesteps} of {config.total_timesteps} steps: "
                f"saved {ckpt}; resume with resume=True (--resume)",
                ckpt,
            )
        save("completed")
    return out / MODEL_FILE


def _roles(config: ValueConfig) -> dict[str, str]:
    train = config.train_task_seeds()
    sel = config.selection_task_seeds()

    def describe(seeds: Sequence[int]) -> str:
        return f"{min(seeds)}-{max(seeds)}" if len(seeds) > 1 else str(seeds[0])

    return {
        "train": "no teachers" if not train else describe(train),
        "selection": describe(sel) if sel and config.eval_every else "none (no evaluation)",
        "test": "chosen by the bench; checked disjoint from train and selection",
    }


def infer_kind(env: Any) -> str:
    """``"dag"`` for an env with expansion slots (``env.slot_layout`` set), else
    ``"sites"``."""
    return "dag" if getattr(env, "slot_layout", None) is not None else "sites"


def layout_of_env(obs_size: int, env: Any) -> ObsLayout:
    """The layout of an env's observations of length ``obs_size``."""
    return infer_layout(obs_size, infer_kind(env))
