"""PPO: a short training run on CPU, save, reload, evaluate through the Policy interface."""

import json

import numpy as np
import pytest
import torch

from growenv.harness.episodes import run_episode
from growenv.harness.ppo_training import PPOConfig, make_vec_env, train
from growenv.policies import make_policy
from growenv.policies.ppo import load

ENV = dict(
    task="teacher_student_distribution",
    train_steps=3,
    max_steps=4,
    batch_size=32,
    max_params=400,
    task_kwargs={"n_train": 256, "n_stats": 128, "n_val": 128, "n_test": 128},
)


def config(**kw):
    base = dict(
        env_kwargs=ENV,
        total_timesteps=128,
        n_envs=2,
        vec="dummy",
        n_steps=32,
        batch_size=32,
        n_epochs=2,
        checkpoint_every=64,
        eval_every=128,
        eval_tasks=1,
    )
    base.update(kw)
    return PPOConfig(**base)


def params_of(path):
    policy = load(path)
    return torch.cat([p.detach().flatten() for p in policy.model.policy.parameters()])


def test_train_save_reload_and_evaluate(tmp_path):
    out = tmp_path / "run"
    train(config(), out, progress_bar=False)
    for name in ("model.zip", "obs_norm.npz", "config.json", "training.json", "eval.jsonl"):
        assert (out / name).exists(), name
    saved = json.loads((out / "config.json").read_text())
    assert saved["env_kwargs"]["task"] == "teacher_student_distribution"
    assert sorted(p.name for p in (out / "checkpoints").glob("model_*.zip"))
    policy = make_policy(f"ppo:{out}")
    rows = run_episode(ENV, policy, seed=0)
    assert len(rows) >= 2
    env_actions = [r["action"] for r in rows[1:]]
    assert all(0 <= a < 6 for a in env_actions)
    # the agent only takes valid actions (masks), and the same seed gives the same episode
    again = run_episode(ENV, make_policy(f"ppo:{out}"), seed=0)
    assert [r["action"] for r in again] == [r["action"] for r in rows]
    # observation normalisation statistics are the training ones, not identity
    data = np.load(out / "obs_norm.npz")
    assert np.any(data["var"] != 1.0)


def test_training_is_reproducible_under_a_seed(tmp_path):
    train(config(eval_tasks=0), tmp_path / "a", progress_bar=False)
    train(config(eval_tasks=0), tmp_path / "b", progress_bar=False)
    torch.testing.assert_close(params_of(tmp_path / "a"), params_of(tmp_path / "b"))
    train(config(eval_tasks=0, seed=1), tmp_path / "c", progress_bar=False)
    assert not torch.equal(params_of(tmp_path / "a"), params_of(tmp_path / "c"))


def test_resume_and_no_silent_overwrite(tmp_path):
    out = tmp_path / "run"
    train(config(eval_tasks=0), out, progress_bar=False)
    with pytest.raises(FileExistsError, match="already holds a trained agent"):
        train(config(eval_tasks=0), out, progress_bar=False)
    ckpt = sorted((out / "checkpoints").glob("model_*_steps.zip"))[0]
    train(config(eval_tasks=0), out, resume=ckpt, progress_bar=False)
    assert load(out).model.num_timesteps > 64


def test_bad_config_and_mismatched_observation(tmp_path):
    with pytest.raises(ValueError, match="n_envs"):
        config(n_envs=0).validate()
    with pytest.raises(ValueError, match="vec"):
        config(vec="threads").validate()
    with pytest.raises(TypeError, match="n_trains"):
        config(
            env_kwargs={**ENV, "task": "teacher_student", "task_kwargs": {"n_trains": 1}}
        ).validate()
    with pytest.raises(FileNotFoundError, match="no trained agent"):
        load(tmp_path / "nothing")
    out = tmp_path / "run"
    train(config(eval_tasks=0), out, progress_bar=False)
    # refused before the episode's reset, naming max_sites (issue #20)
    with pytest.raises(ValueError, match=r"^max_sites: expected 4 \(policy .* got 5$"):
        run_episode({**ENV, "max_sites": 5}, load(out), seed=0)


def test_training_on_the_lockstep_vec_env(tmp_path):
    out = tmp_path / "lock"
    train(config(vec="lockstep", eval_tasks=0), out, progress_bar=False)
    rows = run_episode(ENV, load(out), seed=0)
    assert len(rows) >= 2
    train(config(vec="lockstep", eval_tasks=0), tmp_path / "lock2", progress_bar=False)
    torch.testing.assert_close(params_of(out), params_of(tmp_path / "lock2"))


def test_fine_tuning_starts_from_another_agent_with_this_runs_settings(tmp_path):
    base = tmp_path / "base"
    train(config(eval_tasks=0), base, progress_bar=False)
    other_task = {**ENV, "task": "multi_sin", "task_kwargs": {"in_features": 2}}
    tuned = tmp_path / "tuned"
    cfg = config(eval_tasks=0, env_kwargs=other_task, n_steps=16, batch_size=16, seed=3)
    train(cfg, tuned, progress_bar=False, init_from=base)
    agent = load(tuned)
    assert agent.model.n_steps == 16 and agent.model.batch_size == 16
    assert agent.model.num_timesteps == 128  # this run's steps only
    cost = json.loads((tuned / "training.json").read_text())
    assert cost["init_from"].endswith("model.zip")
    # it moved away from the starting weights, which it did start from (not from scratch)
    start, end = params_of(base), params_of(tuned)
    scratch = tmp_path / "scratch"
    train(cfg, scratch, progress_bar=False)
    assert not torch.equal(start, end)
    assert (end - start).norm() < (params_of(scratch) - start).norm()
    with pytest.raises(ValueError, match="not both"):
        train(cfg, tmp_path / "x", progress_bar=False, init_from=base, resume=base)
    with pytest.raises(ValueError, match="does not fit this env"):
        train(config(eval_tasks=0, env_kwargs={**ENV, "max_sites": 5}), tmp_path / "y",
              progress_bar=False, init_from=base)  # fmt: skip
    with pytest.raises(FileNotFoundError, match="init_from"):
        train(cfg, tmp_path / "z", progress_bar=False, init_from=tmp_path / "none")


@pytest.mark.parametrize("vec", ["lockstep", "dummy"])
def test_config_device_is_the_networks_and_env_kwargs_device_the_envs(vec):
    # the policy network's device never reaches the envs: they are built on env_kwargs'
    venv = make_vec_env(config(vec=vec, device="meta", env_kwargs={**ENV, "device": "cpu"}))
    try:
        obs = venv.reset()
        assert np.isfinite(obs).all()
        envs = venv.venv.envs if vec == "lockstep" else [e.unwrapped for e in venv.envs]
        assert {str(e.device) for e in envs} == {"cpu"}
    finally:
        venv.close()
