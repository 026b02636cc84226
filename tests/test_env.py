"""GrowthEnv: checkers, determinism, masks, actions, rewards, tasks, bad kwargs."""

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

import growenv  # noqa: F401  (registers growenv/Grow-v1)
from growenv.data.tasks import TeacherStudentDistribution
from growenv.env.growth_env import GrowthEnv

FAST = dict(train_steps=5, max_steps=4, batch_size=32)
SMALL_TS = dict(n_train=256, n_stats=128, n_val=128, n_test=128)


def fast_env(**kw):
    args = dict(task_kwargs=SMALL_TS, **FAST)
    args.update(kw)
    return GrowthEnv(**args)


def test_make_with_no_arguments_runs_an_episode():
    env = gym.make("growenv/Grow-v1")
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert info["widths"] == [1, 1]
    obs, reward, terminated, truncated, info = env.step(env.unwrapped.skip_action)
    assert np.isfinite(reward) and not terminated
    env.close()


def test_gymnasium_env_checker():
    from gymnasium.utils.env_checker import check_env

    # the checker steps with unmasked random actions: masked ones become "skip"
    check_env(fast_env(invalid_action="skip"), skip_render_check=True)


def test_sb3_env_checker():
    from stable_baselines3.common.env_checker import check_env

    # SB3's checker samples actions without masks: masked ones become "skip"
    check_env(fast_env(invalid_action="skip"), warn=True)


def test_invalid_action_skip_mode():
    env = fast_env(invalid_action="skip")
    _, info0 = env.reset(seed=0)
    _, _, _, _, info = env.step(3)
    assert info["invalid_action"] and info["grown_site"] == -1 and info["params"] == info0["params"]


def trajectory(env, seed, actions):
    obs, info = env.reset(seed=seed)
    out = [obs]
    rewards = []
    for a in actions:
        mask = env.action_masks()
        a = a if mask[a] else env.skip_action
        obs, r, term, trunc, info = env.step(a)
        out.append(obs)
        rewards.append(r)
        if term or trunc:
            break
    return np.stack(out), np.array(rewards), info


def test_same_seed_same_trajectory_and_different_seed_differs():
    env = fast_env()
    actions = [1, 0, 4, 1]
    o1, r1, i1 = trajectory(env, 3, actions)
    o2, r2, i2 = trajectory(fast_env(), 3, actions)
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(r1, r2)
    assert i1["params"] == i2["params"]
    o3, _, _ = trajectory(env, 4, actions)
    assert not np.array_equal(o1, o3)


def test_distribution_task_changes_with_seed_and_reproduces():
    env = fast_env(task=TeacherStudentDistribution(width=(5, 12)), task_kwargs=None)
    env.reset(seed=1)
    t1 = env.task.info.copy()
    env.reset(seed=2)
    t2 = env.task.info.copy()
    env.reset(seed=1)
    assert env.task.info == t1
    assert t1 != t2
    # the same task without training a network
    drawn = fast_env(task=TeacherStudentDistribution(width=(5, 12)), task_kwargs=None)
    task = drawn.episode_task(2)
    assert task.info == t2 and drawn.net is None
    torch.testing.assert_close(task.train.x, fast_env_task(2).train.x)
    with pytest.raises(RuntimeError, match="reset"):
        drawn.step(0)


def fast_env_task(seed):
    env = fast_env(task=TeacherStudentDistribution(width=(5, 12)), task_kwargs=None)
    env.reset(seed=seed)
    return env.task


def test_each_action_type_and_masks():
    env = fast_env()
    obs, info = env.reset(seed=0)
    mask = env.action_masks()
    assert mask.dtype == bool and mask.shape == (env.action_space.n,)
    assert mask[env.skip_action] and mask[env.stop_action]
    assert not mask[2] and not mask[3]  # the net has 2 hidden sites; max_sites is 4
    strict = fast_env(invalid_action="raise")
    strict.reset(seed=0)
    with pytest.raises(ValueError, match="masked"):
        strict.step(3)
    params = info["params"]
    obs, r, term, trunc, info = env.step(1)  # grow site 1
    assert info["grown_site"] == 1 and info["params"] > params and info["widths"][1] > 1
    assert info["gamma"] >= 0
    obs, r, term, trunc, info = env.step(env.skip_action)
    assert info["grown_site"] == -1 and info["gamma"] == 0.0
    assert "seconds" not in info  # wall-clock time only at the episode's end
    obs, r, term, trunc, info = env.step(env.stop_action)
    assert term and not trunc and r == 0.0
    assert set(info["seconds"]) == {"train", "statistics", "search", "evaluate"}
    assert info["compute"] == pytest.approx(sum(info["compute_by_phase"].values()))


def test_truncation_at_step_limit():
    env = fast_env(max_steps=2)
    env.reset(seed=0)
    _, _, term, trunc, _ = env.step(env.skip_action)
    assert not trunc
    _, _, term, trunc, _ = env.step(env.skip_action)
    assert trunc and not term


def test_compute_budget_terminates():
    env = fast_env(max_compute=1.0, max_steps=10)
    env.reset(seed=0)
    _, _, term, trunc, info = env.step(env.skip_action)
    assert term and info["compute"] >= 1.0


def test_param_budget_masks_growth():
    env = fast_env()
    _, info = env.reset(seed=0)
    env_b = fast_env(max_params=info["params"] + 1)
    env_b.reset(seed=0)
    assert not env_b.action_masks()[:2].any()


def test_relative_reward_option():
    env = fast_env(reward="relative")
    _, info0 = env.reset(seed=0)
    _, r, _, _, info1 = env.step(1)
    assert r == pytest.approx((info0["val_loss"] - info1["val_loss"]) / info0["val_loss"])
    with pytest.raises(ValueError, match="reward"):
        fast_env(reward="loss")


def test_episode_return_telescopes_to_log_loss_ratio():
    env = fast_env(max_steps=3)
    _, info0 = env.reset(seed=1)
    total, done = 0.0, False
    while not done:
        _, r, term, trunc, info = env.step(env.skip_action)
        total += r
        done = term or trunc
    assert total == pytest.approx(np.log(info0["val_loss"] / info["val_loss"]), rel=1e-6)


def test_reward_is_log_val_decrease_minus_cost():
    env = fast_env(cost_per_param=0.0)
    _, info0 = env.reset(seed=0)
    _, r, _, _, info1 = env.step(1)
    expected = np.log(info0["val_loss"] / info1["val_loss"])
    assert r == pytest.approx(expected, rel=1e-6)
    if info1["val_loss"] < info0["val_loss"]:
        assert r > 0  # lowering the validation loss at zero cost is rewarded
    cost = 1e-3
    env_c = fast_env(cost_per_param=cost)
    _, c0 = env_c.reset(seed=0)
    _, rc, _, _, c1 = env_c.step(1)
    assert rc == pytest.approx(expected - cost * (c1["params"] - c0["params"]), rel=1e-6)


def test_info_gains_match_report_and_greedy_needs_no_recomputation():
    env = fast_env(neurons_per_growth=2)
    _, info = env.reset(seed=5)
    for j, site in enumerate(env.report.sites):
        k = min(2, site.eigenvalues.numel())
        if env.action_masks()[j]:
            assert info["candidate_gains"][j] == pytest.approx(float(site.gain(k)), rel=1e-5)
    assert np.all(np.isneginf(info["candidate_gains"][2:]))
    for key in (
        "params",
        "flops",
        "train_loss",
        "val_loss",
        "gamma",
        "compute",
        "compute_by_phase",
    ):
        assert key in info


def test_evaluate_candidates_matches_amplitude_search():
    env = fast_env()
    env.reset(seed=0)
    res = env.evaluate_candidates()
    assert res["loss_drop"].shape == (4,) and np.isneginf(res["loss_drop"][2:]).all()
    assert (res["loss_drop"][:2] >= 0).all()


def test_evaluate_candidate_is_one_counted_search_that_does_not_grow():
    from growenv import amplitude_search

    env = fast_env()
    env.reset(seed=0)
    params, compute = env.net.num_parameters(), env.compute
    result = env.evaluate_candidate(1)
    assert env.net.num_parameters() == params  # a preview: nothing applied
    assert env.compute > compute and env.compute_by_phase["search"] == env.compute - compute
    # the search split is the first n_stats training samples (disjoint from the statistics)
    n = len(env.task.stats)
    x, y = env.task.train.x[:n], env.task.train.y[:n]
    again = amplitude_search(env.net, result.candidate, x, y, loss=env.task.loss)
    assert float(again.gamma) == float(result.gamma)
    assert float(again.loss_drop) == float(result.loss_drop)
    assert float(result.loss_drop) == env.evaluate_candidates()["loss_drop"][1]
    with pytest.raises(ValueError, match="site: expected an int in \\[0, 1\\]"):
        env.evaluate_candidate(2)


def test_search_split_stats_searches_on_the_statistics_split():
    from growenv import amplitude_search

    env = fast_env(search_split="stats")
    env.reset(seed=0)
    result = env.evaluate_candidate(1)
    stats = env.task.stats
    again = amplitude_search(env.net, result.candidate, stats.x, stats.y, loss=env.task.loss)
    assert float(again.gamma) == float(result.gamma)
    assert float(again.loss_drop) == float(result.loss_drop)


def test_grow_v0_keeps_the_statistics_split_search_and_v1_searches_on_training_samples():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = gym.make("growenv/Grow-v0")
    assert old.unwrapped.config.search_split == "stats"
    assert gym.make("growenv/Grow-v1").unwrapped.config.search_split == "train"


def test_augmentation_is_none_without_augment():
    env = fast_env()
    env.reset(seed=0)
    assert env.augmentation() is None


@pytest.mark.parametrize("task", ["multi_sin", "digits"])
def test_classification_tasks(task):
    kwargs = dict(n_train=256, n_stats=128, n_val=128, n_test=128) if task == "multi_sin" else {}
    env = fast_env(task=task, task_kwargs=kwargs)
    obs, info = env.reset(seed=0)
    assert 0.0 <= info["val_accuracy"] <= 1.0
    env.step(0)


def test_render_modes():
    env = fast_env(render_mode="ansi")
    env.reset(seed=0)
    text = env.render()
    assert "architecture" in text and "site" in text
    env = fast_env(render_mode="rgb_array")
    env.reset(seed=0)
    env.step(1)
    img = env.render()
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8


def test_bad_kwargs():
    with pytest.raises(ValueError, match="task: expected one of"):
        GrowthEnv(task="imagenet")
    with pytest.raises(ValueError, match="max_sites"):
        GrowthEnv(hidden_layers=5, max_sites=4)
    with pytest.raises(ValueError, match="neurons_per_growth"):
        GrowthEnv(neurons_per_growth=0)
    with pytest.raises(ValueError, match="render_mode"):
        GrowthEnv(render_mode="human")
    with pytest.raises(TypeError):
        GrowthEnv(not_a_kwarg=1)
    with pytest.raises(TypeError, match="n_trains"):
        GrowthEnv(task_kwargs={"n_trains": 5})
    with pytest.raises(ValueError, match="method"):
        GrowthEnv(method="firefly")
    env = fast_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action: expected 0 <= action < 6"):
        env.step(6)


def write_tiny_cifar(root_dir, n_train=30, n_test=20):
    """Five training batches and a test batch in the official python layout."""
    root = root_dir / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", n_train) for i in range(1, 6)] + [("test_batch", n_test)]:
        batch = {
            "batch_label": name,
            "labels": rng.integers(0, 10, n).tolist(),
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        }
        with open(root / name, "wb") as f:
            pickle.dump(batch, f)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    return str(root_dir)


def test_cifar_task_from_tiny_archive(tmp_path):
    env = fast_env(task="cifar10", task_kwargs={"data_dir": write_tiny_cifar(tmp_path)})
    obs, info = env.reset(seed=0)
    assert env.net.in_features == 3072 and env.net.out_features == 10
    env.step(0)


def conv_env(tmp_path, **kw):
    if "task_kwargs" not in kw:
        kw["task_kwargs"] = {"data_dir": write_tiny_cifar(tmp_path)}
    args = dict(
        task="cifar10",
        net="conv",
        start_width=2,
        train_steps=2,
        max_steps=3,
        batch_size=16,
    )
    args.update(kw)
    return GrowthEnv(**args)


def test_conv_net_episode_on_cifar_shaped_task(tmp_path):
    from growenv.nets.conv.net import GrowingConvNet

    env = conv_env(tmp_path)
    obs, info = env.reset(seed=0)
    assert isinstance(env.net, GrowingConvNet) and env.task.input_shape == (3, 32, 32)
    assert info["widths"] == [2, 2] and 0.0 <= info["val_accuracy"] <= 1.0
    site = int(np.argmax(info["candidate_gains"]))
    params = info["params"]
    obs, r, term, trunc, info = env.step(site)
    assert info["grown_site"] == site and info["params"] > params
    assert info["params"] == env.net.num_parameters()
    # the predicted cost of the candidate equals what the growth added
    assert info["params"] - params == env.net.added_parameters(site, 0) + int(
        info["widths"][site] - 2
    ) * (env.net.added_parameters(site, 1))
    obs, r, term, trunc, info = env.step(env.skip_action)
    assert np.isfinite(r)
    with pytest.raises(ValueError, match="net"):
        GrowthEnv(net="transformer")


def test_conv_env_with_gradmax_neurons(tmp_path):
    """GradMax needs the raw correlation, which conv reports skip by default."""
    env = conv_env(tmp_path, method="gradmax")
    env.reset(seed=0)
    assert env.report.sites[0].raw_correlation is not None
    obs, r, term, trunc, info = env.step(0)
    assert info["grown_site"] == 0 and np.isfinite(r)
    with pytest.raises(ValueError, match="image inputs"):
        GrowthEnv(net="conv", task="teacher_student").reset(seed=0)


def test_augmented_training_is_reproducible_and_changes_training(tmp_path):
    path = write_tiny_cifar(tmp_path)

    def run(augment, seed=0):
        env = conv_env(tmp_path, task_kwargs={"data_dir": path}, augment=augment)
        env.reset(seed=seed)
        env.step(env.skip_action)
        return [p.detach().clone() for p in env.net.parameters()]

    a, b, plain = run(True), run(True), run(False)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert any(not torch.equal(x, z) for x, z in zip(a, plain))
    with pytest.raises(ValueError, match="no image inputs"):
        fast_env(augment=True).reset(seed=0)


def test_env_checkers_pass_for_cifar_with_conv_nets(tmp_path):
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    gym_check(conv_env(tmp_path, invalid_action="skip"), skip_render_check=True)
    (tmp_path / "b").mkdir()
    sb3_check(conv_env(tmp_path / "b", invalid_action="skip"), warn=True)


def test_optimizer_state_kept_across_env_growth():
    env = fast_env()
    env.reset(seed=0)
    w = env.net.weights[1]
    before = env.optimizer.state[w]["exp_avg"].clone()
    env.grow(0)
    assert env.net.weights[1] is w
    torch.testing.assert_close(env.optimizer.state[w]["exp_avg"][:, : before.shape[1]], before)


def test_docs_tables_are_the_feature_and_config_tables():
    from pathlib import Path

    from growenv.env import features
    from growenv.env.config import arguments_table

    root = Path(__file__).resolve().parents[1]
    docs = (root / "docs" / "environment.md").read_text()
    docstring = "\n".join(line.strip() for line in GrowthEnv.__doc__.splitlines())
    for kind in ("site", "global"):
        table = features.markdown_table(kind)
        assert table in docs and table in docstring, kind
    for kind in ("expansion", "node"):
        assert features.markdown_table(kind) in docs, kind
    assert arguments_table() in docs
    assert '`reward` | `"log_ratio"`' in docs  # the code's default, not "relative"
    # one name per observation column, in the order site_features/global_features fill them
    assert (
        len(features.SITE_TABLE)
        == features.site_features(
            np.ones(1),
            np.ones(1),
            np.ones((1, 3)),
            np.ones(1),
            np.ones(1),
            np.ones(1),
            np.ones(1),
            np.ones(1),
            1.0,
            1,
            1,
            1,
            1,
        ).shape[1]
    )
    assert len(features.GLOBAL_TABLE) == len(features.global_features(1, 1, None, 1, 1, 0, 1, 0, 0))


def test_observations_stay_in_the_feature_table_ranges():
    from growenv.env import features

    env = fast_env(max_params=200)
    obs, _ = env.reset(seed=1)
    observations = [obs]
    for action in (0, 1, 4, 0):
        action = action if env.action_masks()[action] else env.skip_action
        obs, *_ = env.step(action)
        observations.append(obs)
    n_site = len(features.SITE_TABLE)
    bounds = {"{0, 1}": (0, 1), "[0, inf)": (0, np.inf), "[0, 1]": (0, 1), "[0, 4]": (0, 4)}
    for obs in observations:
        sites = obs[: env.max_sites * n_site].reshape(env.max_sites, n_site)
        glob = obs[env.max_sites * n_site :]
        for values, table in ((sites, features.SITE_TABLE), (glob[None], features.GLOBAL_TABLE)):
            for j, feature in enumerate(table):
                lo, hi = bounds.get(feature.range, (-np.inf, np.inf))
                assert ((values[:, j] >= lo) & (values[:, j] <= hi)).all(), feature.name


def test_max_sites_mismatch_is_one_line_before_the_episode():
    """An agent trained with max_sites=6 on an env with max_sites=4: refused before the reset's
    training, naming max_sites (it surfaced only at the first step)."""
    from types import SimpleNamespace

    from growenv.env.features import check_observation_shape, observation_size
    from growenv.harness.episodes import run_episode
    from growenv.policies.ppo import PPOPolicy

    space = gym.spaces.Box(-1.0, 1.0, (observation_size(6),), np.float32)
    agent = PPOPolicy(SimpleNamespace(observation_space=space), name="ppo:run")
    env = fast_env()
    message = (
        r"^max_sites: expected 6 \(policy 'ppo:run' was trained on observations of shape "
        r"\(88,\), from envs with max_sites=6\), got 4$"
    )
    with pytest.raises(ValueError, match=message):
        run_episode({}, agent, seed=0, env=env)
    assert env.net is None  # nothing ran: no reset, no training
    check_observation_shape((62,), 4)
    with pytest.raises(ValueError, match=r"^observation: the agent expects .* \(61,\)"):
        check_observation_shape((61,), 4)
