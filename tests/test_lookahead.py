"""The lookahead policy (a rollout whose base policy never grows again): its losses against
real env steps replayed on copies, its candidates against an explicit loop, its compute and
its errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from growenv.env.growth_env import GrowthEnv
from growenv.harness.episodes import run_episode
from growenv.policies import make_policy
from growenv.policies.lookahead import LookaheadPolicy, lookahead_candidates
from tests.test_value_learner import DAG as VALUE_DAG
from tests.test_value_learner import MLP

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DAG = {**VALUE_DAG, "max_steps": 4, "max_nodes": 3, "train_steps": 5, "fit_scope": "all"}
SITES = {**MLP, "max_steps": 4, "train_steps": 5}


def _stepped_val_loss(env: GrowthEnv, slot: int) -> float:
    """The validation loss after one real step growing ``slot``, on a copy of ``env``."""
    twin = copy.deepcopy(env)
    twin.step(int(slot))
    return float(twin.episode.measurement.val_loss)


def _walk(env: GrowthEnv, seed: int):
    """Reset, then yield ``info`` before each step of a fixed schedule (the middle valid
    slot), stepping after each yield."""
    _, info = env.reset(seed=seed)
    done = False
    while not done:
        yield info
        valid = np.flatnonzero(info["action_mask"][: env.max_sites])
        action = int(valid[len(valid) // 2]) if valid.size else env.skip_action
        _, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated


@pytest.mark.parametrize("env_kwargs", [DAG, SITES], ids=["dag", "sites"])
def test_one_step_lookahead_is_the_loss_of_a_real_step(env_kwargs):
    env = GrowthEnv(**env_kwargs)
    checked = 0
    for info in _walk(env, seed=4):
        valid = np.flatnonzero(info["action_mask"][: env.max_sites])[:4]
        if not valid.size:
            continue
        losses = env.lookahead_losses(valid, env.train_steps)
        expected = [_stepped_val_loss(env, s) for s in valid]
        np.testing.assert_allclose(losses, expected, rtol=1e-6)
        checked += len(valid)
    assert checked >= 6


def test_the_rollout_to_the_end_trains_the_rest_of_the_episode():
    # on the last step the default rollout is one step's training: a real step's loss
    env = GrowthEnv(**DAG)
    infos = list(_walk(env, seed=2))
    assert len(infos) == DAG["max_steps"]
    env = GrowthEnv(**DAG)
    for i, info in enumerate(_walk(env, seed=2)):
        valid = np.flatnonzero(info["action_mask"][: env.max_sites])[:3]
        if i == DAG["max_steps"] - 1:
            np.testing.assert_allclose(
                env.lookahead_losses(valid), [_stepped_val_loss(env, s) for s in valid], rtol=1e-6
            )
        elif i == 0:  # longer rollouts train longer: not the one-step losses
            assert not np.allclose(
                env.lookahead_losses(valid), env.lookahead_losses(valid, env.train_steps)
            )


def test_a_lookahead_leaves_the_episode_as_it_was_but_for_its_compute():
    plain, looked = GrowthEnv(**DAG), GrowthEnv(**DAG)
    plain.reset(seed=7)
    _, info = looked.reset(seed=7)
    valid = np.flatnonzero(info["action_mask"][: looked.max_sites])
    before = dict(looked.compute_by_phase)
    looked.lookahead_losses(valid)
    spent = {k: looked.compute_by_phase[k] - v for k, v in before.items()}
    assert spent.pop("search") > 0 and all(v == 0 for v in spent.values())
    # what it charged: per slot the growth's search, the training and one validation
    action = int(valid[0])
    for env in (plain, looked):
        _, _, _, _, last = env.step(action)
    assert last["val_loss"] == plain.episode.measurement.val_loss
    for a, b in zip(plain.net.parameters(), looked.net.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(plain.episode.generator.get_state(), looked.episode.generator.get_state())


def test_the_lookahead_charges_training_validation_and_the_growths_search():
    env = GrowthEnv(**DAG)
    _, info = env.reset(seed=1)
    slot = int(np.flatnonzero(info["action_mask"][: env.max_sites])[0])
    steps = 7
    searched = copy.deepcopy(env)
    searched.evaluate_candidate(slot)
    growth = searched.compute - env.compute
    twin = copy.deepcopy(env)
    twin.grow(slot)
    samples = steps * min(env.batch_size, len(env.task.train))
    expected = (
        growth
        + twin.family.training_macs(twin.net, samples)
        + twin.family.evaluate_macs(twin.net, len(env.task.val))
    )
    before = env.compute
    env.lookahead_losses([slot], steps)
    assert env.compute - before == pytest.approx(expected, rel=1e-12)


def test_candidates_are_each_kinds_best_valid_slot():
    env = GrowthEnv(**DAG)
    for info in _walk(env, seed=3):
        kinds = np.asarray(env.slot_layout.kinds)
        gains = np.nan_to_num(np.asarray(info["candidate_gains"], float), nan=-np.inf)
        expected = []
        for kind in ("edge", "node", "widen"):
            best, best_gain = None, -np.inf
            for slot in range(env.max_sites):
                if info["action_mask"][slot] and kinds[slot] == kind:
                    if best is None or gains[slot] > best_gain:
                        best, best_gain = slot, gains[slot]
            if best is not None:
                expected.append(best)
        assert lookahead_candidates(info, env).tolist() == expected


def test_the_all_set_is_every_valid_slot_and_the_policy_takes_its_lowest_loss():
    env = GrowthEnv(**DAG)
    policy = LookaheadPolicy(steps=DAG["train_steps"], candidates="all")
    for info in _walk(env, seed=8):
        valid = [s for s in range(env.max_sites) if info["action_mask"][s]]
        assert lookahead_candidates(info, env, "all").tolist() == valid
        action = policy.act(None, info, env)
        if len(valid) >= 2:
            losses = [_stepped_val_loss(env, s) for s in valid]
            assert action == valid[int(np.argmin(losses))]


def test_sites_candidates_are_the_valid_sites():
    env = GrowthEnv(**SITES)
    _, info = env.reset(seed=0)
    expected = [s for s in range(env.max_sites) if info["action_mask"][s]]
    assert lookahead_candidates(info, env).tolist() == expected


@pytest.mark.parametrize("env_kwargs", [DAG, SITES], ids=["dag", "sites"])
def test_the_policy_grows_the_candidate_of_lowest_one_step_loss(env_kwargs):
    policy = make_policy("lookahead", steps=env_kwargs["train_steps"])
    env = GrowthEnv(**env_kwargs)
    decided = 0
    for info in _walk(env, seed=5):
        slots = lookahead_candidates(info, env)
        action = policy.act(None, info, env)
        if slots.size >= 2:
            losses = [_stepped_val_loss(env, s) for s in slots]
            assert action == slots[int(np.argmin(losses))]
            decided += 1
        elif slots.size == 1:
            assert action == slots[0]
        else:
            assert action == env.skip_action
    assert decided >= 2


def test_lookahead_episodes_are_reproducible():
    runs = [run_episode(DAG, LookaheadPolicy(), seed=6) for _ in range(2)]
    assert [r["test_loss"] for r in runs[0]] == [r["test_loss"] for r in runs[1]]
    assert [r["action_name"] for r in runs[0]] == [r["action_name"] for r in runs[1]]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"steps": -1}, "steps"), ({"steps": 2.5}, "steps"), ({"steps": "x"}, "steps"),
     ({"candidates": "best"}, "candidates")],
)  # fmt: skip
def test_bad_arguments_are_one_line(kwargs, name):
    with pytest.raises(ValueError, match=name) as err:
        LookaheadPolicy(**kwargs)
    assert "\n" not in str(err.value)


def test_bad_steps_in_the_env_are_one_line():
    env = GrowthEnv(**DAG)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="steps") as err:
        env.lookahead_losses([0], -3)
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def skip_agent(tmp_path_factory):
    """A tiny rollout agent with the skip action (trained in seconds; what it learned does
    not matter, only that the policy follows it)."""
    from growenv.learners.value import ValueConfig, train_value_agent

    run = tmp_path_factory.mktemp("skip_agent")
    config = ValueConfig(env_kwargs=DAG, algo="rollout", action_set="best-per-kind-skip",
                         total_timesteps=8, n_envs=2, learning_starts=2, batch_size=8,
                         train_freq=1, gradient_steps=3, eval_every=0, hidden=(16,),
                         seed=1)  # fmt: skip
    with torch.random.fork_rng():
        train_value_agent(config, run)
    return run


def test_lookahead_skip_skips_where_its_agent_would_after_a_first_growth(skip_agent):
    policy = make_policy(f"lookahead-skip:{skip_agent}")
    agent, lookahead = make_policy(f"dqn:{skip_agent}"), LookaheadPolicy()
    for seed in range(3):
        env = GrowthEnv(**DAG)
        obs, info = env.reset(seed=seed)
        policy.reset(seed)
        grown, done, skips = False, False, 0
        while not done:
            q = agent.q_values(obs, env)
            q[env.stop_action] = -np.inf
            wants_skip = int(np.argmax(q)) == env.skip_action
            expected = env.skip_action if grown and wants_skip else lookahead.act(obs, info, env)
            action = policy.act(obs, info, env)
            assert action == expected
            skips += action == env.skip_action and grown and wants_skip
            grown = grown or action < env.max_sites
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        assert policy.skips == skips


def test_lookahead_skip_needs_an_agent_with_the_skip_action(tmp_path):
    from growenv.learners.value import ValueConfig, train_value_agent

    config = ValueConfig(env_kwargs=DAG, algo="rollout", action_set="best-per-kind",
                         total_timesteps=4, n_envs=2, learning_starts=2, batch_size=4,
                         train_freq=1, gradient_steps=1, eval_every=0, hidden=(8,))  # fmt: skip
    train_value_agent(config, tmp_path / "kinds")
    with pytest.raises(ValueError, match="best-per-kind-skip") as err:
        make_policy(f"lookahead-skip:{tmp_path / 'kinds'}")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="path") as err:
        make_policy(f"lookahead-skip:{tmp_path / 'missing'}")
    assert "\n" not in str(err.value)


class _Alternating:
    """A stand-in agent that prefers skip on every other call (stop scored highest always:
    the policy must never take stop from it)."""

    scorer = type("S", (), {"action_set": "best-per-kind-skip"})()

    def __init__(self) -> None:
        self.calls = 0

    def reset(self, seed=None) -> None:
        self.calls = 0

    def q_values(self, observation, env) -> np.ndarray:
        self.calls += 1
        q = np.where(np.asarray(env.action_masks(), bool), 0.0, -np.inf)
        q[env.stop_action] = 10.0
        q[env.skip_action] = 1.0 if self.calls % 2 else -1.0
        return q


def test_lookahead_skip_takes_both_branches_and_never_skips_the_empty_start():
    from growenv.policies.lookahead import LookaheadSkipPolicy

    policy = LookaheadSkipPolicy(_Alternating())
    lookahead = LookaheadPolicy()
    env = GrowthEnv(**{**DAG, "max_steps": 6})
    obs, info = env.reset(seed=0)
    policy.reset(0)
    actions, done = [], False
    while not done:
        expected_growth = lookahead.act(obs, info, env)
        action = policy.act(obs, info, env)
        assert action in (env.skip_action, expected_growth)
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
    assert actions[0] < env.max_sites  # the first action grows, whatever the agent says
    # after it, the agent's calls alternate skip (odd) and grow (even)
    assert actions[1::2] == [env.skip_action] * len(actions[1::2])
    assert all(a < env.max_sites for a in actions[2::2])
    assert policy.skips == len(actions[1::2])
