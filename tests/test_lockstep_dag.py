"""LockstepVecEnv with net="dag" (issue 23, item 5): DAG envs of different shapes trained as
one batched model give what separate GrowthEnvs give for the same seeds and actions."""

from __future__ import annotations

import numpy as np
import pytest

import growenv
from growenv.env.config import EnvConfig
from growenv.env.lockstep import LockstepVecEnv
from growenv.env.lockstep_dag import LockstepDagVecEnv

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = dict(
    net="dag",
    train_steps=6,
    batch_size=32,
    max_steps=3,
    task_kwargs=dict(n_train=128, n_stats=64, n_val=64, n_test=64),
)
NUM = 3


def _actions(masks: np.ndarray, gains: list[np.ndarray], t: int) -> np.ndarray:
    """The valid slot of the best estimated gain (env 2 skips every third step and stops at
    step 4); the envs' tasks differ, so their graphs do."""
    acts = []
    for e, (m, g) in enumerate(zip(masks, gains, strict=True)):
        slots = m.shape[0] - 2
        valid = np.flatnonzero(m[:slots])
        ranked = valid[np.argsort(-g[valid], kind="stable")]
        if len(ranked) == 0 or (e == 2 and t % 3 == 1):
            acts.append(slots)  # skip
        elif e == 2 and t == 4:
            acts.append(slots + 1)  # stop
        else:
            acts.append(int(ranked[0]))
    return np.array(acts)


def _close(a, b, key: str, rtol: float) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), key
        for k in a:
            _close(a[k], b[k], f"{key}.{k}", rtol)
    elif isinstance(a, np.ndarray | float) and not isinstance(a, bool):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-12, err_msg=key)
    else:
        assert a == b, key


@pytest.mark.parametrize(
    ("fit", "scope", "steps"),
    [("tiny", "all", 2), ("nonlinear", "all", 6), ("nonlinear", "chosen", 6)],
)
def test_lockstep_dag_equals_separate_envs(fit, scope, steps):
    """float64, equal to 1e-9. Not bitwise: the batched training sums a node's in-edges in
    one padded product, GrowthEnv one product per edge, so float sums differ in order (1e-17).
    That is not bounded in general: TINY's closed form can offer a new node of
    rounding-noise-sized neurons (blind ``in -> new -> out`` once ``in -> out`` exists);
    their gradients are noise and Adam's first steps (``lr * sign(g)``) turn 1e-17 into 1e-3,
    as any change of summation order (threads, BLAS) would for one GrowthEnv. So "tiny" is
    checked for 2 steps (its third step here differs by 4e-4 in reward), "nonlinear" for 6
    (two episodes each, a stop and auto-resets). ``fit_scope="chosen"``: the lockstep env
    fits the growing envs' chosen expansions in one batch, each GrowthEnv its own; the "fit"
    phase's MACs in the infos must agree too.
    """
    config = EnvConfig.from_kwargs(**SMALL, neuron_fit=fit, dtype="float64", fit_scope=scope)
    vec = LockstepVecEnv(NUM, seed=5, config=config)
    assert isinstance(vec, LockstepDagVecEnv)
    envs = [growenv.GrowthEnv(config=config) for _ in range(NUM)]
    obs = vec.reset()
    ref = [env.reset(seed=5 + e) for e, env in enumerate(envs)]
    np.testing.assert_allclose(obs, np.stack([o for o, _ in ref]), rtol=1e-6)
    for e in range(NUM):
        _close(vec.reset_infos[e], ref[e][1], "reset_info", 1e-9)
    shapes = set()
    fitted = False
    for t in range(steps):  # nonlinear: the episodes end (max_steps 3, a stop), auto-reset
        masks = vec.action_masks()
        np.testing.assert_array_equal(masks, np.stack([env.action_masks() for env in envs]))
        actions = _actions(masks, [env.episode.gains for env in vec.envs], t)
        shapes.add(tuple(tuple(env.net.edges) for env in vec.envs))
        obs, rewards, dones, infos = vec.step(actions)
        shapes.add(tuple(tuple(env.net.edges) for env in vec.envs))
        for e, env in enumerate(envs):
            o, r, term, trunc, info = env.step(actions[e])
            info["TimeLimit.truncated"] = trunc and not term
            assert dones[e] == (term or trunc)
            np.testing.assert_allclose(rewards[e], r, rtol=1e-6, atol=1e-9)
            if dones[e]:
                info["terminal_observation"] = o
                o, _ = env.reset()
            np.testing.assert_allclose(obs[e], o, rtol=1e-6, atol=1e-9)
            infos[e].pop("seconds", None)
            info.pop("seconds", None)
            _close(infos[e], info, f"step {t} env {e}", 1e-9)
            fitted = fitted or info["compute_by_phase"].get("fit", 0.0) > 0
    assert any(len(set(graphs)) > 1 for graphs in shapes)  # graphs of different shapes
    if scope == "chosen":  # fits were charged apart (the infos above agreed on them)
        assert fitted


def test_lockstep_dag_accepts_dag_and_keeps_bookkeeping():
    with pytest.raises(ValueError, match=r"^optimizer: the lockstep env implements 'adam'"):
        LockstepVecEnv(2, net="dag", optimizer="sgd")
    vec = LockstepVecEnv(2, seed=0, **SMALL, neuron_fit="tiny")
    vec.reset()
    loss, acc = vec.evaluate_split("test")
    assert loss.shape == (2,) and acc == [None, None]
    drops = vec.env_method("evaluate_candidates", indices=[0])[0]["loss_drop"]
    assert np.isfinite(drops).any()
    assert vec.net(1).nodes == vec.envs[1].net.nodes


@pytest.mark.parametrize("scope", ["all", "chosen"])
def test_bench_runs_dag_in_lockstep_with_the_single_env_results(tmp_path, scope):
    """``growenv bench`` on net='dag' plans lockstep jobs (the obstacle is gone) and its
    results.csv has the numbers of the single-env path (float64; timings aside)."""
    import csv
    import json

    from growenv.cli import main
    from growenv.harness.bench import plan_jobs

    kw = {**SMALL, "dtype": "float64", "fit_scope": scope, "max_steps": 3}
    jobs = plan_jobs(["teacher_student"], ["greedy"], [0, 1], kw)
    assert [len(j.seeds) for j in jobs] == [2] and jobs[0].lockstep
    tables = {}
    for vec in ("lockstep", "single"):
        out = tmp_path / vec
        argv = ["bench", "--policies", "greedy", "--seeds", "2", "--env-kwargs", json.dumps(kw)]
        assert main([*argv, "--no-progress", "--vec", vec, "--out", str(out)]) == 0
        with (out / "results.csv").open() as f:
            tables[vec] = list(csv.DictReader(f))
    lock, single = tables["lockstep"], tables["single"]
    assert len(lock) == len(single) == 2 * 4
    assert any(int(r["action"]) < growenv.GrowthEnv(**kw).max_sites for r in lock)
    for a, b in zip(lock, single, strict=True):
        for key in ("seed", "step", "action", "action_name", "widths", "params", "flops"):
            assert a[key] == b[key], key
        for key in ("train_loss", "val_loss", "test_loss", "gamma", "loss_drop"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-9, abs=1e-12), key
        # SB3's vector envs return float32 rewards
        assert float(a["reward"]) == pytest.approx(float(b["reward"]), rel=1e-6), "reward"
        assert float(a["compute"]) == float(b["compute"])


def test_maskable_ppo_trains_on_lockstep_dag_envs():
    """MaskablePPO on ``make_vec_env`` with vec='lockstep' and net='dag' (fit_scope='chosen')
    runs a few hundred steps; the vec env is the lockstep DAG env."""
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.logger import Logger

    from growenv.harness.ppo_training import PPOConfig, make_vec_env

    env_kwargs = {**SMALL, "max_nodes": 3, "fit_scope": "chosen", "neurons_per_growth": 2}
    config = PPOConfig(n_envs=4, vec="lockstep", seed=0, env_kwargs=env_kwargs)
    venv = make_vec_env(config)
    assert isinstance(venv.venv, LockstepDagVecEnv)
    model = MaskablePPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0)
    model.set_logger(Logger(None, []))  # SB3's default leaves an SB3-* folder in /tmp
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256
