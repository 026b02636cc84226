"""fit_scope="chosen" (issue 23): the DAG env decides from TINY's closed form and per-node
bottlenecks and fits the neurons of only the expansions it searches or grows; the decisions
and grown nets equal fit_scope="all" (which fits every expansion in every statistics phase)
for the same actions, and the fits are charged apart, by the cost model of those expansions
only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import growenv
from growenv.env.config import EnvConfig
from growenv.nets.dag.neuron_fit import DEFAULT_ITERATIONS, fit_macs
from growenv.policies.dag import WholeSpacePolicy

pytestmark = pytest.mark.usefixtures("one_torch_thread")

K = 3
SMALL = dict(
    net="dag",
    train_steps=8,
    batch_size=32,
    max_steps=5,
    neurons_per_growth=K,
    dtype="float64",
    task_kwargs=dict(n_train=128, n_stats=96, n_val=64, n_test=64),
)


def _env(scope: str, **kw) -> growenv.GrowthEnv:
    return growenv.GrowthEnv(config=EnvConfig.from_kwargs(**SMALL, fit_scope=scope, **kw))


def _expected_fit_macs(env: growenv.GrowthEnv, slot: int) -> int:
    """The cost model of one fit, from the expansion's widths (independent of the fit)."""
    e = env.dag.expansion(slot)
    if e.kind == "edge":
        return 0
    d = sum(w for _, w in e.inputs) + 1  # the new neurons' inputs and the constant
    o = sum(w for _, w in e.outputs)
    return fit_macs(len(env.task.stats), d, o, K, DEFAULT_ITERATIONS)


def _same_net(a: growenv.GrowthEnv, b: growenv.GrowthEnv) -> None:
    assert a.net.nodes == b.net.nodes and a.net.edges == b.net.edges
    for p, q in zip(a.net.parameters(), b.net.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12)


def test_config_validates_fit_scope_in_one_line():
    assert EnvConfig().fit_scope == "all"
    assert EnvConfig(net="dag", fit_scope="chosen").fit_scope == "chosen"
    for kwargs, pattern in (
        (dict(net="dag", fit_scope="some"), r"^fit_scope: expected one of"),
        (dict(fit_scope="chosen"), r"^fit_scope: expected 'all' unless net='dag'"),
        (dict(net="dag", neuron_fit="tiny", fit_scope="chosen"), r"^fit_scope: expected 'all'"),
    ):
        with pytest.raises(ValueError, match=pattern) as err:
            EnvConfig(**kwargs)
        assert "\n" not in str(err.value)
    config = EnvConfig(net="dag", fit_scope="chosen")
    assert EnvConfig.from_json(config.to_json()) == config


def test_same_actions_give_the_same_nets_and_chosen_pays_only_for_grown_fits():
    """A policy that grows one slot a step (the fitted report's best new node or widening):
    both scopes grow the same nets (float64, equal to 1e-12), the same losses; "chosen"
    charges to "fit" exactly the cost model of the grown expansions, "all" charges every
    expansion's fit to "statistics", and the mask of "chosen" offers every slot "all" does."""
    full, lazy = _env("all"), _env("chosen")
    obs_a, info_a = full.reset(seed=4)
    obs_c, info_c = lazy.reset(seed=4)
    assert "fit" not in info_a["compute_by_phase"]  # "all" keeps its phases
    fits_in_statistics = sum(e.fit_macs for e in full.report.expansions)
    expected_fit, grown = 0, 0
    for _ in range(SMALL["max_steps"]):
        mask_a, mask_c = full.action_masks(), lazy.action_masks()
        assert not (mask_a & ~mask_c).any()  # chosen's mask is a superset
        slots = [
            s
            for s in np.flatnonzero(mask_a[: full.max_sites])
            if full.dag.expansion(s).kind != "edge"
        ]
        if not slots:
            action = full.skip_action
        else:
            action = int(max(slots, key=lambda s: full.episode.gains[s]))
            expected_fit += _expected_fit_macs(lazy, action)
            grown += 1
            assert lazy.dag.expansion(action).fitted is None  # not fitted before it is chosen
        _, r_a, *_, info_a = full.step(action)
        _, r_c, *_, info_c = lazy.step(action)
        fits_in_statistics += sum(e.fit_macs for e in full.report.expansions)
        _same_net(full, lazy)
        assert info_a["val_loss"] == pytest.approx(info_c["val_loss"], rel=1e-12, abs=0)
        assert r_a == pytest.approx(r_c, rel=1e-9, abs=1e-12)
        assert info_a["gamma"] == info_c["gamma"]
        assert lazy.compute_by_phase["fit"] == expected_fit
    assert grown >= 2 and expected_fit > 0
    a, c = full.compute_by_phase, lazy.compute_by_phase
    assert a["statistics"] - c["statistics"] == fits_in_statistics  # "all" fits everything
    for phase in ("train", "search", "evaluate"):
        assert a[phase] == c[phase]


def test_whole_space_greedy_takes_the_same_actions_in_both_scopes():
    """Whole-space greedy searches every valid slot; "chosen" fits them on demand and gets
    the same real loss drops, so the same decisions (and fits no slot twice)."""
    runs = {}
    for scope in ("all", "chosen"):
        env, policy = _env(scope), WholeSpacePolicy()
        obs, info = env.reset(seed=1)
        actions, drops = [], []
        for _ in range(SMALL["max_steps"]):
            action = policy.act(obs, info, env)
            drops.append(env.evaluate_candidates()["loss_drop"])
            actions.append(int(action))
            obs, _, term, trunc, info = env.step(action)
            if term or trunc:
                break
        runs[scope] = actions, drops, env
    (act_a, drop_a, env_a), (act_c, drop_c, env_c) = runs["all"], runs["chosen"]
    assert act_a == act_c
    assert any(a < env_a.max_sites for a in act_a)
    for da, dc in zip(drop_a, drop_c, strict=True):
        finite = np.isfinite(da)
        np.testing.assert_array_equal(np.isfinite(dc)[finite], True)
        np.testing.assert_allclose(dc[finite], da[finite], rtol=1e-9, atol=1e-15)
    _same_net(env_a, env_c)


def test_a_slot_is_fitted_once_per_report():
    env = _env("chosen")
    env.reset(seed=2)
    mask = env.action_masks()[: env.max_sites]
    slot = next(s for s in np.flatnonzero(mask) if env.dag.expansion(s).kind != "edge")
    first = env.evaluate_candidate(slot)
    charged = env.compute_by_phase["fit"]
    assert charged == _expected_fit_macs(env, slot) > 0
    again = env.evaluate_candidate(slot)
    assert env.compute_by_phase["fit"] == charged  # cached for this report
    assert float(again.loss_drop) == float(first.loss_drop)
    edge = next(s for s in np.flatnonzero(mask) if env.dag.expansion(s).kind == "edge")
    env.evaluate_candidate(edge)  # edges have no neurons to fit
    assert env.compute_by_phase["fit"] == charged
    assert env.unfitted([slot, edge]) == []


def test_env_checkers_pass_with_fit_scope_chosen():
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = growenv.GrowthEnv(config=EnvConfig.from_kwargs(**SMALL, fit_scope="chosen"))
    check_env(env, skip_render_check=True)
    sb3_check_env(growenv.GrowthEnv(config=EnvConfig.from_kwargs(**SMALL, fit_scope="chosen")))
