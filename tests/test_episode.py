"""Episode: the bookkeeping shared by GrowthEnv and LockstepVecEnv, against hand computations."""

import numpy as np
import pytest

from growenv.env.config import EnvConfig
from growenv.env.episode import Episode, Measurement
from growenv.env.growth_env import GrowthEnv

SMALL_TS = dict(n_train=256, n_stats=128, n_val=128, n_test=128)
FAST = dict(task_kwargs=SMALL_TS, train_steps=5, max_steps=4, batch_size=32)


class Sizes:
    """A two-site MLP 3 -> widths -> 2 as an Architecture, with its counts by hand."""

    def __init__(self, widths):
        self.hidden_widths = list(widths)
        self.sizes = [3, *widths, 2]

    def num_parameters(self):
        s = self.sizes
        return sum((a + 1) * b for a, b in zip(s[:-1], s[1:]))

    def flops(self):
        s = self.sizes
        return sum(a * b for a, b in zip(s[:-1], s[1:]))

    def added_parameters(self, site, k):
        return k * (self.sizes[site] + 1 + self.sizes[site + 2])

    def added_flops(self, site, k):
        return k * (self.sizes[site] + self.sizes[site + 2])


def measurement(val_loss, eigenvalues, num_significant, ranks):
    lam = np.array(eigenvalues, dtype=float)
    return Measurement(
        train_loss=1.5,
        stats_loss=2.0,
        val_loss=val_loss,
        val_accuracy=None,
        update_gain=np.array([0.1, 0.2]),
        bottleneck=np.array([1.0, 3.0]),
        num_significant=np.array(num_significant, dtype=float),
        eigenvalues=lam,
        ranks=np.array(ranks, dtype=float),
        slope_at_zero=1.5,
    )


def started(**config):
    cfg = EnvConfig(max_sites=3, neurons_per_growth=2, max_steps=3, **config)
    episode = Episode(cfg, task_source=None, prepare_task=None)
    # what start() resets, without drawing a task
    episode.step_count, episode.compute, episode.last_improvement = 0, 0.0, 0.0
    episode.compute_by_phase = dict.fromkeys(("train", "statistics", "search", "evaluate"), 0.0)
    episode.seconds = dict(episode.compute_by_phase)
    episode.history = []
    episode.record_growth(-1, 0.0, 0.0)
    return episode


def test_gains_costs_masks_and_reward_by_hand():
    ep = started(cost_per_param=0.01, max_params=60)
    lam = [[2.0, 1.0, 0.5], [1e-6, 0.0, 0.0]]
    ep.absorb(measurement(4.0, lam, [3, 1], [3, 1]), Sizes([2, 1]))
    # K = min(neurons_per_growth, rank) = 2 and 1; gain = d + 1.5 * sum of the first K lambda^2
    np.testing.assert_array_equal(ep.neurons, [2, 1])
    np.testing.assert_allclose(ep.gains, [0.1 + 1.5 * 5.0, 0.2 + 1.5 * 1e-12])
    np.testing.assert_array_equal(ep.added_params, [2 * (3 + 1 + 1), 1 * (2 + 1 + 2)])
    # params of 3 -> 2 -> 1 -> 2 = 8 + 3 + 4 = 15; site 1's lambda_1^2 = 1e-12 < 1e-7 * 2
    mask = ep.action_masks()
    assert mask.tolist() == [True, False, False, True, True]
    before = ep.begin_step()
    ep.absorb(measurement(1.0, lam, [3, 1], [3, 1]), Sizes([4, 1]))
    obs, reward, terminated, truncated, info = ep.end_step(before, invalid=False)
    added = Sizes([4, 1]).num_parameters() - Sizes([2, 1]).num_parameters()
    assert reward == pytest.approx(np.log(4.0) - 0.01 * added)
    assert not terminated and not truncated and info["step"] == 1 and info["params"] == 25
    # budget 60 - 25 = 35 still fits site 0 (2 * 5 = 10 params)
    assert info["action_mask"][0] and np.isneginf(info["candidate_gains"][1:]).all()
    assert obs.shape == (3 * 13 + 10,)
    np.testing.assert_allclose(obs[3 * 13 + 6], (60 - 25) / 60, rtol=1e-6)  # budget left


def test_relative_reward_stop_and_truncation():
    ep = started(reward="relative")
    lam = [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    ep.absorb(measurement(4.0, lam, [1, 1], [1, 1]), Sizes([1, 1]))
    for step, val in enumerate([3.0, 2.0, 1.0], start=1):
        before = ep.begin_step()
        prev = before[2]
        ep.absorb(measurement(val, lam, [1, 1], [1, 1]), Sizes([1, 1]))
        _, reward, terminated, truncated, _ = ep.end_step(before, invalid=False)
        assert reward == pytest.approx((prev - val) / prev)
        assert truncated == (step == 3) and not terminated
    obs, reward, terminated, truncated, info = ep.stop()
    assert reward == 0.0 and terminated and "seconds" in info


def test_masked_action_raises_or_becomes_skip():
    ep = started(invalid_action="raise")
    lam = [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    ep.absorb(measurement(4.0, lam, [1, 0], [1, 1]), Sizes([1, 1]))
    with pytest.raises(ValueError, match=r"action: 1 \(grow site 1\) is masked"):
        ep.validate_action(1)
    with pytest.raises(ValueError, match="action: expected 0 <= action < 5, got 5"):
        ep.validate_action(5)
    skipping = started()  # the default: a masked action becomes skip
    skipping.absorb(measurement(4.0, lam, [1, 0], [1, 1]), Sizes([1, 1]))
    assert skipping.validate_action(1) == (skipping.skip_action, True)
    assert skipping.validate_action(0) == (0, False)


def run(env, seed, actions):
    obs, info = env.reset(seed=seed)
    out = [(obs, 0.0, info["compute"], info["params"])]
    for a in actions:
        a = a if env.action_masks()[a] else env.skip_action
        obs, r, term, trunc, info = env.step(a)
        out.append((obs, r, info["compute"], info["params"]))
        if term or trunc:
            break
    return out


def test_kwargs_and_config_give_identical_episodes():
    kw = dict(FAST, task="teacher_student_distribution", neurons_per_growth="auto")
    cfg = EnvConfig(**kw)
    by_kwargs = run(GrowthEnv(**kw), 5, [0, 1, 4, 0])
    by_config = run(GrowthEnv(config=cfg), 5, [0, 1, 4, 0])
    by_json = run(GrowthEnv(config=EnvConfig.from_json(cfg.to_json())), 5, [0, 1, 4, 0])
    for a, b, c in zip(by_kwargs, by_config, by_json, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[0], c[0])
        assert a[1:] == b[1:] == c[1:]
    with pytest.raises(TypeError, match="either config or keyword"):
        GrowthEnv(config=cfg, lr=0.1)
