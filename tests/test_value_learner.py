"""Value-based learners (issue 23): shared slot scorer, n-step double DQN, contextual bandit,
``dqn:RUN`` policies. Numbers are checked against explicit loops and closed forms."""

from __future__ import annotations

import random

import gymnasium as gym
import numpy as np
import pytest
import torch

from growenv.env.config import EnvConfig
from growenv.env.features import EXPANSION_TABLE, GLOBAL_TABLE, NODE_TABLE, SITE_TABLE
from growenv.errors import UserError
from growenv.harness.episodes import run_episode
from growenv.learners.scorer import (
    ObsLayout,
    SlotScorer,
    best_per_kind_mask,
    infer_layout,
    layout_of,
    load_scorer,
    parse_observation,
    slot_nodes,
)
from growenv.learners.value import (
    NStepAccumulator,
    ValueConfig,
    ValueLearner,
    double_dqn_target,
    n_step_return,
    selection_tasks,
    train_value_agent,
)
from growenv.learners.wrappers import TerminalReward
from growenv.policies import make_policy
from growenv.policies.registry import policy_entry

TASK_KWARGS = {"n_train": 128, "n_stats": 64, "n_val": 64, "n_test": 64}
DAG = dict(
    net="dag",
    task="teacher_student_distribution",
    train_steps=2,
    batch_size=32,
    max_steps=3,
    max_nodes=2,
    task_kwargs=TASK_KWARGS,
)
MLP = dict(
    task="teacher_student_distribution",
    train_steps=2,
    batch_size=32,
    max_steps=3,
    max_params=400,
    task_kwargs=TASK_KWARGS,
)


def tiny(env_kwargs, **kw) -> ValueConfig:
    base = dict(
        env_kwargs=env_kwargs,
        total_timesteps=10,
        n_envs=2,
        learning_starts=4,
        batch_size=8,
        train_freq=1,
        target_update=3,
        eval_every=0,
        log_every=4,
        hidden=(16,),
    )
    return ValueConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def dag_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dqn_dag")
    train_value_agent(tiny(DAG), out)
    return out


# --------------------------------------------------------------------------- pure math


def test_double_dqn_target_matches_explicit_loop():
    rng = np.random.default_rng(0)
    b, a = 7, 5
    mask = rng.random((b, a)) < 0.6
    mask[np.arange(b), rng.integers(0, a, b)] = True
    q_on = np.where(mask, rng.normal(size=(b, a)), -np.inf)
    q_tg = np.where(mask, rng.normal(size=(b, a)), -np.inf)
    ret, disc = rng.normal(size=b), np.array([0.9, 0.0, 1.0, 0.81, 0.0, 0.5, 1.0])
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in dict(ret=ret, disc=disc).items()}
    for double in (True, False):
        got = double_dqn_target(
            t["ret"], t["disc"], torch.tensor(q_on), torch.tensor(q_tg), double
        ).numpy()
        for i in range(b):
            valid = [j for j in range(a) if mask[i, j]]
            if double:
                best = max(valid, key=lambda j: q_on[i, j])
                boot = q_tg[i, best]
            else:
                boot = max(q_tg[i, j] for j in valid)
            want = ret[i] + (disc[i] * boot if disc[i] > 0 else 0.0)
            assert got[i] == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("n", [1, 3, 10])
def test_n_step_transitions_match_explicit_sums(n):
    gamma, rewards = 0.9, [0.5, -1.0, 2.0, 0.25, 3.0, -0.5, 1.5]
    steps = len(rewards)
    acc = NStepAccumulator(1, n, gamma)
    got = []
    for t, r in enumerate(rewards):
        nxt = np.array([t + 1.0])
        got += acc.push(0, np.array([float(t)]), t, r, nxt, np.ones(3, bool), t == steps - 1)
    assert [int(o[0]) for o, *_ in got] == list(range(steps))
    for t, (_, action, ret, next_obs, _, disc) in enumerate(got):
        m = min(n, steps - t)
        want = sum(gamma**k * rewards[t + k] for k in range(m))
        assert ret == pytest.approx(want, abs=1e-12)
        assert action == t and next_obs[0] == t + m
        assert disc == (gamma**n if t + n < steps else 0.0)
    assert n_step_return([1.0, 2.0, 4.0], 0.5) == 1.0 + 1.0 + 1.0


# --------------------------------------------------------------------------- scorer


def test_parse_and_layouts_agree_with_the_env_tables():
    for m in (1, 2, 8, 12):
        layout = layout_of(EnvConfig(net="dag", max_nodes=m))
        assert layout == infer_layout(layout.size, "dag")
        rows = len(EXPANSION_TABLE) * layout.num_slots
        assert layout.size == rows + 7 * (m + 2) + len(GLOBAL_TABLE)
    layout = layout_of({"max_sites": 5})
    assert layout == ObsLayout("sites", 5) == infer_layout(5 * len(SITE_TABLE) + 10, "sites")
    obs = torch.arange(2 * layout.size, dtype=torch.float64).reshape(2, -1)
    rows, nodes, glob = parse_observation(obs, layout)
    assert nodes is None and rows[1, 2, 3] == obs[1, 2 * len(SITE_TABLE) + 3]
    assert glob[0, 0] == obs[0, 5 * len(SITE_TABLE)]
    with pytest.raises(ValueError, match="^observation: expected"):
        infer_layout(layout.size + 1, "sites")


def test_dag_slot_inputs_gather_source_and_target_node_rows():
    layout = layout_of(EnvConfig(net="dag", max_nodes=2))
    obs = torch.randn(3, layout.size, dtype=torch.float64)
    scorer = SlotScorer("dag", (8,)).double()
    inputs, _, glob = scorer.slot_inputs(obs, layout)
    _, nodes, _ = parse_observation(obs, layout)
    src, tgt = slot_nodes(2)
    r, g, k = len(EXPANSION_TABLE), len(GLOBAL_TABLE), len(NODE_TABLE)
    for b in range(3):
        for s in range(layout.num_slots):
            assert torch.equal(inputs[b, s, r : r + g], glob[b])
            assert torch.equal(inputs[b, s, r + g : r + g + k], nodes[b, src[s]])
            want = torch.zeros(k, dtype=torch.float64) if tgt[s] < 0 else nodes[b, tgt[s]]
            assert torch.equal(inputs[b, s, r + g + k :], want)


def test_permuting_slots_permutes_q_and_keeps_skip_stop():
    torch.manual_seed(0)
    scorer = SlotScorer("dag", (16, 16)).double()
    inputs = torch.randn(4, 9, scorer.input_size, dtype=torch.float64)
    present = torch.rand(4, 9) < 0.7
    glob = torch.randn(4, len(GLOBAL_TABLE), dtype=torch.float64)
    perm = torch.randperm(9)
    q = scorer.score(inputs, present, glob)
    qp = scorer.score(inputs[:, perm], present[:, perm], glob)
    assert torch.allclose(qp[:, :9], q[:, :9][:, perm], atol=1e-12)
    assert torch.allclose(qp[:, 9:], q[:, 9:], atol=1e-12)
    # the same weights score any number of slots
    for m in (2, 4):
        layout = layout_of(EnvConfig(net="dag", max_nodes=m))
        out = scorer(torch.randn(2, layout.size, dtype=torch.float64), layout)
        assert out.shape == (2, layout.num_slots + 2)


class _FakeVec:
    num_envs = 1


def test_masked_actions_are_never_chosen():
    layout = ObsLayout("sites", 6)
    learner = ValueLearner(tiny(MLP), layout, _FakeVec(), lambda: None)
    rng = np.random.default_rng(1)
    for epsilon in (0.0, 0.5, 1.0):
        for _ in range(50):
            obs = rng.normal(size=(8, layout.size)).astype(np.float32)
            mask = rng.random((8, 8)) < 0.3
            mask[np.arange(8), rng.integers(0, 8, 8)] = True
            actions = learner.select(obs, mask, epsilon)
            assert mask[np.arange(8), actions].all()
            q = learner.q_values(obs, mask)
            assert np.isneginf(q[~mask]).all() and np.isfinite(q[mask]).all()


# --------------------------------------------------------------------------- bandit


class _ContextBandit(gym.Env):
    """Four site rows with a random feature x in [0, 1]; choosing site a pays
    ``-(x_a - 0.3)^2``: the best arm is the one closest to 0.3. One step per episode;
    skip and stop are masked."""

    def __init__(self, steps: int = 1) -> None:
        self.layout = ObsLayout("sites", 4)
        self.observation_space = gym.spaces.Box(-10, 10, (self.layout.size,), np.float32)
        self.action_space = gym.spaces.Discrete(6)
        self.steps, self.t = steps, 0

    def _obs(self):
        self.x = self.np_random.random(4)
        obs = np.zeros(self.layout.size, np.float32)
        rows = obs[: 4 * len(SITE_TABLE)].reshape(4, -1)
        rows[:, 0], rows[:, 2] = 1.0, self.x
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        reward = -((self.x[action] - 0.3) ** 2) if action < 4 else -1.0
        self.t += 1
        return self._obs(), float(reward), self.t >= self.steps, False, {}

    def action_masks(self):
        return np.array([True] * 4 + [False] * 2)


def test_bandit_learns_a_contextual_bandit():
    from stable_baselines3.common.vec_env import DummyVecEnv

    venv = DummyVecEnv([_ContextBandit for _ in range(4)])
    venv.seed(0)
    config = tiny(
        MLP, algo="bandit", total_timesteps=1600, learning_starts=100, batch_size=64, lr=3e-3
    )
    config = ValueConfig(**{**config.to_json(), "hidden": (32, 32), "eps_fraction": 0.2})
    learner = ValueLearner(config, ObsLayout("sites", 4), venv, lambda: np.stack(
        venv.env_method("action_masks")
    ))  # fmt: skip
    while learner.timesteps < config.total_timesteps:
        learner.step()
    env = _ContextBandit()
    env.reset(seed=123)
    hits = 0
    for _ in range(300):
        obs = env._obs()
        action = learner.select(obs[None], env.action_masks()[None], 0.0)[0]
        hits += action == np.argmin(np.abs(env.x - 0.3))
    assert hits / 300 > 0.9


def test_terminal_reward_pays_the_episode_sum_at_the_end():
    env, ref = TerminalReward(_ContextBandit(steps=5)), _ContextBandit(steps=5)
    env.reset(seed=3)
    ref.reset(seed=3)
    got, want = [], []
    for a in (0, 1, 2, 3, 0):
        got.append(env.step(a)[1])
        want.append(ref.step(a)[1])
    assert got[:4] == [0.0] * 4 and got[4] == pytest.approx(sum(want), abs=1e-12)
    assert env.action_masks().tolist() == ref.action_masks().tolist()


@pytest.mark.parametrize("agent", ["greedy", "stop"])
def test_paired_reward_is_the_reward_minus_round_robins_on_the_same_episode(agent):
    """Against two independent runs: round-robin's episode and the agent's episode on fresh
    envs of the same seed; the paired return is their difference, also when the agent stops
    before round-robin ends."""
    from growenv.env.growth_env import GrowthEnv
    from growenv.learners.wrappers import PairedReward

    kwargs = {**DAG, "max_steps": 4}
    rr = run_episode(kwargs, make_policy("round-robin"), 7)[1:]
    ref = [r["reward"] for r in rr]
    env = PairedReward(GrowthEnv(**kwargs))
    plain = GrowthEnv(**kwargs)
    obs, info = env.reset(seed=7)
    plain.reset(seed=7)
    policy = make_policy("greedy")
    got, raw, done = [], [], False
    while not done:
        action = plain.stop_action if agent == "stop" and len(got) == 1 else None
        if action is None:
            action = int(policy.act(obs, info, env.unwrapped))
        obs, reward, terminated, truncated, info = env.step(action)
        raw.append(plain.step(action)[1])
        got.append(reward)
        done = terminated or truncated
    for t, r in enumerate(got[:-1]):
        assert r == pytest.approx(raw[t] - ref[t], abs=1e-12)
    assert sum(got) == pytest.approx(sum(raw) - sum(ref), abs=1e-12)
    assert len(got) == (2 if agent == "stop" else len(ref))
    assert env.action_masks().tolist() == plain.action_masks().tolist()


# --------------------------------------------------------------------------- runs


def test_same_seed_same_weights_and_global_rngs_untouched(dag_run, tmp_path):
    random.seed(5)
    np.random.seed(5)  # noqa: NPY002 (checking the legacy global state is kept)
    torch.manual_seed(5)
    before = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())  # noqa: NPY002
    train_value_agent(tiny(DAG), tmp_path / "again")
    assert random.getstate() == before[0]
    assert np.array_equal(np.random.get_state()[1], before[1])  # noqa: NPY002
    assert torch.equal(torch.get_rng_state(), before[2])
    a = torch.load(dag_run / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "again" / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], torch.zeros_like(a[k])) for k in a if "in_std" in k)
    train_value_agent(tiny(DAG, seed=1), tmp_path / "other")
    c = torch.load(tmp_path / "other" / "model.pt", weights_only=True)["state_dict"]
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_dqn_policy_runs_on_dag_of_other_sizes_and_on_mlp(dag_run, tmp_path):
    policy = make_policy(f"dqn:{dag_run}")
    assert policy_entry(f"dqn:{dag_run}").lockstep
    for max_nodes in (2, 3):  # the shared scorer fits any number of slots
        rows = run_episode({**DAG, "max_nodes": max_nodes}, policy, 0)
        assert len(rows) >= 2 and all(r["action"] >= 0 for r in rows[1:])
    with pytest.raises(UserError, match="^policy 'dqn:.*': expected a dag env"):
        run_episode(MLP, policy, 0)
    train_value_agent(tiny(MLP, total_timesteps=6), tmp_path / "mlp")
    rows = run_episode(MLP, make_policy(f"dqn:{tmp_path / 'mlp'}"), 1)
    assert len(rows) >= 2


def test_resume_continues_and_existing_runs_are_refused(dag_run, tmp_path):
    with pytest.raises(FileExistsError, match="already holds a run"):
        train_value_agent(tiny(DAG), dag_run)
    with pytest.raises(FileNotFoundError, match="^resume: expected"):
        train_value_agent(tiny(DAG), tmp_path / "none", resume=True)
    out = tmp_path / "r"
    train_value_agent(tiny(DAG, total_timesteps=4), out)
    train_value_agent(tiny(DAG, total_timesteps=8), out, resume=True)
    import json

    sessions = json.loads((out / "config.json").read_text())["sessions"]
    assert [(s["start_timesteps"], s["end_timesteps"]) for s in sessions] == [(0, 4), (4, 8)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"algo": "ppo"}, "^algo: expected one of"),
        ({"gamma": 1.5}, "^gamma: expected"),
        ({"n_step": 0}, "^n_step: expected an int >= 1"),
        ({"reward_mode": "sparse"}, "^reward_mode: expected"),
        ({"reward_mode": "paired", "reward_reference": "rr"}, "^reward_reference: expected"),
        ({"hidden": ()}, "^hidden: expected"),
        ({"action_set": "top"}, "^action_set: expected one of"),
        ({"action_set": "best-per-kind", "env_kwargs": MLP}, "^action_set: 'best-per-kind' needs"),
        ({"selection_seed_offset": 0, "eval_every": 5}, "^task roles: expected disjoint"),
    ],
)
def test_bad_config_values_are_one_line_errors(change, message):
    with pytest.raises(ValueError, match=message) as info:
        ValueConfig(**{**tiny(DAG).to_json(), **change}).validate()
    assert "\n" not in str(info.value)


def test_bad_paths_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="^path: expected") as info:
        make_policy(f"dqn:{tmp_path / 'missing'}")
    assert "\n" not in str(info.value)
    (tmp_path / "model.pt").write_text("not a model")
    with pytest.raises(ValueError, match="^path: expected a value model"):
        make_policy(f"dqn:{tmp_path}")
    (tmp_path / "model.pt").unlink()
    with pytest.raises(ValueError, match="^path: expected model.pt or best_model.pt"):
        make_policy(f"dqn:{tmp_path}")
    assert ValueConfig.from_json(tiny(DAG).to_json()) == tiny(DAG)


def test_cli_train_dqn_resume_and_one_line_errors(tmp_path, capsys):
    import json

    from growenv.cli import main

    env = json.dumps({**DAG, "task_kwargs": TASK_KWARGS})
    out = str(tmp_path / "cli")
    common = ["train", "--out", out, "--env-kwargs", env, "--no-progress", "--n-envs", "2"]
    value = ["--eval-every", "0", "--learning-starts", "2", "--hidden", "8", "--n-step", "2"]
    value += ["--action-set", "best-per-kind"]
    assert main([*common, "--algo", "bandit", "--timesteps", "4", *value]) == 0
    saved = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert (saved["algo"], saved["n_step"], saved["hidden"]) == ("bandit", 2, [8])
    assert saved["action_set"] == "best-per-kind"
    assert main([*common, "--algo", "bandit", "--timesteps", "6", "--resume"]) == 0
    saved = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert [s["end_timesteps"] for s in saved["sessions"]] == [4, 6]
    rollout = ["train", "--out", str(tmp_path / "rollout"), *common[3:], *value]
    assert main([*rollout, "--algo", "rollout", "--timesteps", "4", "--gradient-steps", "2"]) == 0
    saved = json.loads((tmp_path / "rollout" / "config.json").read_text())
    assert (saved["algo"], saved["rollout_base"], saved["gradient_steps"]) == (
        "rollout",
        "round-robin",
        2,
    )
    capsys.readouterr()
    bad = [
        (["--algo", "ppo", "--n-step", "2"], "--n-step: expected --algo dqn, bandit or rollout"),
        (["--algo", "dqn", "--hidden", "8,x"], "--hidden: expected sizes >= 1"),
        (["--algo", "dqn", "--reward-mode", "sparse"], "--reward-mode: expected one of"),
        (["--algo", "dqn", "--action-set", "top"], "--action-set: expected one of"),
        (["--algo", "rollout", "--rollout-base", "bic"], "--rollout-base: expected one of"),
        (["--algo", "rollout", "--vec", "lockstep"], "--vec: expected auto or single with --algo"),
        (["--algo", "dqn"], "--out: expected a new run directory"),
    ]
    for extra, message in bad:
        assert main([*common, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err


def test_evaluation_keeps_the_best_model_on_selection_teachers(tmp_path):
    import csv
    import json

    config = tiny(DAG, total_timesteps=8, eval_every=4, eval_tasks=1)
    tasks = selection_tasks(config)  # the training distribution's splits, held-out seed
    assert len(tasks) == 1 and len(tasks[0].train.x) == TASK_KWARGS["n_train"]
    train_value_agent(config, tmp_path / "run")
    best = json.loads((tmp_path / "run" / "config.json").read_text())["best"]
    rows = list(csv.DictReader((tmp_path / "run" / "progress.csv").open()))
    scores = [float(r["agent_over_greedy"]) for r in rows if r["agent_over_greedy"]]
    assert len(scores) == 2 and best["agent_over_greedy"] == min(scores)
    assert (tmp_path / "run" / "best_model.pt").is_file()
    assert make_policy(f"dqn:{tmp_path / 'run'}").path.name == "best_model.pt"


def test_a_signal_saves_a_checkpoint_and_the_run_resumes(tmp_path):
    import json
    import os
    import signal

    from growenv.harness.lifecycle import RunInterrupted

    def interrupt(timesteps, result):
        os.kill(os.getpid(), signal.SIGINT)

    out = tmp_path / "run"
    config = tiny(DAG, total_timesteps=12, eval_every=4, eval_tasks=1, n_step=1)
    with pytest.raises(RunInterrupted, match="interrupted at 4 of 12 steps"):
        train_value_agent(config, out, on_eval=interrupt)
    assert (out / "checkpoint.pt").is_file() and (out / "model.pt").is_file()
    train_value_agent(config, out, resume=True)
    sessions = json.loads((out / "config.json").read_text())["sessions"]
    assert [s["status"] for s in sessions] == ["interrupted", "completed"]
    assert [s["end_timesteps"] for s in sessions] == [4, 12]


def test_a_crashed_run_resumes_from_its_last_evaluation(tmp_path):
    """A run killed without a signal (a Ray trial's worker thread, a crash) keeps the
    checkpoint of its last evaluation; the resumed run logs every step once."""
    import csv
    import json

    def crash_at_8(timesteps, result):
        if timesteps >= 8:
            raise KeyboardInterrupt  # not a handled signal: nothing is saved now

    out = tmp_path / "run"
    config = tiny(DAG, total_timesteps=12, eval_every=4, eval_tasks=1, n_step=1, log_every=2)
    with pytest.raises(KeyboardInterrupt):
        train_value_agent(config, out, on_eval=crash_at_8)
    rows = list(csv.DictReader((out / "progress.csv").open()))
    assert max(int(r["timesteps"]) for r in rows) > 4  # rows past the checkpoint were logged
    assert torch.load(out / "checkpoint.pt", weights_only=True)["timesteps"] == 4
    train_value_agent(config, out, resume=True)
    steps = [int(r["timesteps"]) for r in csv.DictReader((out / "progress.csv").open())]
    assert steps == sorted(set(steps)) and steps[-1] == 12  # no step logged twice
    sessions = json.loads((out / "config.json").read_text())["sessions"]
    assert [(s["status"], s["end_timesteps"]) for s in sessions] == [
        ("running", 4),
        ("completed", 12),
    ]


# --------------------------------------------------------------------------- action sets


def _kind_rows(
    rng: np.random.Generator, batch: int, layout: ObsLayout
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat DAG observations with one random kind per slot and random gains."""
    from growenv.env.features import EXPANSION_FEATURES

    obs = rng.normal(size=(batch, layout.size)).astype(np.float32)
    rows = obs[:, : layout.num_slots * layout.row_size].reshape(batch, layout.num_slots, -1)
    kinds = rng.integers(0, 3, size=(batch, layout.num_slots))
    for j, name in enumerate(("kind_edge", "kind_node", "kind_widen")):
        rows[..., EXPANSION_FEATURES.index(name)] = kinds == j
    gains = rng.integers(0, 4, size=kinds.shape).astype(np.float32)  # ties happen
    rows[..., EXPANSION_FEATURES.index("estimated_gain")] = gains
    return obs, kinds, gains


@pytest.mark.parametrize("skip", [False, True])
def test_best_per_kind_mask_matches_an_explicit_loop(skip):
    layout = infer_layout(ObsLayout("dag", 2 * 3**2 - 2, 2).size, "dag")
    rng = np.random.default_rng(0)
    obs, kinds, gains = _kind_rows(rng, 64, layout)
    s = layout.num_slots
    mask = rng.random((64, s + 2)) < 0.4
    mask[:8, :s] = False  # rows with no valid slot keep skip / stop
    mask[:, s:] = rng.random((64, 2)) < 0.7
    got = best_per_kind_mask(torch.as_tensor(obs), layout, torch.as_tensor(mask), skip).numpy()
    for b in range(64):
        want = np.zeros(s + 2, bool)
        for kind in range(3):
            best, best_gain = None, -np.inf
            for slot in range(s):  # the first slot of the largest gain
                if mask[b, slot] and kinds[b, slot] == kind and gains[b, slot] > best_gain:
                    best, best_gain = slot, gains[b, slot]
            if best is not None:
                want[best] = True
        if not want.any():
            want[s:] = mask[b, s:]
        if skip:  # skip (action s) stays valid in every row where the env allows it
            want[s] = mask[b, s]
        assert np.array_equal(got[b], want), b
    assert (got <= mask).all()  # a subset of the valid actions
    assert got[8:, :s].sum(1).max() <= 3


@pytest.mark.parametrize("action_set", ["best-per-kind", "best-per-kind-skip"])
def test_best_per_kind_agent_acts_in_its_set_and_saves_it(tmp_path, action_set):
    env_kwargs = {**DAG, "max_nodes": 3}
    config = tiny(env_kwargs, action_set=action_set, total_timesteps=8)
    train_value_agent(config, tmp_path / "kinds")
    policy = make_policy(f"dqn:{tmp_path / 'kinds'}")
    assert policy.scorer.action_set == action_set
    skip = action_set == "best-per-kind-skip"
    from growenv.env.growth_env import GrowthEnv

    env = GrowthEnv(**{**env_kwargs, "max_steps": 4})
    obs, info = env.reset(seed=3)
    layout = infer_layout(obs.size, "dag")
    done, steps = False, 0
    while not done:
        mask = torch.as_tensor(env.action_masks()[None])
        allowed = best_per_kind_mask(torch.as_tensor(obs[None]), layout, mask, skip)[0].numpy()
        action = policy.act(obs, info, env)
        assert allowed[action], (steps, action)
        obs, _, terminated, truncated, info = env.step(action)
        done, steps = terminated or truncated, steps + 1
    learner = ValueLearner(config, layout, _FakeVec(), lambda: None)
    rng = np.random.default_rng(2)
    obs, _, _ = _kind_rows(rng, 16, layout)
    mask = rng.random((16, layout.num_slots + 2)) < 0.5
    allowed = best_per_kind_mask(torch.as_tensor(obs), layout, torch.as_tensor(mask), skip).numpy()
    drawn = np.zeros_like(allowed)
    for _ in range(40):  # exploration draws from the action set too
        actions = learner.select(obs, mask, 1.0)
        assert allowed[np.arange(16), actions].all()
        drawn[np.arange(16), actions] = True
    skip_drawn = drawn[:, layout.num_slots] & allowed[:, :-2].any(1)
    assert bool(skip_drawn.any()) == (skip and bool(mask[:, layout.num_slots].any()))


def test_scorers_saved_before_action_sets_load_as_all(tmp_path):
    scorer = SlotScorer("dag", (8,))
    data = {"scorer": {"kind": "dag", "hidden": [8], "node_inputs": True}}
    data["state_dict"] = scorer.state_dict()
    torch.save(data, tmp_path / "old.pt")
    assert load_scorer(tmp_path / "old.pt").action_set == "all"
    with pytest.raises(ValueError, match="^action_set: 'best-per-kind' needs kind 'dag'"):
        SlotScorer("sites", (8,), action_set="best-per-kind")
