"""Deep Q-learning from demonstrations (issue 23): the large-margin loss against an explicit
loop, demonstrations against the heuristic's own episodes, pretraining that imitates the
teacher, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from growenv.harness.episodes import run_episode
from growenv.learners.demos import DEMO_SEED_OFFSET, collect_demonstrations, large_margin_loss
from growenv.learners.scorer import infer_layout
from growenv.learners.value import ValueConfig, ValueLearner, n_step_return, train_value_agent
from growenv.policies import make_policy
from tests.test_value_learner import DAG as VALUE_DAG

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DAG = {**VALUE_DAG, "max_steps": 5, "max_nodes": 3}


def test_large_margin_loss_matches_an_explicit_loop():
    rng = np.random.default_rng(0)
    b, a, margin = 12, 7, 0.8
    q = torch.as_tensor(rng.normal(size=(b, a)))
    allowed = torch.as_tensor(rng.random((b, a)) < 0.6)
    actions = torch.as_tensor(rng.integers(0, a, b))
    want, rows = 0.0, 0
    for i in range(b):
        if not allowed[i, actions[i]]:
            continue
        best = max(
            float(q[i, j]) + (0.0 if j == actions[i] else margin) for j in range(a) if allowed[i, j]
        )
        want += best - float(q[i, actions[i]])
        rows += 1
    got = large_margin_loss(q, actions, allowed, margin)
    assert rows > 0
    assert float(got) == pytest.approx(want / rows, rel=1e-12)
    # zero once the demonstrated action leads every other allowed one by the margin
    q2 = torch.zeros(b, a, dtype=torch.float64)
    q2[torch.arange(b), actions] = margin
    assert float(large_margin_loss(q2, actions, allowed, margin)) == 0.0
    none = torch.zeros(b, a, dtype=torch.bool)
    assert float(large_margin_loss(q, actions, none, margin)) == 0.0


@pytest.mark.parametrize("n", [1, 3])
def test_demonstrations_are_the_heuristics_own_episodes(n):
    demos = collect_demonstrations(DAG, "round-robin", 2, seed=1, n_step=n, gamma=0.9,
                                   reward_shift=0.5)  # fmt: skip
    start = 0
    for j in range(2):
        seed = DEMO_SEED_OFFSET + 10**4 + j
        rows = run_episode(DAG, make_policy("round-robin"), seed)[1:]
        actions = [r["action"] for r in rows]
        rewards = [r["reward"] + 0.5 for r in rows]
        t = len(rows)
        np.testing.assert_array_equal(demos.action[start : start + t], actions)
        for k in range(t):
            want = n_step_return(rewards[k : k + n], 0.9)
            assert demos.ret[start + k] == pytest.approx(want, rel=1e-5)
            assert demos.disc[start + k] == pytest.approx(0.9**n if k + n < t else 0.0)
            assert demos.mask[start + k, actions[k]]  # the teacher acts within the mask
        assert demos.returns[j] == pytest.approx(sum(r["reward"] for r in rows))
        start += t
    assert len(demos) == start


def test_pretraining_on_round_robin_imitates_it():
    config = ValueConfig(env_kwargs=DAG, action_set="best-per-kind", hidden=(32,), lr=3e-3,
                         batch_size=32, demo_policy="round-robin", demo_episodes=6,
                         demo_weight=1.0, n_envs=1)  # fmt: skip
    demos = collect_demonstrations(DAG, "round-robin", 6, 0, config.n_step, config.gamma)
    layout = infer_layout(demos.obs.shape[1], "dag")

    class _NoEnv:
        num_envs = 1

    learner = ValueLearner(config, layout, _NoEnv(), lambda: None)

    def agreement() -> float:
        greedy = learner.q_values(demos.obs, demos.mask).argmax(1)
        return float(np.mean(greedy == demos.action))

    before = agreement()
    learner.add_demonstrations(demos)
    learner.pretrain(400)
    after = agreement()
    assert after >= 0.9 and after > before, (before, after)
    # the target net starts equal to the pretrained net
    for p, q in zip(learner.online.parameters(), learner.target.parameters(), strict=True):
        assert torch.equal(p, q)


def test_a_run_with_demonstrations_records_them_and_is_reproducible(tmp_path):
    config = ValueConfig(env_kwargs=DAG, total_timesteps=6, n_envs=2, learning_starts=2,
                         batch_size=8, train_freq=1, eval_every=0, hidden=(16,),
                         demo_policy="round-robin", demo_episodes=2, demo_pretrain=5)  # fmt: skip
    weights = []
    for name in ("a", "b"):
        train_value_agent(config, tmp_path / name)
        saved = json.loads((tmp_path / name / "config.json").read_text())
        assert saved["demo_policy"] == "round-robin" and saved["demo_pretrain"] == 5
        assert np.isfinite(saved["sessions"][0]["demo_mean_return"])
        weights.append(torch.load(tmp_path / name / "model.pt", weights_only=True)["state_dict"])
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"demo_policy": "dqn"}, "^demo_policy: expected '' or a heuristic"),
        ({"demo_episodes": 3}, "^demo_policy: expected a heuristic with demo_episodes=3"),
        ({"demo_pretrain": 10}, "^demo_episodes: expected >= 1 with demo_pretrain=10"),
        ({"demo_fraction": 1.0}, "^demo_fraction: expected"),
        ({"demo_margin": -1.0}, "^demo_margin: expected"),
    ],
)
def test_bad_demo_settings_are_one_line_errors(change, message):
    with pytest.raises(ValueError, match=message) as info:
        ValueConfig(env_kwargs=DAG, **change).validate(build_env=False)
    assert "\n" not in str(info.value)
