"""Rollout labels and approximate policy iteration (issue 23): the labels against independent
episodes replayed by hand, the realised return of the base policy, the advantage loss
against an explicit loop, and the learner's runs and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from growenv.env.growth_env import GrowthEnv
from growenv.learners.rollouts import LabelBuffer, RolloutLabels, advantage_loss
from growenv.learners.value import ValueConfig, train_value_agent
from growenv.policies import make_policy
from growenv.policies.heuristics import RoundRobinPolicy
from tests.test_value_learner import DAG as VALUE_DAG
from tests.test_value_learner import MLP

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DAG = {**VALUE_DAG, "max_steps": 4, "max_nodes": 3}
KINDS = ("edge", "node", "widen")


def _replayed_return(prefix: list[int], action: int, seed: int) -> float:
    """The return of ``action`` after ``prefix``, then round-robin to the end, on a fresh env
    (round-robin's turn kept by hand from the kinds grown)."""
    env = GrowthEnv(**DAG)
    obs, info = env.reset(seed=seed)
    turn = 0
    for a in [*prefix, action]:
        if a < env.max_sites and info["action_mask"][a]:
            turn = (KINDS.index(env.slot_layout.kinds[a]) + 1) % 3
        obs, reward, terminated, truncated, info = env.step(a)
    total, done = float(reward), terminated or truncated
    policy = RoundRobinPolicy()
    policy._next = turn
    while not done:
        obs, reward, terminated, truncated, info = env.step(int(policy.act(obs, info, env)))
        total, done = total + float(reward), terminated or truncated
    return total


def test_labels_are_the_returns_of_independent_episodes():
    env = RolloutLabels(GrowthEnv(**DAG), "round-robin")
    seed, prefix, checked = 5, [], 0
    env.reset(seed=seed)
    done = False
    while not done:
        mask = np.asarray(env.action_masks(), dtype=bool)
        labels = env.returns()
        assert np.array_equal(np.isfinite(labels), mask)
        for a in np.flatnonzero(mask)[:4]:  # a few per state keep the test short
            assert labels[a] == pytest.approx(_replayed_return(prefix, int(a), seed), rel=1e-6)
            checked += 1
        valid = np.flatnonzero(mask[: env.unwrapped.max_sites])
        action = int(valid[len(valid) // 2]) if valid.size else env.unwrapped.skip_action
        _, _, terminated, truncated, info = env.step(action)
        assert np.array_equal(info["rollout_returns"][mask], labels[mask])
        prefix.append(action)
        done = terminated or truncated
    assert checked >= 6 and env.rollout_steps > checked


@pytest.mark.parametrize("env_kwargs", [DAG, {**MLP, "max_steps": 5}], ids=["dag", "mlp"])
def test_the_base_policys_own_action_is_labelled_with_its_realised_return(env_kwargs):
    env = RolloutLabels(GrowthEnv(**env_kwargs), "round-robin")
    obs, info = env.reset(seed=3)
    policy, labels, rewards, done = RoundRobinPolicy(), [], [], False
    while not done:
        synced = RoundRobinPolicy()
        synced.sync(env)
        assert synced._next == policy._next  # the history gives round-robin's own turn
        action = int(policy.act(obs, info, env.unwrapped))
        obs, reward, terminated, truncated, info = env.step(action)
        labels.append(info["rollout_returns"][action])
        rewards.append(float(reward))
        done = terminated or truncated
    to_go = np.cumsum(rewards[::-1])[::-1]
    np.testing.assert_allclose(labels, to_go, rtol=1e-6)


def test_advantage_loss_matches_an_explicit_loop_and_ignores_per_state_shifts():
    rng = np.random.default_rng(0)
    b, a = 10, 6
    q = torch.as_tensor(rng.normal(size=(b, a)))
    y = rng.normal(size=(b, a))
    y[rng.random((b, a)) < 0.4] = np.nan
    y[0, 1:] = np.nan  # one label: no advantage
    total, count = 0.0, 0
    for i in range(b):
        known = [j for j in range(a) if np.isfinite(y[i, j])]
        if len(known) < 2:
            continue
        qm = sum(float(q[i, j]) for j in known) / len(known)
        ym = sum(y[i, j] for j in known) / len(known)
        for j in known:
            total += ((float(q[i, j]) - qm) - (y[i, j] - ym)) ** 2
            count += 1
    labels = torch.as_tensor(y)
    got = advantage_loss(q, labels)
    assert count > 0
    assert float(got) == pytest.approx(total / count, rel=1e-12)
    shift = torch.as_tensor(rng.normal(size=(b, 1)))
    assert float(advantage_loss(q + shift, labels - 2 * shift)) == pytest.approx(float(got))
    # scores that order actions as the labels do, exactly, cost nothing
    assert float(advantage_loss(torch.nan_to_num(labels) + 3.0, labels)) == pytest.approx(0.0)
    assert float(advantage_loss(q, torch.full((b, a), torch.nan, dtype=q.dtype))) == 0.0


def test_label_buffer_keeps_only_states_with_two_labels():
    buf = LabelBuffer(3, obs_size=2, n_actions=3)
    buf.add(np.ones(2), np.array([1.0, np.nan, np.nan]))
    assert buf.size == 0
    for k in range(5):
        buf.add(np.full(2, k), np.array([k, k + 1.0, np.nan]))
    assert buf.size == 3 and sorted(buf.obs[:, 0]) == [2, 3, 4]
    batch = buf.sample(np.random.default_rng(0), 8)
    assert batch["obs"].shape == (8, 2) and np.isnan(batch["labels"][:, 2]).all()


def test_a_rollout_run_is_reproducible_and_gives_a_loadable_policy(tmp_path):
    config = ValueConfig(env_kwargs=DAG, algo="rollout", action_set="best-per-kind",
                         total_timesteps=8, n_envs=2, learning_starts=2, batch_size=8,
                         train_freq=1, gradient_steps=3, eval_every=0, hidden=(16,))  # fmt: skip
    weights = []
    for name in ("a", "b"):
        train_value_agent(config, tmp_path / name)
        saved = json.loads((tmp_path / name / "config.json").read_text())
        assert saved["algo"] == "rollout" and saved["rollout_base"] == "round-robin"
        weights.append(torch.load(tmp_path / name / "model.pt", weights_only=True)["state_dict"])
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key
    policy = make_policy(f"dqn:{tmp_path / 'a'}")
    env = GrowthEnv(**DAG)
    obs, info = env.reset(seed=0)
    policy.reset(0)
    action = int(policy.act(obs, info, env))
    assert info["action_mask"][action]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rollout_base": "annealing"}, "^rollout_base: expected one of"),
        ({"vec": "lockstep"}, "^vec: expected 'dummy' with algo='rollout'"),
        ({"reward_mode": "terminal"}, "^reward_mode: expected 'step' with algo='rollout'"),
        ({"gradient_steps": 0}, "^gradient_steps: expected"),
    ],
)
def test_bad_rollout_settings_are_one_line_errors(change, message):
    with pytest.raises(ValueError, match=message) as info:
        ValueConfig(env_kwargs=DAG, algo="rollout", **change).validate(build_env=False)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("algo", ["bandit", "rollout"])
def test_env_macs_count_the_training_episodes_and_the_rollouts(algo):
    """One training episode: the learner's env_macs is the episode's compute, replayed with
    the same actions on a fresh env, plus (rollout) the wrapper's rollouts."""
    from growenv.learners.value import ValueLearner, _make_venv, layout_of

    config = ValueConfig(env_kwargs=DAG, algo=algo, n_envs=1, learning_starts=100,
                         eps_start=1.0, eps_end=1.0, hidden=(8,), seed=4).validate()  # fmt: skip
    venv, masks = _make_venv(config, None, config.seed)
    layout = layout_of(config.env_kwargs)
    learner = ValueLearner(config, layout, venv, masks)
    actions, select = [], learner.select

    def recorded(*args):
        chosen = select(*args)
        actions.append(int(chosen[0]))
        return chosen

    learner.select = recorded
    while learner.episodes == 0:
        learner.step()
    env = GrowthEnv(**DAG)
    env.reset(seed=config.seed)
    for a in actions:
        _, _, terminated, truncated, info = env.step(a)
    assert terminated or truncated
    rollouts = venv.envs[0].rollout_macs if algo == "rollout" else 0.0
    assert (rollouts > 0) == (algo == "rollout")
    assert learner.env_macs == pytest.approx(info["compute"] + rollouts, rel=1e-9)


def test_a_skip_learner_labels_each_kinds_best_expansion_and_skip():
    """With ``action_set="best-per-kind-skip"`` the wrapper labels exactly that set, and the
    skip label is the return of skipping, then round-robin, replayed by hand."""
    from growenv.learners.scorer import best_per_kind_mask, infer_layout
    from growenv.learners.value import _candidates

    config = ValueConfig(env_kwargs=DAG, algo="rollout", action_set="best-per-kind-skip")
    base = GrowthEnv(**DAG)
    env = RolloutLabels(base, "round-robin", _candidates(config.validate(), base))
    obs, _ = env.reset(seed=2)
    layout = infer_layout(obs.size, "dag")
    prefix, done = [], False
    while not done:
        mask = torch.as_tensor(env.action_masks())[None]
        want = best_per_kind_mask(torch.as_tensor(obs)[None], layout, mask, True)[0].numpy()
        labels = env.returns()
        assert np.array_equal(np.isfinite(labels), want)
        assert want[base.skip_action] and not want[base.stop_action]
        skip = _replayed_return(prefix, base.skip_action, 2)
        assert labels[base.skip_action] == pytest.approx(skip, rel=1e-6)
        action = int(np.flatnonzero(want)[0])
        obs, _, terminated, truncated, _ = env.step(action)
        prefix.append(action)
        done = terminated or truncated
