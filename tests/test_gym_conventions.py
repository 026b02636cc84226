"""Gymnasium / SB3 conventions with the default env (issue #20): both checkers, random-action
rollouts (plain, wrapped, sync and async vector envs), no stepping past the episode's end,
the id without ``import growenv``, reproducible resets, threads on purpose, fork safety."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest
import torch

import growenv
from growenv.data.tasks import make_task
from growenv.env.config import EnvConfig

# only the sizes are small: every convention under test (invalid_action, threads) is default
SMALL = dict(
    train_steps=2,
    batch_size=32,
    max_steps=5,
    task_kwargs=dict(n_train=128, n_stats=64, n_val=64, n_test=64),
)
TIMEOUT = 150  # seconds for a subprocess: a hang fails the test instead of the suite


def run_python(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (``timeout`` kills a hang)."""
    return subprocess.run(
        ["timeout", str(TIMEOUT), sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT + 30,
    )


def test_defaults_accept_every_action():
    assert EnvConfig().invalid_action == "skip" and EnvConfig().threads == 1
    env = gym.make("growenv/Grow-v1", **SMALL)
    _, info = env.reset(seed=0)
    masked = np.flatnonzero(~info["action_mask"])
    assert len(masked)  # the start net has 2 of 4 sites
    _, _, _, _, after = env.step(int(masked[0]))
    assert after["invalid_action"] and after["grown_site"] == -1
    assert after["params"] == info["params"]  # the skip action: no growth


def test_sb3_env_checker_with_no_arguments():
    from stable_baselines3.common.env_checker import check_env

    # failed with "action: 3 (grow site 3) is masked in this state" (SB3 samples blindly)
    check_env(gym.make("growenv/Grow-v1").unwrapped, warn=True)


def test_gymnasium_env_checker_with_default_conventions():
    from gymnasium.utils.env_checker import check_env

    check_env(gym.make("growenv/Grow-v1", **SMALL).unwrapped, skip_render_check=True)


def random_rollout(env: gym.Env, episodes: int, seed: int) -> list[float]:
    """Episodes of ``action_space.sample()`` actions; their returns."""
    env.action_space.seed(seed)
    returns = []
    env.reset(seed=seed)
    for _ in range(episodes):
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += reward
            done = terminated or truncated
        returns.append(total)
        env.reset()
    return returns


def test_random_actions_plain_and_wrapped():
    random_rollout(gym.make("growenv/Grow-v1", **SMALL), episodes=3, seed=1)
    wrapped = gym.wrappers.RecordEpisodeStatistics(gym.make("growenv/Grow-v1", **SMALL))
    returns = random_rollout(wrapped, episodes=2, seed=2)
    assert len(wrapped.return_queue) == 2
    assert np.allclose(list(wrapped.return_queue), returns, atol=1e-5)


def test_random_actions_sync_vector_env():
    envs = gym.make_vec("growenv/Grow-v1", num_envs=2, vectorization_mode="sync", **SMALL)
    envs.reset(seed=0)
    envs.action_space.seed(0)
    ended = 0
    for _ in range(8):  # past the end of the first episodes: autoreset, not a step
        _, _, terminated, truncated, _ = envs.step(envs.action_space.sample())
        ended += int(np.sum(terminated | truncated))
    envs.close()
    assert ended >= 2


def test_random_actions_async_vector_env_does_not_hang():
    # hung forever (0 % CPU): the forked workers waited on the parent's torch (OpenMP)
    # threads; the parent here runs torch on 2 threads before the fork, as by default
    result = run_python(
        f"""
        import gymnasium as gym, numpy as np, torch
        import growenv
        torch.set_num_threads(2)
        a = torch.randn(300, 300)
        for _ in range(5):
            a @ a  # the parent's OpenMP pool exists
        envs = gym.make_vec("growenv/Grow-v1", num_envs=2, vectorization_mode="async",
                            **{SMALL!r})
        envs.reset(seed=0)
        envs.action_space.seed(0)
        for _ in range(6):
            obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
        envs.close()
        assert torch.get_num_threads() == 2
        print("ok", obs.shape)
        """
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("ok (2, 62)")


def test_step_after_the_end_raises():
    env = gym.make("growenv/Grow-v1", **SMALL)
    env.reset(seed=0)
    _, reward, terminated, _, _ = env.step(env.unwrapped.stop_action)
    assert terminated and reward == 0.0
    for action in (env.unwrapped.skip_action, env.unwrapped.stop_action):
        # went on silently: truncated=True and reward 2.2 on the next step
        with pytest.raises(RuntimeError, match=r"^step: the episode has ended .* call reset\(\)"):
            env.step(action)
    env.reset(seed=0)
    truncated = False
    for _ in range(SMALL["max_steps"]):
        _, _, _, truncated, _ = env.step(env.unwrapped.skip_action)
    assert truncated
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(env.unwrapped.skip_action)
    env.reset(seed=1)  # a reset starts the next episode
    env.step(env.unwrapped.skip_action)


def test_id_without_importing_growenv():
    # Gymnasium >= 1.0 has no plugin (entry-point) loading: "module:id" imports the module
    result = run_python(
        f"""
        import sys
        import gymnasium as gym
        env = gym.make("growenv:growenv/Grow-v1", **{SMALL!r})
        env.reset(seed=0)
        print(type(env.unwrapped).__name__)
        assert "growenv" in sys.modules
        """
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "GrowthEnv"


def test_registration_is_idempotent_and_growthenv_exported():
    import importlib

    spec = gym.spec("growenv/Grow-v1")
    importlib.reload(growenv)
    assert gym.spec("growenv/Grow-v1") == spec
    assert growenv.GrowthEnv is gym.make("growenv/Grow-v1", **SMALL).unwrapped.__class__
    assert "GrowthEnv" in growenv.__all__


def test_same_seed_same_trajectory_with_defaults():
    def trajectory(seed: int) -> list:
        env = gym.make("growenv/Grow-v1", **SMALL)
        env.action_space.seed(seed)
        obs, _ = env.reset(seed=seed)
        out = [obs.tolist()]
        for _ in range(SMALL["max_steps"]):
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            out.append([obs.tolist(), reward, info["params"], info["invalid_action"]])
            if terminated or truncated:
                break
        return out

    assert trajectory(3) == trajectory(3)
    assert trajectory(3) != trajectory(4)


def test_env_runs_on_its_threads_and_restores_the_callers():
    seen: list[int] = []
    task = make_task("teacher_student", **SMALL["task_kwargs"])

    def source(rng):
        seen.append(torch.get_num_threads())
        return task

    kwargs = {k: v for k, v in SMALL.items() if k != "task_kwargs"}
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        env = growenv.GrowthEnv(task=source, **kwargs)
        env.reset(seed=0)
        env.step(env.skip_action)
        assert seen == [1] and torch.get_num_threads() == 2  # default threads=1, restored
        env = growenv.GrowthEnv(task=source, threads=None, **kwargs)
        env.reset(seed=0)
        assert seen == [1, 2]  # None: torch's setting as it is
        with pytest.raises(ValueError, match=r"^threads: expected an int >= 1 or None, got 0$"):
            growenv.GrowthEnv(threads=0)
    finally:
        torch.set_num_threads(before)
