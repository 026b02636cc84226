"""A learned *where* for the lookahead (issue 23): the "never grow again" rollout labels
against real episodes stepped to the end, the ``slots`` action set and the proposals against
explicit loops, and the ``lookahead-learned:PATH`` policy against the lookahead over the
agent's top slots computed by hand."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from growenv.env.growth_env import GrowthEnv
from growenv.errors import UserError
from growenv.learners.rollouts import RolloutLabels, rollout_returns
from growenv.learners.scorer import action_set_mask, infer_layout, slots_mask
from growenv.learners.value import ValueConfig, _candidates, train_value_agent
from growenv.nets.dag import costs
from growenv.policies import make_policy
from growenv.policies.lookahead import (
    LearnedLookaheadPolicy,
    lookahead_candidates,
    proposed_slots,
    rollouts_within,
    shortened_rollouts,
    widened_ranking,
)
from tests.test_lookahead import DAG, SITES

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _never_return(env: GrowthEnv, action: int) -> float:
    """The return of ``action`` then skip to the end, stepped for real on a copy of ``env``."""
    twin = copy.deepcopy(env)
    _, total, terminated, truncated, _ = twin.step(int(action))
    total, done = float(total), terminated or truncated
    while not done:
        _, reward, terminated, truncated, _ = twin.step(twin.skip_action)
        total, done = total + float(reward), terminated or truncated
    return total


def test_never_labels_are_the_returns_of_real_episodes_that_stop_growing():
    env = GrowthEnv(**DAG)
    _, info = env.reset(seed=3)
    done, checked = False, 0
    while not done:
        mask = np.asarray(env.action_masks(), dtype=bool)
        before = env.episode.compute
        labels, steps, macs = rollout_returns(env, mask, "never")
        assert env.episode.compute == before  # labels are training overhead, not the episode's
        rolled = np.flatnonzero(mask)
        rolled = rolled[rolled != env.stop_action]
        assert steps == len(rolled) * (DAG["max_steps"] - env.step_count) and macs > 0
        for a in rolled:
            assert labels[a] == pytest.approx(_never_return(env, a), rel=1e-5, abs=1e-7)
            checked += 1
        assert labels[env.stop_action] == 0.0 and np.isnan(labels[~mask]).all()
        valid = np.flatnonzero(mask[: env.max_sites])
        action = int(valid[-1]) if valid.size else env.skip_action
        _, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
    assert checked >= 8


@pytest.mark.parametrize(
    "change",
    [{"reward": "relative"}, {"cost_per_param": 1e-3}, {"cost_per_flop": 1e-9}],
    ids=["relative", "param-cost", "flop-cost"],
)
def test_never_needs_telescoping_rewards(change):
    config = ValueConfig(env_kwargs={**DAG, **change}, algo="rollout", rollout_base="never")
    with pytest.raises(UserError, match="^rollout_base: 'never' needs") as err:
        config.validate()
    assert "\n" not in str(err.value)
    env = GrowthEnv(**{**DAG, **change})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="^rollout_base: 'never' needs") as err:
        rollout_returns(env, np.asarray(env.action_masks(), dtype=bool), "never")
    assert "\n" not in str(err.value)


def test_the_slots_set_keeps_every_valid_slot_and_extras_only_without_one():
    rng = np.random.default_rng(0)
    mask = torch.as_tensor(rng.random((64, 9)) < 0.3)
    out = slots_mask(mask, 7).numpy()
    for row, got in zip(mask.numpy(), out, strict=True):
        any_slot = row[:7].any()
        assert np.array_equal(got[:7], row[:7])
        assert np.array_equal(got[7:], row[7:] & (not any_slot))
    obs = torch.zeros(64, 1)
    assert torch.equal(action_set_mask("slots", obs, None, mask), torch.as_tensor(out))


def test_proposals_are_the_top_scores_by_an_explicit_sort():
    rng = np.random.default_rng(1)
    for _ in range(50):
        q = rng.integers(0, 4, 12).astype(float)  # ties: the lower slot first
        valid = np.flatnonzero(rng.random(12) < 0.6)
        top = int(rng.integers(1, 5))
        ranked = sorted(valid.tolist(), key=lambda s: (-q[s], s))[:top]
        assert proposed_slots(q, valid, top).tolist() == sorted(ranked)


@pytest.fixture(scope="module")
def slots_agent(tmp_path_factory):
    """A tiny agent trained on "never" labels of every valid slot (what it learned does not
    matter, only that the policy follows its scores)."""
    run = tmp_path_factory.mktemp("slots_agent")
    config = ValueConfig(env_kwargs=DAG, algo="rollout", rollout_base="never",
                         action_set="slots", total_timesteps=8, n_envs=2, learning_starts=2,
                         batch_size=8, train_freq=1, gradient_steps=3, eval_every=0,
                         hidden=(16,), seed=2)  # fmt: skip
    with torch.random.fork_rng():
        train_value_agent(config, run)
    return run


def test_the_learner_labels_every_valid_slot_with_never_returns():
    config = ValueConfig(env_kwargs=DAG, algo="rollout", rollout_base="never", action_set="slots")
    base = GrowthEnv(**DAG)
    env = RolloutLabels(base, "never", _candidates(config.validate(), base))
    obs, _ = env.reset(seed=5)
    layout, done = infer_layout(obs.size, "dag"), False
    while not done:
        mask = np.asarray(env.action_masks(), dtype=bool)
        want = slots_mask(torch.as_tensor(mask)[None], layout.num_slots)[0].numpy()
        labels = env.returns()
        assert np.array_equal(np.isfinite(labels), want)
        valid = np.flatnonzero(want[: base.max_sites])
        action = int(valid[0]) if valid.size else base.skip_action
        obs, _, terminated, truncated, _ = env.step(action)
        done = terminated or truncated


def test_the_policy_rolls_out_the_agents_top_slots_and_grows_the_best(slots_agent):
    agent = make_policy(f"dqn:{slots_agent}")
    for top in (2, 3):
        policy = make_policy(f"lookahead-learned:{slots_agent}", top=top)
        env = GrowthEnv(**DAG)
        obs, info = env.reset(seed=top)
        policy.reset(top)
        done, compared = False, 0
        while not done:
            q = agent.q_values(obs, env)
            valid = np.flatnonzero(info["action_mask"][: env.max_sites])
            ranked = sorted(sorted(valid.tolist(), key=lambda s: (-q[s], s))[:top])
            if len(ranked) > 1:
                losses = copy.deepcopy(env).lookahead_losses(ranked)
                expected = ranked[int(np.argmin(losses))]
                compared += 1
            else:
                expected = ranked[0] if ranked else env.skip_action
            before = env.episode.compute
            action = policy.act(obs, info, env)
            assert action == expected
            assert (env.episode.compute > before) == (len(ranked) > 1)  # rollouts are charged
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        assert compared >= 2


def test_one_proposal_grows_the_agents_best_slot_without_a_rollout(slots_agent):
    agent = make_policy(f"dqn:{slots_agent}")
    policy = LearnedLookaheadPolicy(agent, top=1)
    env = GrowthEnv(**DAG)
    obs, info = env.reset(seed=0)
    env.lookahead_losses = None  # calling it would fail
    for _ in range(DAG["max_steps"]):
        action = policy.act(obs, info, env)
        assert action == agent.act(obs, info, env)
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break


def test_lookahead_learned_needs_an_agent_that_scores_every_slot(tmp_path, slots_agent):
    config = ValueConfig(env_kwargs=DAG, algo="rollout", action_set="best-per-kind",
                         total_timesteps=4, n_envs=2, learning_starts=2, batch_size=4,
                         train_freq=1, gradient_steps=1, eval_every=0, hidden=(8,))  # fmt: skip
    train_value_agent(config, tmp_path / "kinds")
    for spec, match in (
        (f"lookahead-learned:{tmp_path / 'kinds'}", "action_set='slots'"),
        (f"lookahead-learned:{tmp_path / 'missing'}", "path"),
    ):
        with pytest.raises(ValueError, match=match) as err:
            make_policy(spec)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="^top: expected") as err:
        make_policy(f"lookahead-learned:{slots_agent}", top=0)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- compute bar
CHOSEN = {**DAG, "fit_scope": "chosen", "max_nodes": 5, "max_steps": 6}


def _decision_macs(env: GrowthEnv) -> float:
    """The fit and search MACs ``env`` has charged so far (a decision's phases)."""
    return sum(env.compute_by_phase.get(p, 0.0) for p in ("fit", "search"))


def _decision(env: GrowthEnv, policy, obs: np.ndarray, info: dict) -> tuple[int, float]:
    """``policy``'s action on ``env``, stepped: the action and the fit and search MACs of the
    decision and of the step that grows it."""
    before = _decision_macs(env)
    action = policy.act(obs, info, env)
    env.step(action)
    return action, _decision_macs(env) - before


@pytest.mark.parametrize("scope", ["chosen", "all"])
def test_planned_costs_are_what_the_env_charges(scope):
    env = GrowthEnv(**{**CHOSEN, "fit_scope": scope})
    env.reset(seed=1)
    done, checked = False, 0
    while not done:
        valid = np.flatnonzero(env.action_masks()[: env.max_sites]).tolist()
        if valid:
            twin = copy.deepcopy(env)
            before = twin.episode.compute
            twin.evaluate_candidates(valid)
            assert env.search_cost(valid) == twin.episode.compute - before
            before = twin.episode.compute  # everything fitted now: the search alone
            twin.evaluate_candidates(valid)
            assert env.search_cost(valid, fits=False) == twin.episode.compute - before
            for slot in [*valid, env.skip_action]:
                twin = copy.deepcopy(env)
                before = twin.episode.compute
                twin.lookahead_losses([slot], steps=7)
                assert env.lookahead_costs([slot], steps=7)[0] == twin.episode.compute - before
                checked += 1
            # the shape-only plans are what the fitted candidates give
            twin = copy.deepcopy(env)
            pending = twin.unfitted(valid)
            planned = [costs.planned_fit_macs(e, twin.report.num_samples, 4) for e in pending]
            twin.fit_expansions(valid)
            assert planned == [e.fit_macs for e in pending]
            for slot in valid:
                e = twin.dag.expansion(slot)
                cand = e.candidate(4)
                assert costs.planned_preview_macs(twin.net, e, cand.num_neurons) == (
                    costs.preview_macs(twin.net, cand)
                )
        action = valid[len(valid) // 2] if valid else env.skip_action
        _, _, terminated, truncated, _ = env.step(action)
        done = terminated or truncated
    assert checked >= 20


def test_rollouts_within_is_the_longest_prefix_that_fits_by_an_explicit_loop():
    rng = np.random.default_rng(0)
    for _ in range(500):
        n = int(rng.integers(1, 6))
        roll, grow = rng.uniform(1, 10, n), rng.uniform(0, 5, n)
        bar = float(rng.uniform(0, 40))
        want = 1
        for k in range(2, n + 1):
            if sum(roll[:k]) + max(grow[:k]) <= bar:
                want = k
        assert rollouts_within(roll, grow, bar) == want


def test_shortened_rollouts_are_the_most_proposals_then_the_longest_by_brute_force():
    rng = np.random.default_rng(1)
    shortened = 0
    for _ in range(300):
        n, steps = int(rng.integers(1, 5)), int(rng.integers(0, 30))
        fixed, per, grow = rng.uniform(1, 10, n), rng.uniform(0, 2, n), rng.uniform(0, 5, n)
        bar = float(rng.uniform(0, 60))
        want = (1, steps)
        for k in range(2, n + 1):  # more proposals first, then more steps
            for s in range(steps + 1):
                if (fixed[:k] + s * per[:k]).sum() + grow[:k].max() <= bar:
                    want = max(want, (k, s)) if want[0] > 1 else (k, s)
        got = shortened_rollouts(fixed, per, grow, bar, steps)
        assert got == want
        shortened += 1 < got[0] and got[1] < steps
    assert shortened > 20


@pytest.mark.parametrize("steps", [None, 400])
def test_a_budgeted_decision_rolls_out_what_fits_and_never_costs_more_than_whole_space(
    slots_agent, steps
):
    agent = make_policy(f"dqn:{slots_agent}")
    policy = make_policy(f"lookahead-learned:{slots_agent}", steps=steps, budget="whole-space")
    whole_space = make_policy("whole-space")
    env = GrowthEnv(**CHOSEN)
    obs, info = env.reset(seed=4)
    policy.reset(4)
    done, seen = False, set()
    while not done:
        q = agent.q_values(obs, env)
        valid = np.flatnonzero(info["action_mask"][: env.max_sites]).tolist()
        ranked = sorted(valid, key=lambda s: (-q[s], s))[:3]
        k = min(len(ranked), 1)
        searches = {slot: env.search_cost([slot], fits=False) for slot in valid}
        if len(valid) > 1:  # the largest k whose rollouts and growth fit in the bar, by hand
            bar = env.search_cost(valid) + min(searches.values())
            spent, grow = 0.0, 0.0
            for i, slot in enumerate(ranked):
                spent += env.lookahead_costs([slot], steps)[0]  # with its fit, paid once
                grow = max(grow, searches[slot])
                if i >= 1 and spent + grow <= bar:
                    k = i + 1
        chosen = sorted(ranked[:k])
        if k > 1:  # rollouts on copies fitted in them: the policy's own fits change nothing
            expected = chosen[int(np.argmin(copy.deepcopy(env).lookahead_losses(chosen, steps)))]
            planned = env.lookahead_costs(chosen, steps).sum() + searches[expected]
        else:
            expected = chosen[0] if chosen else env.skip_action
            planned = env.search_cost(chosen) if chosen else 0.0
        seen.add(k)
        action, ours = _decision(copy.deepcopy(env), policy, obs, info)
        assert action == expected
        assert policy.rollouts[-1][0] == (k if k > 1 else 0)
        assert ours == planned  # the plan is what the decision is charged
        if len(valid) > 1:  # whole-space's decision on the same state costs at least as much
            _, theirs = _decision(copy.deepcopy(env), whole_space, obs, info)
            assert ours <= theirs
        obs, _, terminated, truncated, info = env.step(expected)
        done = terminated or truncated
    assert seen & {2, 3} if steps is None else 1 in seen  # both branches are exercised


def test_an_episode_budget_with_shortened_rollouts_stays_within_the_bars_it_visits(slots_agent):
    policy = make_policy(
        f"lookahead-learned:{slots_agent}", steps=400, budget="whole-space-episode", shorten=True
    )
    env = GrowthEnv(**CHOSEN)
    obs, info = env.reset(seed=4)
    policy.reset(4)
    done, bars, spent, short = False, 0.0, 0.0, 0
    while not done:
        valid = np.flatnonzero(info["action_mask"][: env.max_sites]).tolist()
        if len(valid) > 1:  # whole-space's least cost of the decision
            bars += env.search_cost(valid) + min(env.search_cost([v], fits=False) for v in valid)
        before = _decision_macs(env)
        action = policy.act(obs, info, env)
        obs, _, terminated, truncated, info = env.step(action)
        after = _decision_macs(env)
        if len(valid) > 1:
            spent += after - before
            assert spent <= bars  # at every decision, not only at the end
            assert policy.credit == pytest.approx(bars - spent, rel=1e-12)
            k, steps = policy.rollouts[-1]
            assert k == 0 or 0 <= steps <= 400
            short += k > 0 and steps < 400
        done = terminated or truncated
    assert short  # some rollouts were shortened


def test_budget_errors_are_one_line(slots_agent):
    with pytest.raises(UserError, match="^budget: expected one of 'whole-space'") as err:
        make_policy(f"lookahead-learned:{slots_agent}", budget="half")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="^shorten: expected True or False") as err:
        make_policy(f"lookahead-learned:{slots_agent}", budget="whole-space", shorten="yes")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="^shorten: shortens rollouts to fit a budget") as err:
        make_policy(f"lookahead-learned:{slots_agent}", shorten=True)
    assert "\n" not in str(err.value)
    env = GrowthEnv(**SITES)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="^search_cost: only DAG envs") as err:
        env.search_cost([0])
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- widened proposals
def test_widened_ranking_is_the_top_then_the_extras_then_the_rest_by_an_explicit_loop():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 12))
        valid = np.sort(rng.choice(20, size=n, replace=False))
        q = np.round(rng.normal(size=20), 1)  # ties happen
        top, size = int(rng.integers(1, 5)), int(rng.integers(0, 14))
        extra = rng.choice(valid, size=int(rng.integers(0, min(n, 3) + 1)), replace=False)
        by_score = []
        for slot in valid.tolist():  # insertion sort: larger score first, ties lower slot
            i = 0
            while i < len(by_score) and (q[by_score[i]], -by_score[i]) >= (q[slot], -slot):
                i += 1
            by_score.insert(i, slot)
        want = by_score[:top]
        for slot in extra.tolist():
            if slot not in want:
                want.append(slot)
        keep = max(len(want), size)  # the top and the extras are always kept
        want += [s for s in by_score if s not in want]
        got = widened_ranking(q, valid, top, size, extra)
        assert got.tolist() == want[:keep]
        assert widened_ranking(q, valid, top, size).tolist() == by_score[: max(top, size)]


@pytest.mark.parametrize("kinds", [False, True])
def test_a_widened_decision_rolls_out_every_full_rollout_that_fits(slots_agent, kinds):
    agent = make_policy(f"dqn:{slots_agent}")
    steps, top, widen = 40, 2, 6
    policy = make_policy(f"lookahead-learned:{slots_agent}", steps=steps, budget="whole-space",
                         shorten=True, top=top, widen=widen, kinds=kinds)  # fmt: skip
    whole_space = make_policy("whole-space")
    env = GrowthEnv(**CHOSEN)
    obs, info = env.reset(seed=5)
    policy.reset(5)
    done, widest = False, 0
    while not done:
        q = agent.q_values(obs, env)
        valid = np.flatnonzero(info["action_mask"][: env.max_sites]).tolist()
        by_score = sorted(valid, key=lambda s: (-q[s], s))
        ranked = by_score[:top]
        if kinds:  # each kind's best by estimated gain, edge, node, widen
            kinds_of = np.asarray(env.slot_layout.kinds)
            gains = np.asarray(info["candidate_gains"], dtype=float)
            for kind in ("edge", "node", "widen"):
                of_kind = [s for s in valid if kinds_of[s] == kind]
                best = max(of_kind, key=lambda s: (gains[s], -s)) if of_kind else None
                if best is not None and best not in ranked:
                    ranked.append(best)
        ranked = (ranked + [s for s in by_score if s not in ranked])[: max(widen, len(ranked))]
        if len(valid) > 1:
            searches = {slot: env.search_cost([slot], fits=False) for slot in valid}
            bar = env.search_cost(valid) + min(searches.values())
            k, run = 1, steps
            for i in range(1, len(ranked)):  # the longest prefix of full-length rollouts
                rolls = env.lookahead_costs(ranked[: i + 1], steps).sum()
                if rolls + max(searches[s] for s in ranked[: i + 1]) <= bar:
                    k = i + 1
            if k < min(top, len(ranked)):  # shortened, among the agent's top only
                k, run = shortened_rollouts(
                    env.lookahead_costs(ranked[:top], 0),
                    env.lookahead_costs(ranked[:top], 1) - env.lookahead_costs(ranked[:top], 0),
                    [searches[s] for s in ranked[:top]],
                    bar,
                    steps,
                )
            chosen = sorted(ranked[:k])
            if k > 1:
                losses = copy.deepcopy(env).lookahead_losses(chosen, run)
                expected = chosen[int(np.argmin(losses))]
            else:
                expected = chosen[0]
        else:
            k, expected = 0, (valid[0] if valid else env.skip_action)
        action, ours = _decision(copy.deepcopy(env), policy, obs, info)
        assert action == expected
        assert policy.rollouts[-1][0] == (k if k > 1 else 0)
        if len(valid) > 1:
            _, theirs = _decision(copy.deepcopy(env), whole_space, obs, info)
            assert ours <= theirs
        widest = max(widest, policy.rollouts[-1][0])
        obs, _, terminated, truncated, info = env.step(expected)
        done = terminated or truncated
    assert widest > top  # some decision looked beyond the agent's top


def test_kinds_without_a_budget_roll_out_the_top_and_the_lookaheads_candidates(slots_agent):
    agent = make_policy(f"dqn:{slots_agent}")
    policy = make_policy(f"lookahead-learned:{slots_agent}", top=1, kinds=True)
    env = GrowthEnv(**DAG)
    obs, info = env.reset(seed=1)
    policy.reset(1)
    done = False
    while not done:
        q = agent.q_values(obs, env)
        valid = np.flatnonzero(info["action_mask"][: env.max_sites])
        top = sorted(valid.tolist(), key=lambda s: (-q[s], s))[:1]
        kinds = lookahead_candidates(info, env).tolist()
        chosen = sorted(set(top) | set(kinds))
        if len(chosen) > 1:
            expected = chosen[int(np.argmin(copy.deepcopy(env).lookahead_losses(chosen)))]
        else:
            expected = chosen[0] if chosen else env.skip_action
        action = policy.act(obs, info, env)
        assert action == expected
        obs, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated


def test_widen_and_kinds_errors_are_one_line(slots_agent):
    for kwargs, match in (
        ({"widen": 4}, "^widen: rolls out more proposals where a budget allows"),
        ({"widen": 2, "budget": "whole-space"}, "^widen: expected"),
        ({"kinds": "yes"}, "^kinds: expected True or False"),
    ):
        with pytest.raises(ValueError, match=match) as err:
            make_policy(f"lookahead-learned:{slots_agent}", **kwargs)
        assert "\n" not in str(err.value)


def test_a_projected_budget_lends_early_decisions_the_spare_of_the_decisions_left(slots_agent):
    agent = make_policy(f"dqn:{slots_agent}")
    top, steps = 3, 60
    projected = make_policy(f"lookahead-learned:{slots_agent}", steps=steps, top=top,
                            budget="whole-space-projected")  # fmt: skip
    env = GrowthEnv(**{**CHOSEN, "max_steps": 8})
    obs, info = env.reset(seed=6)
    projected.reset(6)
    done, bars, spent, lent = False, 0.0, 0.0, 0
    while not done:
        valid = np.flatnonzero(info["action_mask"][: env.max_sites]).tolist()
        if len(valid) > 1:  # the plan, by hand
            q = agent.q_values(obs, env)
            ranked = sorted(valid, key=lambda s: (-q[s], s))[:top]
            searches = {s: env.search_cost([s], fits=False) for s in valid}
            own = env.search_cost(valid) + min(searches.values())
            floor = min(env.search_cost([s]) for s in valid)
            left = env.config.max_steps - env.step_count
            allowance = own + (bars - spent) + (left - 1) * max(own - floor, 0.0)
            k = 1
            for i in range(1, len(ranked)):
                cost = env.lookahead_costs(ranked[: i + 1], steps).sum()
                if cost + max(searches[s] for s in ranked[: i + 1]) <= allowance:
                    k = i + 1
            within_own = env.lookahead_costs(ranked[:2], steps).sum() + max(
                searches[s] for s in ranked[:2]
            ) <= own + (bars - spent)
            lent += k > 1 and not within_own  # rolled out only thanks to the loan
            bars += own
        before = _decision_macs(env)
        action = projected.act(obs, info, env)
        obs, _, terminated, truncated, info = env.step(action)
        if len(valid) > 1:
            spent += _decision_macs(env) - before
            assert projected.rollouts[-1][0] == (k if k > 1 else 0)
            assert projected.credit == pytest.approx(bars - spent, rel=1e-9, abs=1.0)
        done = terminated or truncated
    assert lent  # some decision rolled out on the loan alone


@pytest.mark.parametrize("steps", [None, 400])
def test_the_budgeted_heuristic_lookahead_ranks_its_candidates_by_gain_within_the_bar(steps):
    """The lookahead at a learned proposer's compute (v19's ``lookahead-capped-short``): each
    kind's best by estimated gain, ranked by gain, every one rolled out at the longest length
    that fits whole-space's bar of the decision (else fewer), by hand; never dearer than
    whole-space's decision on the same state."""
    policy = make_policy("lookahead", steps=steps, budget="whole-space", shorten=True)
    whole_space = make_policy("whole-space")
    env = GrowthEnv(**CHOSEN)
    obs, info = env.reset(seed=3)
    policy.reset(3)
    done, seen = False, set()
    while not done:
        valid = np.flatnonzero(info["action_mask"][: env.max_sites]).tolist()
        kinds = np.asarray(env.slot_layout.kinds)
        gains = np.asarray(info["candidate_gains"], dtype=float)
        best = {}  # each kind's valid slot of largest gain, by an explicit loop
        for slot in valid:
            k = kinds[slot]
            if k not in best or gains[slot] > gains[best[k]]:
                best[k] = slot
        ranked = sorted(best.values(), key=lambda s: (-gains[s], s))
        length = env.rollout_steps if steps is None else steps
        expected_k, expected_steps = (len(ranked), length) if len(ranked) > 1 else (0, 0)
        if len(ranked) > 1:
            searches = {slot: env.search_cost([slot], fits=False) for slot in valid}
            bar = env.search_cost(valid) + min(searches.values())
            for k in range(len(ranked), 0, -1):  # the most candidates, then the longest
                if k == 1:
                    expected_k, expected_steps = 0, 0
                    break
                fixed = env.lookahead_costs(ranked[:k], 0)
                per = env.lookahead_costs(ranked[:k], 1) - fixed
                grow = max(searches[s] for s in ranked[:k])
                s_fit = (
                    max(s for s in range(length + 1) if (fixed + s * per).sum() + grow <= bar)
                    if (fixed.sum() + grow <= bar)
                    else None
                )
                if s_fit is not None:
                    expected_k, expected_steps = k, s_fit
                    break
        action, ours = _decision(copy.deepcopy(env), policy, obs, info)
        got = policy.rollouts[-1]
        assert (got[0], got[1] if got[0] else 0) == (expected_k, expected_steps)
        if expected_k > 1:
            chosen = sorted(ranked[:expected_k])
            losses = copy.deepcopy(env).lookahead_losses(chosen, expected_steps)
            assert action == chosen[int(np.argmin(losses))]
        elif ranked:
            assert action == ranked[0]
        seen.add(expected_k)
        if len(valid) > 1:
            _, theirs = _decision(copy.deepcopy(env), whole_space, obs, info)
            assert ours <= theirs
        obs, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
    assert seen - {0}  # some decisions rolled out


def test_the_heuristic_lookaheads_budget_errors_are_one_line():
    with pytest.raises(UserError, match="^budget: expected one of 'whole-space'") as err:
        make_policy("lookahead", budget="half")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="^shorten: shortens rollouts to fit a budget") as err:
        make_policy("lookahead", shorten=True)
    assert "\n" not in str(err.value)
    env = GrowthEnv(**SITES)
    obs, info = env.reset(seed=0)
    policy = make_policy("lookahead", budget="whole-space")
    policy.reset(0)
    with pytest.raises(ValueError, match="^budget: 'whole-space' needs a DAG env") as err:
        policy.act(obs, info, env)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("scope", ["chosen", "all"])
def test_a_rollouts_batch_is_an_env_whose_minibatches_are_that_size(scope):
    """``lookahead_losses(..., batch_size=b)`` is the rollout of the same state in an env
    whose configured minibatch size is ``b`` (the config's path, not the argument's); the
    default is the episode's own; the MACs are what ``lookahead_costs`` plans for ``b``."""
    env = GrowthEnv(**{**CHOSEN, "fit_scope": scope})
    _, info = env.reset(seed=6)
    env.step(int(np.flatnonzero(info["action_mask"][: env.max_sites])[0]))
    valid = np.flatnonzero(env.action_masks()[: env.max_sites])[:3]
    steps, batch = 9, env.batch_size // 2
    same = copy.deepcopy(env).lookahead_losses(valid, steps, env.batch_size)
    np.testing.assert_array_equal(same, copy.deepcopy(env).lookahead_losses(valid, steps))
    twin = copy.deepcopy(env)
    twin.config = dataclasses.replace(twin.config, batch_size=batch)
    expected = twin.lookahead_losses(valid, steps)
    halved = copy.deepcopy(env)
    before = halved.episode.compute
    losses = halved.lookahead_losses(valid, steps, batch)
    np.testing.assert_array_equal(losses, expected)
    assert not np.array_equal(losses, same)
    assert halved.episode.compute - before == env.lookahead_costs(valid, steps, batch).sum()
    # the training term is linear in the minibatch's samples
    full = env.lookahead_costs(valid, steps) - env.lookahead_costs(valid, 0)
    half = env.lookahead_costs(valid, steps, batch) - env.lookahead_costs(valid, 0, batch)
    np.testing.assert_allclose(half, full / 2, rtol=1e-12)


def test_rollout_batch_rolls_out_on_that_minibatch_size_in_both_lookaheads(slots_agent):
    """Both lookaheads with ``rollout_batch=b`` grow the argmin of their candidates'
    rollouts at minibatch size ``b``, computed by hand, and that differs somewhere from the
    choice at the episode's size (else the argument would not be shown to matter)."""
    agent = make_policy(f"dqn:{slots_agent}")
    policies = {
        "heuristic": make_policy("lookahead", rollout_batch=16),
        "learned": make_policy(f"lookahead-learned:{slots_agent}", top=3, rollout_batch=16),
    }
    for name, policy in policies.items():
        differs, compared = 0, 0
        for seed in (0, 1):
            env = GrowthEnv(**CHOSEN)
            obs, info = env.reset(seed=seed)
            policy.reset(seed)
            done = False
            while not done:
                valid = np.flatnonzero(info["action_mask"][: env.max_sites])
                if name == "heuristic":
                    slots = np.sort(lookahead_candidates(info, env))
                else:
                    q = agent.q_values(obs, env)
                    slots = np.sort(sorted(valid.tolist(), key=lambda s: (-q[s], s))[:3])
                expected = int(slots[0]) if slots.size == 1 else env.skip_action
                if slots.size > 1:
                    losses = copy.deepcopy(env).lookahead_losses(slots, None, 16)
                    expected = int(slots[int(np.argmin(losses))])
                    default = copy.deepcopy(env).lookahead_losses(slots)
                    differs += not np.array_equal(losses, default)
                    compared += 1
                action = policy.act(obs, info, env)
                assert action == expected
                obs, _, terminated, truncated, info = env.step(action)
                done = terminated or truncated
        assert compared >= 3 and differs == compared


@pytest.mark.parametrize("bad", [0, -4, 2.5, "64"])
def test_rollout_batch_errors_are_one_line(slots_agent, bad):
    for name in ("lookahead", f"lookahead-learned:{slots_agent}"):
        with pytest.raises(ValueError, match="^rollout_batch: expected") as err:
            make_policy(name, rollout_batch=bad)
        assert "\n" not in str(err.value)
    env = GrowthEnv(**CHOSEN)
    _, info = env.reset(seed=0)
    valid = np.flatnonzero(info["action_mask"][: env.max_sites])
    with pytest.raises(ValueError, match="^batch_size: expected") as err:
        env.lookahead_losses(valid, 3, bad)
    assert "\n" not in str(err.value)
