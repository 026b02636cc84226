"""LockstepVecEnv: equivalence with separate GrowthEnvs, masks, auto-reset, SB3 contract."""

import numpy as np
import pytest
import torch

from growenv.env.growth_env import GrowthEnv
from growenv.env.lockstep import LockstepVecEnv

KW = dict(
    task="teacher_student_distribution",
    task_kwargs=dict(n_train=256, n_stats=128, n_val=128, n_test=64),
    train_steps=5,
    max_steps=5,
    batch_size=32,
)
# widths diverge (different sites per env), env 1 stops at step 2 and restarts, envs 0 and 2
# reach the step limit at step 4 and restart
PLAN = [[0, 1, 4], [1, 1, 0], [0, 5, 1], [4, 0, 0], [1, 1, 1], [0, 0, 1], [1, 0, 0]]


def run_both(dtype, start_width=1, num_envs=3):
    kw = dict(KW, dtype=dtype, start_width=start_width)
    vec = LockstepVecEnv(num_envs, seed=10, **kw)
    envs = [GrowthEnv(**kw) for _ in range(num_envs)]
    obs_v = vec.reset()
    obs_s = np.stack([env.reset(seed=10 + i)[0] for i, env in enumerate(envs)])
    records = [(obs_v, obs_s, None, None)]
    resets = 0
    for acts in PLAN:
        masks = vec.action_masks()
        np.testing.assert_array_equal(masks, np.stack([e.action_masks() for e in envs]))
        acts = [a if masks[i][a] else envs[i].skip_action for i, a in enumerate(acts)]
        o_v, r_v, d_v, infos = vec.step(np.array(acts))
        outs = []
        for i, env in enumerate(envs):
            o, r, term, trunc, info = env.step(acts[i])
            assert bool(d_v[i]) == (term or trunc)
            if term or trunc:
                np.testing.assert_allclose(
                    infos[i]["terminal_observation"], o, rtol=1e-3, atol=1e-4
                )
                o, _ = env.reset()
                resets += 1
            else:
                assert infos[i]["params"] == info["params"]
                assert infos[i]["widths"] == info["widths"]
            outs.append((o, r))
        records.append((o_v, np.stack([x[0] for x in outs]), r_v, np.array([x[1] for x in outs])))
    return vec, envs, records, resets


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-6), ("float32", 1e-3)])
def test_lockstep_equals_separate_envs(dtype, rtol):
    # float64 checks the logic tightly; in float32 the rounding of batched vs single
    # matmuls is amplified by ill-conditioned S (N = P - C dW^T is a difference of large terms)
    vec, envs, records, resets = run_both(dtype)
    assert resets >= 3  # env 1 stopped, envs 0 and 2 truncated
    assert len({tuple(w) for w in vec.stack.widths.tolist()}) > 1  # widths diverged
    for obs_v, obs_s, r_v, r_s in records:
        np.testing.assert_allclose(obs_v, obs_s, rtol=rtol, atol=rtol)
        if r_v is not None:
            np.testing.assert_allclose(r_v, r_s, rtol=rtol, atol=rtol * 1e-2)
    for i, env in enumerate(envs):
        net = vec.net(i)
        assert net.layer_sizes == env.net.layer_sizes
        for a, b in zip(net.parameters(), env.net.parameters()):
            torch.testing.assert_close(
                a.detach(), b.detach(), rtol=rtol, atol=rtol * float(b.detach().abs().max())
            )


def test_padded_units_stay_inert():
    vec, _, _, _ = run_both("float32", num_envs=3)
    st = vec.stack
    for site in range(st.widths.shape[1]):
        for e in range(vec.num_envs):
            w = int(st.widths[e, site])
            for state in (st.weights, st.exp_avg, st.exp_avg_sq):
                assert torch.all(state[site][e, w:] == 0)  # rows of padded units
                assert torch.all(state[site + 1][e, :, w:] == 0)  # their outgoing columns
            n = st.num_layers
            for state in (st.biases, st.exp_avg[n:], st.exp_avg_sq[n:]):
                assert torch.all(state[site][e, w:] == 0)


def test_capacity_grows_geometrically():
    kw = dict(KW, max_steps=20, neurons_per_growth=6, start_width=3)
    vec = LockstepVecEnv(2, seed=0, **kw)
    vec.reset()
    caps = [vec.stack.caps[1]]
    for _ in range(4):
        masks = vec.action_masks()
        vec.step(np.array([0 if m[0] else 4 for m in masks]))
        caps.append(vec.stack.caps[1])
    assert caps[0] == 8 and max(caps) >= 16
    assert all(c in (8, 16, 32, 64) for c in caps)
    assert int(vec.stack.widths[:, 0].max()) <= vec.stack.caps[1]


def test_masks_and_bad_input():
    with pytest.raises(ValueError, match="num_envs"):
        LockstepVecEnv(0, **KW)
    with pytest.raises(TypeError, match="not_a_kwarg"):
        LockstepVecEnv(2, not_a_kwarg=1)
    with pytest.raises(ValueError, match="optimizer"):
        LockstepVecEnv(2, optimizer="sgd")
    vec = LockstepVecEnv(2, seed=0, **KW)
    vec.reset()
    masks = vec.action_masks()
    assert masks.shape == (2, 6) and masks.dtype == bool
    assert masks[:, 4].all() and masks[:, 5].all() and not masks[:, 2:4].any()
    assert [m.tolist() for m in vec.env_method("action_masks")] == masks.tolist()
    with pytest.raises(ValueError, match=r"actions: expected shape \(2,\)"):
        vec.step(np.array([4, 4, 4]))
    strict = LockstepVecEnv(2, seed=0, invalid_action="raise", **KW)
    strict.reset()
    with pytest.raises(ValueError, match=r"actions\[1\]: action: 3 \(grow site 3\) is masked"):
        strict.step(np.array([4, 3]))
    _, _, dones, infos = vec.step(np.array([4, 3]))  # the default: a masked action is skip
    assert [info["invalid_action"] for info in infos] == [False, True]


def test_device_and_config_are_accepted_like_growth_env():
    # issue 19: LockstepVecEnv(n, seed=..., **env_kwargs) with "device" among the kwargs
    # (growenv bench --env-kwargs '{"device": "cpu"}') used to fail with "multiple values"
    kw = dict(KW, device="cpu", max_steps=2)
    by_kwargs = LockstepVecEnv(2, seed=3, **kw)
    by_config = LockstepVecEnv(2, seed=3, config=GrowthEnv(**kw).config)
    assert by_kwargs.device == torch.device("cpu") and by_kwargs.config == by_config.config
    np.testing.assert_array_equal(by_kwargs.reset(), by_config.reset())
    actions = np.array([0, 4])
    o1, r1, _, i1 = by_kwargs.step(actions)
    o2, r2, _, i2 = by_config.step(actions)
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(r1, r2)
    assert [i["compute"] for i in i1] == [i["compute"] for i in i2]
    with pytest.raises(ValueError, match="net: the lockstep env stacks families"):
        LockstepVecEnv(2, net="conv")


def test_lockstep_reads_envs_through_public_members_only():
    import inspect
    import re

    from growenv.env import lockstep, lockstep_base, lockstep_dag

    # a private member of another object (``env._x``; ``self._x`` and dunders are fine)
    private = re.compile(r"(?<!\bself)\._[a-z]")
    for module in (lockstep, lockstep_base, lockstep_dag):
        lines = inspect.getsource(module).splitlines()
        assert [line.strip() for line in lines if private.search(line)] == [], module.__name__


def test_maskable_ppo_learns_on_lockstep():
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.vec_env import VecMonitor

    vec = VecMonitor(LockstepVecEnv(4, seed=0, **dict(KW, train_steps=2)))
    model = MaskablePPO("MlpPolicy", vec, n_steps=32, batch_size=64, n_epochs=1, seed=0)
    model.set_logger(Logger(None, []))  # SB3's default leaves an SB3-* folder in /tmp
    model.learn(256)
    assert model.num_timesteps >= 256
    assert len(model.ep_info_buffer) > 0  # episodes ended and were auto-reset


@pytest.mark.gpu
def test_cuda_lockstep_matches_cpu():
    cpu = LockstepVecEnv(2, seed=0, **KW)
    gpu = LockstepVecEnv(2, seed=0, device="cuda", **KW)
    np.testing.assert_allclose(cpu.reset(), gpu.reset(), rtol=1e-3, atol=1e-4)
    a, b = cpu.step(np.array([0, 1])), gpu.step(np.array([0, 1]))
    np.testing.assert_allclose(a[0], b[0], rtol=1e-3, atol=1e-4)
