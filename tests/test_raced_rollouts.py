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
    fraction = r"^drop_worst_after: expected a number in \(0, 1\) or None, got "
    for name in ("lookahead", f"lookahead-learned:{slots_agent}"):
        for bad in (0, 1, 1.5, -0.2, "half", True):
            with pytest.raises(ValueError, match=fraction):
                make_policy(name, drop_worst_after=bad)
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
