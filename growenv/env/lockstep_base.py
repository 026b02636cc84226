"""What the lockstep vector envs share: SB3 ``VecEnv`` plumbing over a list of
:class:`~growenv.env.growth_env.GrowthEnv` s whose episodes do the bookkeeping, and the end of
a vector step (results to arrays, SB3 auto-reset of finished envs).

:class:`~growenv.env.lockstep.LockstepVecEnv` (stacked MLPs) and
:class:`~growenv.env.lockstep_dag.LockstepDagVecEnv` (DAGs) subclass it; they provide
``_start(e, seed)``, ``_measure(envs)`` and ``evaluate_split(split, envs)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv

__all__ = ["LockstepBase"]


class LockstepBase(VecEnv):
    """SB3 plumbing of a lockstep env over ``self.envs`` (GrowthEnvs)."""

    envs: list

    def step_async(self, actions: np.ndarray) -> None:
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise ValueError(
                f"actions: expected shape ({self.num_envs},) (one action per env), "
                f"got {actions.shape}"
            )
        self._actions = actions

    def _finish(self, results: list[Any]):
        """``(obs, rewards, dones, infos)`` of the envs' step ``results``; finished envs get
        their test metrics in :attr:`last_test` and are reset at once (SB3's auto-reset,
        the last observation in ``info["terminal_observation"]``)."""
        obs = np.zeros((self.num_envs, *self.observation_space.shape), dtype=np.float32)
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        dones = np.zeros(self.num_envs, dtype=bool)
        infos: list[dict] = []
        finished = []
        for e, (o, r, term, trunc, info) in enumerate(results):
            obs[e], rewards[e], dones[e] = o, r, term or trunc
            info["TimeLimit.truncated"] = trunc and not term
            if dones[e]:
                info["terminal_observation"] = o
                finished.append(e)
            infos.append(info)
        if finished:
            # test metrics of the finished networks, before their slots are reused
            loss, acc = self.evaluate_split("test", finished)
            self.last_test = {e: (loss[i], acc[i]) for i, e in enumerate(finished)}
            for e in finished:
                self._start(e, None)
            self._measure(finished)
            for e in finished:
                obs[e] = self.envs[e].episode.observation()
                self.reset_infos[e] = self.envs[e].episode.info()
        return obs, rewards, dones, infos

    def seed_each(self, seeds: list[int]) -> None:
        """Seeds of the next reset, one per env (instead of ``seed + i``)."""
        if len(seeds) != self.num_envs:
            raise ValueError(f"seeds: expected {self.num_envs} seeds, got {len(seeds)}")
        self._seeds = [int(s) for s in seeds]

    def action_masks(self) -> np.ndarray:
        """``(num_envs, n_actions)`` boolean array of the valid actions of every env."""
        return np.stack([env.action_masks() for env in self.envs])

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self.envs[i], attr_name) for i in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        for i in self._get_indices(indices):
            setattr(self.envs[i], attr_name, value)

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self):
        return [None for _ in range(self.num_envs)]
