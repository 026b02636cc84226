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
from tests.test_lookahead_learned import CHOSEN, slots_agent  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _env_with(n_valid: int, seed: int = 6) -> tuple[GrowthEnv, np.ndarray, np.ndarray, dict]:
    """An env grown until it offers at least ``n_valid`` valid slots, its observation and
    info."""
    env = GrowthEnv(**CHOSEN)
    obs, info = env.reset(seed=seed)
    while (valid := np.flatnonzero(info["action_mask"][: env.max_sites])).size < n_valid:
        obs, _, _, _, info = env.step(int(valid[-1]))
    return env, valid, obs, info


def _evaluate_macs(env: GrowthEnv, slot: int) -> float:
    twin = copy.deepcopy(env)
    twin.grow(slot)
    return twin.family.evaluate_macs(twin.net, len(twin.task.val))


def test_the_worst_rollout_at_the_checkpoint_stops_and_the_others_run_on_unchanged():
    env, valid, _, _ = _env_with(4)
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
    env, valid, _, _ = _env_with(2)
    slots = valid[:2]
    np.testing.assert_array_equal(
        copy.deepcopy(env).lookahead_losses(slots, 20, drop_worst_at=5),
        copy.deepcopy(env).lookahead_losses(slots, 20),
    )


def test_race_errors_are_one_line(slots_agent):  # noqa: F811
    env, valid, _, _ = _env_with(3)
    with pytest.raises(ValueError, match=r"^drop_worst_at: expected fewer than the rollouts' 10 "):
        env.lookahead_losses(valid[:3], 10, drop_worst_at=10)
    with pytest.raises(ValueError, match="^drop_worst_at: expected"):
        env.lookahead_losses(valid[:3], 10, drop_worst_at=0)
    for name in ("lookahead", f"lookahead-learned:{slots_agent}"):
        for bad in (0, 1, 1.5, -0.2, "half", True):
            with pytest.raises(ValueError, match=r"^drop_worst_after: expected a fraction in"):
                make_policy(name, drop_worst_after=bad)
        with pytest.raises(ValueError, match=r"^drop_worst_after: .* \(pass budget=None\)$"):
            make_policy(name, drop_worst_after=0.25, budget="whole-space")


def test_both_lookaheads_race_at_their_share_of_the_rollouts_steps(slots_agent, monkeypatch):  # noqa: F811
    """The policies ask the env to stop the worst at ``int(share * steps)`` of the rollouts'
    steps (the rest of the episode by default) and grow the argmin of what it returns."""
    for name in ("lookahead", f"lookahead-learned:{slots_agent}"):
        env, _, obs, info = _env_with(3)
        calls: list = []
        real = GrowthEnv.lookahead_losses

        def spy(self, slots, steps=None, batch_size=None, nested=False, drop_worst_at=None,
                real=real, calls=calls):  # fmt: skip
            losses = real(self, slots, steps, batch_size, nested, drop_worst_at)
            calls.append((steps, drop_worst_at, np.asarray(slots).copy(), losses))
            return losses

        monkeypatch.setattr(GrowthEnv, "lookahead_losses", spy)
        policy = make_policy(name, drop_worst_after=0.25)
        policy.reset(0)
        action = policy.act(obs, info, env)
        monkeypatch.undo()
        assert len(calls) == 1
        steps, at, slots, losses = calls[0]
        assert steps is None and at == int(0.25 * env.rollout_steps) > 0
        assert action == int(slots[int(np.argmin(losses))])
