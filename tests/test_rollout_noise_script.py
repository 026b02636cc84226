"""experiments/rollout_noise.py: its episodes against the lookahead and against rollouts
redrawn by hand, its summary against an explicit computation, and its argument errors."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from growenv.env.growth_env import GrowthEnv
from growenv.policies import make_policy
from tests.experiment_scripts import load_experiment, usage_error_line

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def rn():
    return load_experiment("rollout_noise")


def test_episodes_are_the_lookaheads_with_rollouts_redrawn_by_hand(rn):
    args = {"tasks": 1, "streams": 2, "scope": "all", "quick": True}
    key = {"family": rn.FAMILIES[1], "task": 0, "run": 3}
    record = rn.episode_job(key, args)
    assert record["decisions"]  # some decisions had two or more candidates
    kwargs = rn.env_kwargs(key["family"], 0, 1, "all", True)
    env = GrowthEnv(**kwargs)
    lookahead = make_policy("lookahead")
    obs, info = env.reset(seed=3)
    lookahead.reset(3)
    decisions, done = iter(record["decisions"]), False
    for action in record["actions"]:
        assert not done
        twin = copy.deepcopy(env)
        slots = np.sort(rn.lookahead_candidates(info, env))
        if slots.size >= 2:
            d = next(decisions)
            assert d["slots"] == slots.tolist() and d["step"] == env.step_count
            assert d["losses"] == copy.deepcopy(env).lookahead_losses(slots).tolist()
            for s, redrawn in enumerate(d["redrawn"], start=1):
                other = copy.deepcopy(env)
                other.episode.generator.manual_seed(rn.stream_seed(key, env.step_count, s))
                assert redrawn == other.lookahead_losses(slots).tolist()
            assert d["redrawn"][0] != d["losses"]  # another draw of the minibatches
        assert action == lookahead.act(obs, info, twin)  # the lookahead's own choice
        obs, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
    assert done and next(decisions, None) is None


def test_the_summary_matches_an_explicit_computation(rn):
    rng = np.random.default_rng(1)
    records = []
    for f in rn.FAMILIES:
        for task in range(3):
            decisions = [
                {
                    "losses": rng.uniform(1, 2, 3).tolist(),
                    "redrawn": rng.uniform(1, 2, (2, 3)).tolist(),
                }
                for _ in range(task + 1)
            ]
            records.append({"family": f, "task": task, "run": 0, "decisions": decisions})
    summary = rn.summarise(records)
    for group in (*rn.FAMILIES, "all"):
        agree, regret, spread, regret_1, regret_2 = [], [], [], [], []
        for r in records:
            if group not in ("all", r["family"]):
                continue
            for d in r["decisions"]:
                chosen = min(range(3), key=lambda i: d["losses"][i])
                a = g = 0.0
                for other in d["redrawn"]:
                    best = min(other)
                    a += (min(range(3), key=lambda i: other[i]) == chosen) / 2
                    g += (other[chosen] - best) / best / 2
                agree.append(a)
                regret.append(g)
                spread.append((max(d["losses"]) - min(d["losses"])) / min(d["losses"]))
                judge = d["redrawn"][1]  # the streams after the first: here one
                mean = [(x + y) / 2 for x, y in zip(d["losses"], d["redrawn"][0], strict=True)]
                both = min(range(3), key=lambda i: mean[i])
                regret_1.append((judge[chosen] - min(judge)) / min(judge))
                regret_2.append((judge[both] - min(judge)) / min(judge))
        got = summary[group]
        assert got["decisions"] == len(agree)
        named = {"agreement": agree, "regret": regret, "spread": spread}
        named.update(regret_1=regret_1, regret_2=regret_2)
        for name, values in named.items():
            mean, lo, hi = got[name]
            assert mean == pytest.approx(np.mean(values), rel=1e-12)
            assert lo <= mean <= hi


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--streams", "0"], "--streams"),
        (["--tasks", "-1"], "--tasks"),
        (["--scope", "some"], "--scope"),
    ],
)
def test_bad_arguments_get_one_line(rn, argv, flag, tmp_path, capsys):
    assert flag in usage_error_line(rn.main, argv, tmp_path / "out", capsys)


def test_an_out_folder_of_other_settings_is_refused_and_left_alone(rn, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "settings.json").write_text(json.dumps({"tasks": 6}))
    (out / "episodes.jsonl").write_text("kept\n")
    with pytest.raises(SystemExit) as exc:
        rn.main(["--quick", "--out", str(out)])
    assert exc.value.code == 2
    assert "--out" in capsys.readouterr().err.strip().splitlines()[-1]
    assert (out / "episodes.jsonl").read_text() == "kept\n"
