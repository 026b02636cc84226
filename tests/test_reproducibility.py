"""Reproducible learned agents (issue 23, item 2): evaluation inside training leaves the
global random streams alone, and the same seed gives the same agent bit for bit, from the
library and from ``growenv train`` (in this process and in another one)."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from growenv.cli import main
from growenv.harness.ppo_training import PPOConfig, evaluate_against_greedy, train
from growenv.policies.ppo import keep_global_rngs, load
from tests.test_resume import PPO_ENV
from tests.test_resume import _config as _resume_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ENV = PPO_ENV


def _config(**kw) -> PPOConfig:
    """test_resume's tiny run (lockstep, 2 envs), evaluated every 32 steps on 1 teacher."""
    return _resume_config(**{"total_timesteps": 96, "eval_every": 32, "eval_tasks": 1, **kw})


def _params(path) -> torch.Tensor:
    policy = load(path / "model.zip").model.policy
    return torch.cat([p.detach().flatten() for p in policy.parameters()])


def _global_states() -> tuple:
    return random.getstate(), np.random.get_state(), torch.get_rng_state()  # noqa: NPY002


def _same_states(a: tuple, b: tuple) -> bool:
    return (
        a[0] == b[0]
        and all(np.array_equal(x, y) for x, y in zip(a[1], b[1], strict=True))
        and torch.equal(a[2], b[2])
    )


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    out = tmp_path_factory.mktemp("agent") / "run"
    train(_config(total_timesteps=32, eval_tasks=0), out, progress_bar=False)
    return out


def test_an_evaluation_leaves_the_global_random_states_as_they_were(agent):
    random.seed(7), np.random.seed(7), torch.manual_seed(7)  # noqa: NPY002
    before = _global_states()
    policy = load(agent)
    result = evaluate_against_greedy(policy, ENV, n_tasks=1)
    assert np.isfinite(result["agent_val_loss"])
    assert _same_states(before, _global_states())
    # the policy alone, as a bench runs it: reset and act, deterministic or sampled
    from growenv.harness.episodes import run_episode

    for deterministic in (True, False):
        policy.deterministic = deterministic
        actions = [r["action"] for r in run_episode(ENV, policy, seed=3)]
        assert _same_states(before, _global_states())
        torch.manual_seed(123)  # another global state: the policy's own stream is unmoved
        again = [r["action"] for r in run_episode(ENV, policy, seed=3)]
        assert again == actions
        torch.set_rng_state(before[2])


def test_keep_global_rngs_restores_python_numpy_and_torch():
    before = _global_states()
    with keep_global_rngs():
        random.seed(1), np.random.seed(1), torch.manual_seed(1)  # noqa: NPY002
        random.random(), np.random.rand(), torch.rand(3)  # noqa: NPY002
    assert _same_states(before, _global_states())


def test_same_seed_same_agent_bit_for_bit_with_evaluation_and_resume(tmp_path):
    for name in ("a", "b"):  # each: 64 steps, then resumed from the run to 96
        train(_config(total_timesteps=64), tmp_path / name, progress_bar=False)
        train(_config(), tmp_path / name, resume=tmp_path / name, progress_bar=False)
    assert len((tmp_path / "a" / "eval.jsonl").read_text().splitlines()) >= 2  # evaluated
    assert torch.equal(_params(tmp_path / "a"), _params(tmp_path / "b"))
    evals = [(tmp_path / name / "eval.jsonl").read_text() for name in ("a", "b")]
    assert evals[0] == evals[1]
    train(_config(seed=1, total_timesteps=64), tmp_path / "c", progress_bar=False)
    train(_config(seed=1), tmp_path / "c", resume=tmp_path / "c", progress_bar=False)
    assert not torch.equal(_params(tmp_path / "a"), _params(tmp_path / "c"))


def test_evaluation_does_not_change_what_training_learns(tmp_path):
    # the evaluation's episodes and greedy's draws are invisible to the training streams:
    # the same run with and without in-training evaluation ends with the same weights
    train(_config(vec="dummy"), tmp_path / "eval", progress_bar=False)
    train(_config(vec="dummy", eval_tasks=0), tmp_path / "none", progress_bar=False)
    assert torch.equal(_params(tmp_path / "eval"), _params(tmp_path / "none"))


SMALL = {k: v for k, v in ENV.items() if k not in ("task", "train_steps", "max_steps")}
CLI = [
    "train",
    "--timesteps", "64", "--n-envs", "2", "--checkpoint-every", "64", "--eval-every", "32",
    "--eval-tasks", "1", "--train-steps", "2", "--steps", "3", "--no-progress",
    "--env-kwargs", json.dumps(SMALL),
]  # fmt: skip


def test_growenv_train_same_seed_same_agent_in_another_process(tmp_path, capsys):
    code = "import sys; from growenv.cli import main; sys.exit(main())"
    args = [*CLI, "--out", str(tmp_path / "sub"), "--seed", "5"]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert main([*CLI, "--out", str(tmp_path / "here"), "--seed", "5"]) == 0
    assert main([*CLI, "--out", str(tmp_path / "other"), "--seed", "6"]) == 0
    capsys.readouterr()
    assert torch.equal(_params(tmp_path / "sub"), _params(tmp_path / "here"))
    assert not torch.equal(_params(tmp_path / "here"), _params(tmp_path / "other"))
