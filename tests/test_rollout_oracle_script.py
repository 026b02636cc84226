"""experiments/rollout_oracle.py: the oracle's choices against returns replayed by hand on
fresh envs, its summary against an explicit computation, and its argument errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from growenv.env.growth_env import GrowthEnv
from growenv.learners.scorer import best_per_kind_mask, infer_layout
from tests.experiment_scripts import load_experiment, usage_error_line
from tests.test_rollouts import DAG, _replayed_return

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ro():
    return load_experiment("rollout_oracle")


def test_the_oracle_takes_the_action_whose_replayed_episode_returns_most(ro):
    oracle = ro.RolloutOracle("best-per-kind-skip", DAG)
    env = GrowthEnv(**DAG)
    obs, info = env.reset(seed=1)
    layout = infer_layout(obs.size, "dag")
    oracle.reset(1)
    prefix, done = [], False
    while not done:
        mask = torch.as_tensor(env.action_masks())[None]
        allowed = best_per_kind_mask(torch.as_tensor(obs)[None], layout, mask, True)[0]
        replayed = {int(a): _replayed_return(prefix, int(a), 1) for a in np.flatnonzero(allowed)}
        action = oracle.act(obs, info, env)
        assert replayed[action] == pytest.approx(max(replayed.values()), rel=1e-9)
        obs, _, terminated, truncated, info = env.step(action)
        prefix.append(action)
        done = terminated or truncated
    assert oracle.rollout_steps > len(prefix)


def test_the_summary_matches_an_explicit_computation(ro):
    rng = np.random.default_rng(0)
    records, ratios = [], {}
    for family in ro.FAMILIES:
        for task in range(3):
            rr = float(rng.uniform(0.5, 1.5))
            mine = float(rng.uniform(0.5, 1.5))
            actions = ["grow slot 1", "skip growth", "grow slot 2", "skip growth"][: task + 1]
            base = {"family": family, "task": task, "run": 0}
            records.append({**base, "method": "round-robin", "test_loss": rr, "actions": []})
            records.append(
                {**base, "method": "best-per-kind-skip", "test_loss": mine, "actions": actions}
            )
            ratios.setdefault(family, []).append(mine / rr)
    table = ro.summarise(records, ["best-per-kind-skip"])
    rows = {line.split("|")[2].strip(): line.split("|") for line in table.splitlines()[2:]}
    for family, values in ratios.items():
        row = rows[family]
        assert float(row[4]) == pytest.approx(np.median(values), abs=5e-4)
        assert float(row[5]) == pytest.approx(np.mean(values), abs=5e-4)
        assert row[6].strip() == f"{sum(v < 1 for v in values)}/3"
        assert float(row[7]) == pytest.approx(2 / 6, abs=5e-3)  # 0 + 1 + 1 skips of 1 + 2 + 3
    every = [v for values in ratios.values() for v in values]
    assert float(rows["all"][5]) == pytest.approx(np.mean(every), abs=5e-4)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sets", "all"], "--sets: expected names from"),
        (["--n-val", "-1"], "argument --n-val: expected an int >= 0, got '-1'"),
        (["--workers", "0"], "argument --workers: expected an int >= 1, got '0'"),
    ],
)
def test_bad_arguments_are_one_line_errors(ro, argv, message, capsys, tmp_path):
    assert message in usage_error_line(ro.main, argv, tmp_path / "out", capsys)
