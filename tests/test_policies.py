"""Tests of the growth policies (growenv.policies: base, registry, heuristics, annealing)."""

from __future__ import annotations

import math
import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest

from growenv.env.growth_env import GrowthEnv
from growenv.harness.episodes import run_episode
from growenv.policies import POLICIES, Policy, PolicyEnv, make_policy, policy_entry, policy_specs
from growenv.policies.annealing import AnnealingPolicy, acceptance_probability
from growenv.policies.heuristics import (
    BICPolicy,
    GreedyLossPolicy,
    GreedyPolicy,
    PeriodicPolicy,
    RandomPolicy,
    RoundRobinPolicy,
    bic,
)

TINY = {
    "task": "teacher_student",
    "task_kwargs": {"n_train": 128, "n_stats": 64, "n_val": 64, "n_test": 64, "hidden": (8, 8)},
    "train_steps": 5,
    "max_steps": 4,
    "batch_size": 32,
}
NAMES = [name for name, entry in POLICIES.items() if not entry.learned]
# (policy, net family) for every family the policy runs on (mlp and dag)
RUNS = [
    (name, net)
    for name in NAMES
    for net in ("mlp", "dag")
    if POLICIES[name].nets is None or net in POLICIES[name].nets
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def env() -> GrowthEnv:
    return GrowthEnv(**TINY)


@pytest.fixture(scope="module")
def dag_env() -> GrowthEnv:
    return GrowthEnv(net="dag", max_nodes=4, **TINY)


@pytest.fixture
def env_of(env, dag_env):
    return {"mlp": env, "dag": dag_env}


# --------------------------------------------------------------------------- stubs


def stub_env(max_sites: int = 3, num_sites: int | None = None, **extra) -> SimpleNamespace:
    """The parts of GrowthEnv the policies read, without training anything."""
    num_sites = max_sites if num_sites is None else num_sites
    return SimpleNamespace(
        max_sites=max_sites,
        skip_action=max_sites,
        stop_action=max_sites + 1,
        net=SimpleNamespace(num_sites=num_sites),
        **extra,
    )


def stub_info(valid, gains=None, step: int = 0, **extra) -> dict:
    """An info dict with ``valid`` sites unmasked (skip and stop always valid)."""
    valid = list(valid)
    n = len(valid)
    mask = np.array([*valid, True, True], dtype=bool)
    gains = np.zeros(n) if gains is None else np.asarray(gains, dtype=float)
    gains = np.where(mask[:n], gains, -np.inf)
    info = {
        "action_mask": mask,
        "candidate_gains": gains,
        "candidate_params": np.full(n, 10.0),
        "stats_loss": 1.0,
        "params": 100,
        "step": step,
    }
    info.update(extra)
    return info


def obs() -> np.ndarray:
    return np.zeros(3, dtype=np.float32)


# --------------------------------------------------------------------------- registry


@pytest.mark.parametrize("name", NAMES)
def test_make_policy_builds_each_policy(name):
    policy = make_policy(name)
    assert isinstance(policy, Policy)
    assert policy.name == name


def test_make_policy_rejects_unknown_spec_listing_valid_ones():
    with pytest.raises(ValueError, match="greedy-loss.*ppo:PATH"):
        make_policy("grredy")
    with pytest.raises(ValueError, match="path"):
        make_policy("ppo:")


def test_make_policy_passes_kwargs():
    assert make_policy("greedy", stop_below=0.5).stop_below == 0.5
    assert make_policy("periodic", period=7).period == 7


def test_make_policy_ppo_calls_agents_ppo_load(monkeypatch):
    calls = []
    stub = types.ModuleType("growenv.policies.ppo")
    stub.load = lambda path, **kw: calls.append((path, kw)) or "loaded"
    monkeypatch.setitem(sys.modules, "growenv.policies.ppo", stub)
    import growenv.policies

    monkeypatch.setattr(growenv.policies, "ppo", stub, raising=False)
    assert make_policy("ppo:runs/agent.zip", deterministic=True) == "loaded"
    assert calls == [("runs/agent.zip", {"deterministic": True})]


def test_policy_specs_come_from_the_registry_in_order():
    assert policy_specs() == (
        "greedy",
        "greedy-loss",
        "round-robin",
        "random",
        "bic",
        "annealing",
        "periodic",
        "whole-space",
        "restricted",
        "bic-restricted",
        "lookahead",
        "lookahead-skip:PATH",
        "lookahead-learned:PATH",
        "ppo:PATH",
        "dqn:PATH",
    )
    assert policy_entry("ppo:runs/a").learned and not policy_entry("greedy").learned
    for spec in ("ppo", "greedy:x", "oracle"):  # a learned policy needs its path, others none
        with pytest.raises(ValueError, match="unknown policy"):
            policy_entry(spec)


class RecordingEnv:
    """Forwards to an env and records every attribute a policy reads."""

    def __init__(self, env: GrowthEnv) -> None:
        object.__setattr__(self, "_env", env)
        object.__setattr__(self, "seen", set())

    def __getattr__(self, name: str):
        self.seen.add(name)
        return getattr(self._env, name)


POLICY_ENV_MEMBERS = {n for n in dir(PolicyEnv) if not n.startswith("_")} | set(
    PolicyEnv.__annotations__
)
SEARCHES = {"evaluate_candidates", "evaluate_candidate", "lookahead_losses"}


@pytest.mark.parametrize(("name", "net"), RUNS)
def test_policies_use_only_the_policy_env_and_their_flags_say_which_part(env_of, name, net):
    env = env_of[net]
    entry = POLICIES[name]
    policy = make_policy(name)
    policy.reset(0)
    observation, info = env.reset(seed=0)
    seen: set[str] = set()
    done = False
    while not done:
        proxy = RecordingEnv(env)
        action = policy.act(observation, info, proxy)
        seen |= proxy.seen
        observation, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
    assert seen <= POLICY_ENV_MEMBERS, f"{name} reads {sorted(seen - POLICY_ENV_MEMBERS)}"
    assert bool(seen & SEARCHES) == entry.reads_env
    assert not (entry.lockstep and entry.reads_env)  # the lockstep env runs no searches


# --------------------------------------------------------------------------- greedy


def test_greedy_picks_argmax_of_valid_gains():
    env = stub_env(4)
    info = stub_info([True, False, True, True], gains=[1.0, 9.0, 3.0, 2.0])
    assert GreedyPolicy().act(obs(), info, env) == 2  # site 1 is masked despite its gain


def test_greedy_skips_without_valid_site():
    env = stub_env(2)
    assert GreedyPolicy().act(obs(), stub_info([False, False]), env) == env.skip_action


def test_greedy_stop_below_uses_gain_per_param_relative_to_loss():
    env = stub_env(2)
    info = stub_info(
        [True, True], gains=[0.5, 1.0], stats_loss=2.0, candidate_params=np.array([10.0, 100.0])
    )
    # efficiencies 0.5 / 2 / 10 = 0.025 and 1 / 2 / 100 = 0.005: the best is 0.025
    assert GreedyPolicy(stop_below=0.03).act(obs(), info, env) == env.stop_action
    assert GreedyPolicy(stop_below=0.02).act(obs(), info, env) == 1  # grows the largest gain


def test_greedy_on_real_env_takes_argmax_each_step(env):
    seen = []

    class Spy(GreedyPolicy):
        def act(self, observation, info, env):
            action = super().act(observation, info, env)
            seen.append((info["candidate_gains"].copy(), action))
            return action

    run_episode(TINY, Spy(), seed=0, env=env)
    assert len(seen) == TINY["max_steps"]
    for gains, action in seen:
        if np.isfinite(gains).any():
            assert action == int(np.argmax(gains))
        else:
            assert action == env.skip_action


# --------------------------------------------------------------------------- greedy-loss


def test_greedy_loss_picks_argmax_of_real_drops():
    drops = np.array([0.1, 0.9, 0.3])
    env = stub_env(3, evaluate_candidates=lambda: {"loss_drop": drops.copy()})
    info = stub_info([True, False, True], gains=[5.0, 0.0, 0.0])  # first-order gains disagree
    policy = GreedyLossPolicy()
    assert policy.act(obs(), info, env) == 2
    np.testing.assert_array_equal(policy.last_drops, drops)


def test_greedy_loss_skips_when_no_drop_is_positive():
    env = stub_env(2, evaluate_candidates=lambda: {"loss_drop": np.array([0.0, -1.0])})
    info = stub_info([True, True])
    assert GreedyLossPolicy().act(obs(), info, env) == env.skip_action
    assert GreedyLossPolicy(skip_nonpositive=False).act(obs(), info, env) == 0


def test_greedy_loss_on_real_env_matches_evaluate_candidates(env):
    _, info = env.reset(seed=1)
    policy = GreedyLossPolicy()
    action = policy.act(obs(), info, env)
    drops = env.evaluate_candidates()["loss_drop"]  # deterministic for method="tiny"
    np.testing.assert_allclose(policy.last_drops, drops)
    assert action == int(np.argmax(drops))


# --------------------------------------------------------------------------- round-robin


def test_round_robin_cycles_and_passes_over_masked_sites():
    env = stub_env(3)
    policy = RoundRobinPolicy()
    all_valid = stub_info([True, True, True])
    assert [policy.act(obs(), all_valid, env) for _ in range(5)] == [0, 1, 2, 0, 1]
    policy.reset(0)
    one_masked = stub_info([True, False, True])
    assert [policy.act(obs(), one_masked, env) for _ in range(4)] == [0, 2, 0, 2]
    assert policy.act(obs(), stub_info([False, False, False]), env) == env.skip_action


def test_round_robin_cycles_over_existing_sites_only():
    env = stub_env(4, num_sites=2)  # max_sites 4 but the net has 2 hidden states
    policy = RoundRobinPolicy()
    info = stub_info([True, True, False, False])
    assert [policy.act(obs(), info, env) for _ in range(4)] == [0, 1, 0, 1]


# --------------------------------------------------------------------------- random


def test_random_takes_only_valid_actions_and_never_stops_by_default():
    env = stub_env(4)
    info = stub_info([True, False, True, False])
    policy = RandomPolicy()
    policy.reset(0)
    actions = {policy.act(obs(), info, env) for _ in range(300)}
    assert actions == {0, 2, env.skip_action}
    with_stop = RandomPolicy(include_stop=True)
    with_stop.reset(0)
    assert {with_stop.act(obs(), info, env) for _ in range(300)} == {0, 2, 4, 5}


def test_random_is_seeded():
    env = stub_env(3)
    info = stub_info([True, True, True])

    def draws(seed):
        policy = RandomPolicy()
        policy.reset(seed)
        return [policy.act(obs(), info, env) for _ in range(30)]

    assert draws(3) == draws(3)
    assert draws(3) != draws(4)


# --------------------------------------------------------------------------- BIC


def test_bic_formula_by_hand():
    ln = math.log
    assert bic(100, 0.5, 1000, "mse") == pytest.approx(100 * ln(1000) + 1000 * ln(0.5))
    # the loss sums over outputs: MSE per output is loss / out_features
    assert bic(100, 0.5, 1000, "mse", 2) == pytest.approx(100 * ln(1000) + 1000 * ln(0.25))
    assert bic(100, 0.5, 1000, "cross_entropy", 10) == pytest.approx(
        100 * ln(1000) + 2 * 1000 * 0.5
    )
    with pytest.raises(ValueError):
        bic(1, 1.0, 10, "hinge")


def bic_env(drops, loss_kind="mse", out=1, n=1000):
    return stub_env(
        len(drops),
        evaluate_candidates=lambda: {"loss_drop": np.asarray(drops, dtype=float)},
        report=SimpleNamespace(num_samples=n),
        task=SimpleNamespace(loss=loss_kind, out_features=out),
    )


def test_bic_policy_chooses_the_largest_bic_decrease():
    env = bic_env([0.01, 0.5, 0.4])
    info = stub_info(
        [True, True, True], stats_loss=1.0, params=100, candidate_params=np.array([10, 50, 400])
    )
    policy = BICPolicy()
    assert policy.act(obs(), info, env) == 1
    ln = math.log
    current, after = policy.last_bic
    assert current == pytest.approx(100 * ln(1000))  # ln(MSE) = ln 1 = 0
    assert after[0] == pytest.approx(110 * ln(1000) + 1000 * ln(0.99))  # above current
    assert after[1] == pytest.approx(150 * ln(1000) + 1000 * ln(0.5))  # the lowest
    assert after[2] == pytest.approx(500 * ln(1000) + 1000 * ln(0.6))
    assert after[0] > current > after[1]


def test_bic_policy_skips_when_no_candidate_lowers_bic():
    env = bic_env([0.001, 0.002])
    info = stub_info([True, True], stats_loss=1.0, params=100)
    assert BICPolicy().act(obs(), info, env) == env.skip_action


def test_bic_policy_classification_uses_cross_entropy_likelihood():
    # 2 n drop = 2 * 1000 * 0.1 = 200 > k ln n = 10 * 6.9 = 69: grows
    env = bic_env([0.1, 0.01], loss_kind="cross_entropy", out=10)
    info = stub_info([True, True], stats_loss=2.0, params=100)
    policy = BICPolicy()
    assert policy.act(obs(), info, env) == 0
    current, after = policy.last_bic
    assert current - after[0] == pytest.approx(2 * 1000 * 0.1 - 10 * math.log(1000))


# --------------------------------------------------------------------------- periodic


def test_periodic_grows_each_site_every_period():
    env = stub_env(2)
    policy = PeriodicPolicy(period=3)
    actions = [policy.act(obs(), stub_info([True, True], step=t), env) for t in range(7)]
    assert actions == [0, 1, 2, 0, 1, 2, 0]  # 2 == skip


def test_periodic_passes_over_masked_sites_and_period_one_cycles():
    env = stub_env(3)
    policy = PeriodicPolicy(period=4)
    info = stub_info([True, False, True])
    assert [policy.act(obs(), {**info, "step": t}, env) for t in range(5)] == [0, 2, 3, 3, 0]
    every = PeriodicPolicy(period=1)
    full = stub_info([True, True, True])
    assert [every.act(obs(), {**full, "step": t}, env) for t in range(4)] == [0, 1, 2, 0]
    with pytest.raises(ValueError):
        PeriodicPolicy(period=0)


# --------------------------------------------------------------------------- annealing


class SearchStub:
    """``env.evaluate_candidate(site)`` returning fixed loss drops."""

    def __init__(self, drops):
        self.drops = drops
        self.calls = []

    def __call__(self, site):
        self.calls.append(site)
        return SimpleNamespace(loss_drop=self.drops[site])


def annealing_decisions(drops, T0, threshold=0.01, trials=200):
    search = SearchStub(drops)
    env = stub_env(len(drops), evaluate_candidate=search)
    policy = AnnealingPolicy(T0=T0, decay=1.0, threshold=threshold)
    policy.reset(0)
    info = stub_info([True] * len(drops), stats_loss=1.0)
    out = []
    for _ in range(trials):
        action = policy.act(obs(), info, env)
        last = policy.last
        assert action == (last["site"] if last["accepted"] else env.skip_action)
        assert search.calls[-1] == last["site"]  # only the proposed site is searched
        out.append((last["gain"], last["accepted"]))
    return out


def test_annealing_at_zero_temperature_accepts_only_nonnegative_gains():
    # relative drops 0.5 and 0.001: gains 0.49 and -0.009 with threshold 0.01
    decisions = annealing_decisions([0.5, 0.001], T0=1e-9)
    assert {g >= 0 for g, _ in decisions} == {True, False}  # both kinds were proposed
    assert all(accepted == (gain >= 0) for gain, accepted in decisions)


def test_annealing_at_large_temperature_accepts_almost_all():
    decisions = annealing_decisions([0.0, 0.001], T0=1e9)  # every gain is negative
    assert all(g < 0 for g, _ in decisions)
    assert np.mean([a for _, a in decisions]) > 0.99


def test_annealing_schedule_and_acceptance_probability():
    policy = AnnealingPolicy(T0=2.0, decay=0.5)
    assert [policy.temperature(t) for t in range(3)] == [2.0, 1.0, 0.5]
    assert acceptance_probability(0.3, 1e-12) == 1.0
    assert acceptance_probability(-0.3, 0.0) == 0.0
    assert acceptance_probability(-0.3, 0.1) == pytest.approx(math.exp(-3.0))
    with pytest.raises(ValueError):
        AnnealingPolicy(decay=1.5)


def test_annealing_skips_without_valid_site():
    env = stub_env(2, evaluate_candidate=SearchStub([1.0, 1.0]))
    policy = AnnealingPolicy()
    assert policy.act(obs(), stub_info([False, False]), env) == env.skip_action
    assert policy.last is None


# --------------------------------------------------------------------------- real episodes


@pytest.mark.parametrize(("name", "net"), RUNS)
def test_policy_is_deterministic_under_a_seed(env_of, name, net):
    env = env_of[net]

    def actions(seed):
        rows = run_episode(TINY, make_policy(name), seed=seed, env=env)
        return [(r["action"], r["params"]) for r in rows]

    first = actions(5)
    assert first == actions(5)
    assert len(first) == TINY["max_steps"] + 1
    valid = set(range(env.max_sites)) | {env.skip_action}
    assert {a for a, _ in first[1:]} <= valid  # no stop by default
