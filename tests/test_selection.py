"""Selecting and evaluating learned agents (issue 23): the best checkpoint on held-out
selection teachers, disjoint task roles (train / selection / test), and each agent evaluated
on its own run's env settings, DAG agents included."""

from __future__ import annotations

import json

import pytest

from growenv.cli import main
from growenv.harness.episodes import check_policy_fits, run_episode
from growenv.harness.ppo_training import PPOConfig, check_task_roles, train
from growenv.policies.ppo import load
from tests.test_resume import PPO_ENV
from tests.test_resume import _config as _resume_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEST_TEACHERS = {"seeds": [2_000_000, 2_000_001], **PPO_ENV["task_kwargs"]}
DAG_ENV = {**PPO_ENV, "net": "dag", "max_nodes": 2, "neuron_fit": "tiny"}


def _config(**kw) -> PPOConfig:
    return _resume_config(**{"total_timesteps": 96, "eval_every": 32, "eval_tasks": 1, **kw})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    train(_config(), root / "mlp", progress_bar=False)
    train(_config(env_kwargs=DAG_ENV, vec="dummy", total_timesteps=32), root / "dag",
          progress_bar=False)  # fmt: skip
    return root


def _bench(run, capsys, *extra: str) -> tuple[int, str]:
    argv = ["bench", "--policy", f"ppo:{run},greedy", "--task", "teacher_student_distribution"]
    code = main([*argv, "--seed", "0", "--no-progress", "--vec", "single", *extra])
    return code, capsys.readouterr().err


def test_the_best_held_out_model_is_kept_beside_the_last_and_loaded_by_default(runs):
    run = runs / "mlp"
    evals = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    assert len(evals) == 3  # at 32, 64 and 96 steps
    best = min(evals, key=lambda e: e["agent_over_greedy"])  # the first of ties
    saved = json.loads((run / "config.json").read_text())
    assert saved["best"]["timesteps"] == best["timesteps"]
    assert saved["best"]["agent_over_greedy"] == best["agent_over_greedy"]
    assert json.loads((run / "training.json").read_text())["best"] == saved["best"]
    assert saved["task_roles"]["train"] == "0-999999"
    assert saved["task_roles"]["selection"] == "1000000"
    assert PPOConfig.from_json(saved).selection_task_seeds() == range(10**6, 10**6 + 1)
    assert (run / "best_obs_norm.npz").is_file()
    assert load(run).path == run / "best_model.zip"  # ppo:RUN: the best
    last = load(run / "model.zip")  # the last: an explicit path
    assert last.model.num_timesteps == 96
    assert load(run).model.num_timesteps == best["timesteps"]


def test_task_roles_must_be_disjoint_one_line():
    leaky = {**PPO_ENV, "task_kwargs": {**PPO_ENV["task_kwargs"], "seeds": [5, 1_000_000]}}
    message = (
        r"^task roles: expected disjoint teacher seeds, but train \(5, 1000000, from "
        r"env_kwargs task_kwargs\) and selection \(1000000, from selection_seed_offset, "
        r"eval_tasks\) share teacher 1000000$"
    )
    with pytest.raises(ValueError, match=message):
        _config(env_kwargs=leaky).validate()
    _config(env_kwargs=leaky, selection_seed_offset=3_000_000).validate()
    check_task_roles({"train": (range(0, 10**6), "a"), "test": (range(10**6, 2 * 10**6), "b")})
    check_task_roles({"train": (None, "digits"), "test": ([0], "b")})  # no teachers


def test_bench_refuses_test_teachers_of_the_training_or_selection_set(runs, capsys):
    code, err = _bench(runs / "mlp", capsys)  # default seeds: the training distribution's
    assert code == 2
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(
            f"growenv bench: error: --policy ppo:{runs / 'mlp'}: task roles: expected disjoint"
        )
    )
    selection = json.dumps({"task_kwargs": {**TEST_TEACHERS, "seeds": [10**6]}})
    code, err = _bench(runs / "mlp", capsys, "--env-kwargs", selection)
    assert code == 2 and "selection (1000000" in err and "share teacher 1000000" in err


def test_bench_evaluates_an_agent_with_its_runs_settings_and_says_which_model(runs, capsys):
    test = json.dumps({"task_kwargs": TEST_TEACHERS})
    code, err = _bench(runs / "mlp", capsys, "--env-kwargs", test)
    assert code == 0, err
    assert f"loads {runs / 'mlp' / 'best_model.zip'}" in err
    assert "max_steps=3" in err and "train_steps=2" in err  # the run's, not bench's defaults
    # a setting given on purpose overrides the run's (the agent acts with 2 steps too)
    code, err = _bench(runs / "mlp", capsys, "--env-kwargs", test, "--steps", "2")
    assert code == 0, err
    assert "max_steps=3" not in err
    code, err = _bench(runs / "mlp", capsys, "--env-kwargs", json.dumps(
        {"task_kwargs": TEST_TEACHERS, "max_sites": 5}))  # fmt: skip
    assert code == 2 and "max_sites: expected 4" in err.strip().splitlines()[-1]


def test_a_dag_agent_fits_dag_envs_and_is_refused_by_chain_envs_in_one_line(runs, capsys):
    agent = load(runs / "dag")
    rows = run_episode(DAG_ENV, agent, seed=0)
    assert len(rows) >= 2
    check_policy_fits(agent, DAG_ENV)
    with pytest.raises(ValueError, match=r"^observation: policy .* trained on envs with "
                       r"net='dag', max_nodes=2; these envs \(net='mlp', max_sites=4\) give "
                       r"\(62,\): evaluate it with its run's env settings$"):  # fmt: skip
        check_policy_fits(agent, PPO_ENV)
    code, err = _bench(runs / "dag", capsys, "--env-kwargs", json.dumps(
        {"task_kwargs": TEST_TEACHERS}))  # fmt: skip
    assert code == 0, err
    assert "net='dag'" in err  # the run's family, taken from its config.json
