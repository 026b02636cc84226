"""Nested minibatches (issue 23): ``train_steps(..., draw_batch=B)`` trains on the first
``batch_size`` of each ``B`` indices drawn, checked against an explicit SGD loop; the env's
``lookahead_losses(..., nested=True)`` rolls out on those, against a rollout trained by hand;
both lookaheads pass the option through."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from growenv.env.growth_env import GrowthEnv
from growenv.losses import resolve_loss
from growenv.policies import make_policy
from growenv.training import evaluate, train_steps
from tests.test_lookahead_learned import CHOSEN, slots_agent  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sgd_by_hand(net, x, y, idx, lr):
    """Plain SGD on the squared error summed over outputs, averaged over the rows of
    ``idx``, one step per row."""
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    for rows in idx:
        opt.zero_grad()
        ((net(x[rows]) - y[rows]) ** 2).sum(-1).mean().backward()
        opt.step()


def test_nested_minibatches_are_the_first_samples_of_the_full_ones():
    torch.manual_seed(0)
    x, y = torch.randn(50, 3), torch.randn(50, 2)
    net = torch.nn.Linear(3, 2)
    ours, theirs = copy.deepcopy(net), copy.deepcopy(net)
    steps, small, full = 7, 4, 10
    g = torch.Generator().manual_seed(5)
    opt = torch.optim.SGD(ours.parameters(), lr=0.1)
    train_steps(ours, opt, x, y, "mse", steps, small, g, draw_batch=full)
    by_hand = torch.Generator().manual_seed(5)
    idx = torch.randint(0, 50, (steps, full), generator=by_hand)
    _sgd_by_hand(theirs, x, y, idx[:, :small], 0.1)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    # the stream advanced as a full-size run's: the next draws agree
    assert torch.equal(
        torch.randint(0, 50, (3,), generator=g), torch.randint(0, 50, (3,), generator=by_hand)
    )
    # not nested: the stream's next samples, a different run
    other = copy.deepcopy(net)
    opt = torch.optim.SGD(other.parameters(), lr=0.1)
    train_steps(other, opt, x, y, "mse", steps, small, torch.Generator().manual_seed(5))
    assert not torch.equal(other.weight, ours.weight)


def test_a_draw_smaller_than_the_minibatch_is_one_line():
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(20, 3), torch.randn(20, 2)
    with pytest.raises(
        ValueError, match=r"^draw_batch: expected at least batch_size \(8\), got 4$"
    ):
        train_steps(net, opt, x, y, "mse", 3, 8, draw_batch=4)


def env_with(n_valid: int, seed: int = 6) -> tuple[GrowthEnv, np.ndarray, np.ndarray, dict]:
    """An env grown until it offers at least ``n_valid`` valid slots, those slots, its
    observation and info."""
    env = GrowthEnv(**CHOSEN)
    obs, info = env.reset(seed=seed)
    while (valid := np.flatnonzero(info["action_mask"][: env.max_sites])).size < n_valid:
        obs, _, _, _, info = env.step(int(valid[-1]))
    return env, valid, obs, info


def record_rollouts(monkeypatch) -> list[dict]:
    """Make ``GrowthEnv.lookahead_losses`` append its arguments and losses to the list
    returned, one dict per call (``monkeypatch.undo()`` ends it)."""
    calls: list[dict] = []
    real = GrowthEnv.lookahead_losses

    def spy(self, slots, steps=None, batch_size=None, nested=False, drop_worst_at=None):
        losses = real(self, slots, steps, batch_size, nested, drop_worst_at)
        calls.append({"steps": steps, "batch_size": batch_size, "nested": nested,
                      "drop_worst_at": drop_worst_at, "slots": np.asarray(slots).copy(),
                      "losses": losses})  # fmt: skip
        return losses

    monkeypatch.setattr(GrowthEnv, "lookahead_losses", spy)
    return calls


def test_a_nested_rollout_trains_on_the_first_samples_of_the_episodes_minibatches():
    """Each slot's nested rollout equals the slot grown on a copy, then trained by an explicit
    loop on the first ``b`` indices of each row the episode's own minibatches would draw,
    then validated; at the episode's size it is the plain rollout; it costs what
    ``lookahead_costs`` plans for ``b``."""
    env, valid, _, _ = env_with(3)
    valid = valid[:3]
    steps, batch, task = 9, env.batch_size // 2, env.task
    nested = copy.deepcopy(env)
    before = nested.episode.compute
    losses = nested.lookahead_losses(valid, steps, batch, nested=True)
    assert nested.episode.compute - before == env.lookahead_costs(valid, steps, batch).sum()
    loss_fn = resolve_loss(task.loss)  # per sample; the loop under test is the batches'
    for slot, got in zip(valid, losses, strict=True):
        twin = copy.deepcopy(env)
        twin.grow(int(slot))
        rows = torch.randint(
            0, len(task.train), (steps, env.batch_size), generator=twin.episode.generator
        )[:, :batch]
        for r in rows:
            twin.optimizer.zero_grad(set_to_none=True)
            loss_fn(twin.net(task.train.x[r]), task.train.y[r]).mean().backward()
            twin.optimizer.step()
        expected, _ = evaluate(twin.net, task.val.x, task.val.y, task.loss)
        assert got == pytest.approx(float(expected), rel=1e-5)
    plain = copy.deepcopy(env).lookahead_losses(valid, steps, batch)
    assert not np.array_equal(plain, losses)
    full = copy.deepcopy(env).lookahead_losses(valid, steps, env.batch_size, nested=True)
    np.testing.assert_array_equal(full, copy.deepcopy(env).lookahead_losses(valid, steps))


def test_nested_errors_are_one_line(slots_agent):  # noqa: F811
    env, valid, _, _ = env_with(3)
    valid = valid[:3]
    with pytest.raises(ValueError, match="^nested: subsamples the episode's minibatches of") as e:
        env.lookahead_losses(valid, 3, env.batch_size * 2, nested=True)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="^nested: expected True or False, got 'yes'$"):
        env.lookahead_losses(valid, 3, 8, nested="yes")
    for name in ("lookahead", f"lookahead-learned:{slots_agent}"):
        with pytest.raises(ValueError, match="^nested: subsamples .* pass rollout_batch= too$"):
            make_policy(name, nested=True)
        with pytest.raises(ValueError, match="^nested: expected True or False, got 1$"):
            make_policy(name, rollout_batch=8, nested=1)


def test_both_lookaheads_roll_out_nested_when_asked(slots_agent, monkeypatch):  # noqa: F811
    """A policy built with ``nested=True`` asks the env for nested rollouts of its
    ``rollout_batch`` and grows their argmin; without it, plain ones."""
    for name in ("lookahead", f"lookahead-learned:{slots_agent}"):
        for nested in (True, False):
            env, _, obs, info = env_with(3)
            calls = record_rollouts(monkeypatch)
            policy = make_policy(name, rollout_batch=16, nested=nested)
            policy.reset(0)
            action = policy.act(obs, info, env)
            monkeypatch.undo()
            assert len(calls) == 1
            assert (calls[0]["batch_size"], calls[0]["nested"]) == (16, nested)
            slots, losses = calls[0]["slots"], calls[0]["losses"]
            assert action == int(slots[int(np.argmin(losses))])
