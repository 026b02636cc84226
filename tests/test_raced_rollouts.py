"""Raced rollouts (issue 23): ``lookahead_losses(..., drop_worst_at=a)`` stops the worst of 3
or more rollouts after ``a`` steps, judged by the rollouts of ``a`` steps computed apart;
the others are the uninterrupted rollouts, charged one more validation; both lookaheads
pass ``drop_worst_after`` through as a share of the rollouts' steps."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from growenv.env.growth_env import GrowthEnv
from growenv.policies import make_policy
from tests.test_lookahead_learned import slots_agent  # noqa: F401 (a fixture)
from tests.test_nested_minibatches import env_with, record_rollouts

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _evaluate_macs(env: GrowthEnv, slot: int) -> float:
    twin = copy.deepcopy(env)
    twin.grow(slot)
    return twin.family.evaluate_macs(twin.net, len(twin.task.val))


def test_the_worst_rollout_at_the_checkpoint_stops_and_the_others_run_on_unchanged():
    env, valid, _, _ = env_with(4)
    slots, steps, at = valid[:4], 30, 7
    full = copy.deepcopy(env).lookahead_losses(slots, steps)
    early = copy.deepcopy(env).lookahead_losses(slots, at)
    worst = int(np.flatnonzero(early == early.max())[-1])
    raced = copy.deepcopy(env)
    before = raced.episode.compute
    losses = raced.lookahead_losses(slots, steps, drop_worst_at=at)
    assert np.isinf(losses[worst])
    kept = [i for i in range(len(slots)) if i != worst]
    np.testing.assert_array_equal(losses[kept], full[kept])
    survivors = [int(slots[i]) for i in kept]
    expected = env.lookahead_costs(survivors, steps).sum()
    expected += env.lookahead_costs([int(slots[worst])], at).sum()
    expected += sum(_evaluate_macs(env, s) for s in survivors)  # their checkpoint's validation
    assert raced.episode.compute - before == pytest.approx(expected, rel=1e-12)
    assert raced.episode.compute - before < env.lookahead_costs(slots, steps).sum()


def test_a_staged_race_stops_one_at_each_checkpoint_judged_by_rollouts_of_that_length():
    """``drop_worst_at=[a, b]`` over 4 slots: the worst of the 4 rollouts of ``a`` steps
    stops, then the worst of the 3 others' rollouts of ``b`` steps; the 2 left are the
    uninterrupted rollouts. Each stopped one is charged its short rollout and each
    validation it passed, each survivor its full rollout and 2 validations more."""
    env, valid, _, _ = env_with(4)
    slots, steps, a, b = valid[:4], 30, 4, 11
    full = copy.deepcopy(env).lookahead_losses(slots, steps)
    at_a = copy.deepcopy(env).lookahead_losses(slots, a)
    first = int(np.flatnonzero(at_a == at_a.max())[-1])
    rest = [i for i in range(4) if i != first]
    at_b = copy.deepcopy(env).lookahead_losses(slots[rest], b)
    second = rest[int(np.flatnonzero(at_b == at_b.max())[-1])]
    kept = [i for i in rest if i != second]
    raced = copy.deepcopy(env)
    before = raced.episode.compute
    losses = raced.lookahead_losses(slots, steps, drop_worst_at=[b, a])  # any order
    assert np.isinf(losses[[first, second]]).all()
    np.testing.assert_array_equal(losses[kept], full[kept])
    s = [int(x) for x in slots]
    expected = env.lookahead_costs([s[i] for i in kept], steps).sum()
    expected += env.lookahead_costs([s[first]], a).sum()
    expected += env.lookahead_costs([s[second]], b).sum() + _evaluate_macs(env, s[second])
    expected += sum(2 * _evaluate_macs(env, s[i]) for i in kept)
    assert raced.episode.compute - before == pytest.approx(expected, rel=1e-12)


def test_a_checkpoint_given_twice_stops_two_and_entries_beyond_two_survivors_are_ignored():
    env, valid, _, _ = env_with(4)
    slots, steps, a = valid[:4], 24, 6
    full = copy.deepcopy(env).lookahead_losses(slots, steps)
    at_a = copy.deepcopy(env).lookahead_losses(slots, a)
    kept = sorted(np.argsort(at_a, kind="stable")[:2].tolist())
    twice = copy.deepcopy(env).lookahead_losses(slots, steps, drop_worst_at=[a, a])
    assert np.isinf(np.delete(twice, kept)).all()
    np.testing.assert_array_equal(twice[kept], full[kept])
    three = copy.deepcopy(env).lookahead_losses(slots, steps, drop_worst_at=[a, a, a + 1])
    np.testing.assert_array_equal(three, twice)
    # 3 slots: only the first entry races, exactly as an int would
    one, staged = copy.deepcopy(env), copy.deepcopy(env)
    before = one.episode.compute
    expected = one.lookahead_losses(slots[:3], steps, drop_worst_at=a)
    np.testing.assert_array_equal(
        staged.lookahead_losses(slots[:3], steps, drop_worst_at=(a, a + 5)), expected
    )
    assert staged.episode.compute == one.episode.compute > before


def test_two_rollouts_are_never_raced():
    env, valid, _, _ = env_with(2)
    slots = valid[:2]
    np.testing.assert_array_equal(
        copy.deepcopy(env).lookahead_losses(slots, 20, drop_worst_at=5),
        copy.deepcopy(env).lookahead_losses(slots, 20),
    )


def test_race_errors_are_one_line(slots_agent):  # noqa: F811
    env, valid, _, _ = env_with(3)
    with pytest.raises(ValueError, match=r"^drop_worst_at: expected fewer than the rollouts' 10 "):
        env.lookahead_losses(valid[:3], 10, drop_worst_at=10)
    with pytest.raises(ValueError, match="^drop_worst_at: expected"):
        env.lookahead_losses(valid[:3], 10, drop_worst_at=0)
    with pytest.raises(ValueError, match=r"^drop_worst_at: expected fewer than .* got 12$"):
        env.lookahead_losses(valid[:3], 10, drop_worst_at=[3, 12])
    with pytest.raises(ValueError, match=r"^drop_worst_at: expected a step count or a "):
        env.lookahead_losses(valid[:3], 10, drop_worst_at=[])
    fraction = r"^drop_worst_after: expected a number in \(0, 1\) or None, got "
    for name in ("lookahead", f"lookahead-learned:{slots_agent}"):
        for bad in (0, 1, 1.5, -0.2, "half", True):
            with pytest.raises(ValueError, match=fraction):
                make_policy(name, drop_worst_after=bad)
        for bad in ([0.25, 1.0], (0.1, "a")):
            with pytest.raises(ValueError, match=fraction.replace(r" or None", "")):
                make_policy(name, drop_worst_after=bad)
        with pytest.raises(ValueError, match=r"^drop_worst_after: expected .* got \[\]$"):
            make_policy(name, drop_worst_after=[])
        with pytest.raises(ValueError, match=r"^drop_worst_after: .* \(pass budget=None\)$"):
            make_policy(name, drop_worst_after=0.25, budget="whole-space")


def test_both_lookaheads_race_at_their_share_of_the_rollouts_steps(slots_agent, monkeypatch):  # noqa: F811
    """The policies ask the env to stop the worst at ``int(share * steps)`` of the rollouts'
    steps (the rest of the episode by default) and grow the argmin of what it returns."""
    for name in ("lookahead", f"lookahead-learned:{slots_agent}"):
        env, _, obs, info = env_with(3)
        calls = record_rollouts(monkeypatch)
        policy = make_policy(name, drop_worst_after=0.25)
        policy.reset(0)
        action = policy.act(obs, info, env)
        monkeypatch.undo()
        assert len(calls) == 1
        slots, losses = calls[0]["slots"], calls[0]["losses"]
        assert calls[0]["steps"] is None
        assert calls[0]["drop_worst_at"] == int(0.25 * env.rollout_steps) > 0
        assert action == int(slots[int(np.argmin(losses))])
        env, _, obs, info = env_with(3)
        calls = record_rollouts(monkeypatch)
        policy = make_policy(name, drop_worst_after=[0.25, 0.0625, 0.25])
        policy.reset(0)
        policy.act(obs, info, env)
        monkeypatch.undo()
        length = env.rollout_steps
        assert calls[0]["drop_worst_at"] == [
            int(0.25 * length),
            int(length / 16),
            int(0.25 * length),
        ]
