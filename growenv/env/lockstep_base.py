"""What the lockstep vector envs share: SB3 ``VecEnv`` plumbing over a list of
:class:`~growenv.env.growth_env.GrowthEnv` s whose episodes do the bookkeeping, and the end of
a vector step (results to arrays, SB3 auto-reset of finished envs).

:class:`~growenv.env.lockstep.LockstepVecEnv` (stacked MLPs) and
:class:`~growenv.env.lockstep_dag.LockstepDagVecEnv` (DAGs) subclass it; they provide
``_start(e, seed)``, ``_grow_all(growing)``, ``_measure(envs)`` and
``evaluate_split(split, envs)``.
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

    def _step_wait(self):
        """One vector step: each env's episode validates its action (stop ends it), the
        growths are done (:meth:`_grow_all`, the subclass's batching), the stepped envs are
        trained and measured together (``_measure``), their episodes end the step, and
        :meth:`_finish` makes SB3's arrays."""
        actions, self._actions = self._actions, None
        results: list[Any] = [None] * self.num_envs
        before: dict[int, tuple] = {}
        invalid: dict[int, bool] = {}
        growing: dict[int, list[int]] = {}
        for e, env in enumerate(self.envs):
            try:
                action, invalid[e] = env.episode.validate_action(actions[e])
            except ValueError as err:
                raise ValueError(f"actions[{e}]: {err}") from None
            if action == env.stop_action:
                results[e] = env.episode.stop()
                continue
            before[e] = env.episode.begin_step()
            if action < env.max_sites:
                growing.setdefault(action, []).append(e)
        self._grow_all(growing)
        active = sorted(before)
        if active:
            self._measure(active)
        for e in active:
            results[e] = self.envs[e].episode.end_step(before[e], invalid[e])
        return self._finish(results)

    def _grow_all(self, growing: dict[int, list[int]]) -> None:
        """Grow slot ``s`` of every env in ``growing[s]``."""
        raise NotImplementedError

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
