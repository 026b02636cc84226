"""experiments/rollout_races.py: its episodes against rollouts computed by hand, its replayed
races against the env's own raced lookahead, its summary against an explicit computation,
and its argument errors."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from growenv.env.growth_env import GrowthEnv
from growenv.policies.lookahead import lowest_rollout
from tests.experiment_scripts import load_experiment, usage_error_line
from tests.test_lookahead_learned import CHOSEN, slots_agent  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def rr():
    return load_experiment("rollout_races")


@pytest.fixture()
def agents(slots_agent, tmp_path):  # noqa: F811
    """A folder of one ``seed_0`` run: the tiny slots agent."""
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "seed_0").symlink_to(slots_agent)
    return tmp_path / "agents"


def test_episodes_and_replayed_races_match_the_envs_own_rollouts(rr, agents, monkeypatch):
    monkeypatch.setattr(rr, "teacher_env", lambda t, quick: GrowthEnv(**CHOSEN))
    args = {"teachers": 1, "top": 4, "agents": str(agents), "quick": True}
    record = rr.episode_job({"teacher": 0}, args)
    assert record["decisions"]
    agent = rr.make_policy(f"dqn:{agents / 'seed_0'}")
    env = GrowthEnv(**CHOSEN)
    obs, info = env.reset(seed=0)
    decisions, raced = iter(record["decisions"]), 0
    for action in record["actions"]:
        valid = np.flatnonzero(info["action_mask"][: env.max_sites])
        q = agent.q_values(obs, env)
        if valid.size >= 2:
            d = next(decisions)
            ranked = np.array(d["slots"])
            want = sorted(valid.tolist(), key=lambda s: (-q[s], s))[:4]  # an explicit ranking
            assert d["slots"] == want and d["steps"] == env.rollout_steps
            order = np.argsort(ranked)
            full = np.empty(ranked.size)
            full[order] = copy.deepcopy(env).lookahead_losses(ranked[order])
            assert [c[-1] for c in d["curves"]] == full.tolist()
            other = copy.deepcopy(env)
            other.episode.generator.manual_seed(rr.judge_seed(0, env.step_count))
            judged = np.empty(ranked.size)
            judged[order] = other.lookahead_losses(ranked[order])
            assert d["judge"] == judged.tolist() != d["curves"]
            for n, shares in rr.RULES.values():
                ats = rr.checkpoints(env.rollout_steps, shares)
                raced += bool(ats) and min(n, ranked.size) >= 3
                slots = np.sort(ranked[:n])
                expected = lowest_rollout(copy.deepcopy(env), slots, None, None, False, ats or None)
                assert int(ranked[rr.race(d, (n, shares))[0]]) == expected
            assert action == int(ranked[int(np.argmin(full[:3]))])
        obs, _, terminated, truncated, info = env.step(action)
    assert terminated or truncated
    assert next(decisions, None) is None and raced > 0  # some replays raced


def test_a_replayed_race_counts_the_steps_each_rollout_ran():
    rr = load_experiment("rollout_races")
    # 4 proposals, rollouts of 16 steps, checkpoints at 2 and 4
    curves = [[3.0, 1.0, 1.0], [1.0, 3.0, 2.0], [2.0, 2.0, 0.5], [4.0, 0.9, 0.1]]
    d = {"slots": [7, 3, 5, 1], "steps": 16, "stops": [2, 4, 16], "curves": curves}
    # at 2 the worst is proposal 3 (4.0); at 4 the worst of 0, 1, 2 is proposal 1 (3.0)
    assert rr.race(d, (4, (1 / 8, 1 / 4))) == (2, (4 * 2 + 3 * 2 + 2 * 12) / 16)
    assert rr.race(d, (4, ())) == (3, 4.0)
    assert rr.race(d, (2, (1 / 8,))) == (0, 2.0)  # 2 rollouts never race
    # twice at 2: proposals 3 (4.0) and 0 (3.0) stop, 2 ends below 1
    assert rr.race(d, (4, (1 / 8, 1 / 8))) == (2, (4 * 2 + 2 * 14) / 16)
    tie = {**d, "curves": [[1.0, 1.0, 1.0]] * 3, "slots": [7, 3, 5]}
    assert rr.race(tie, (3, (1 / 8,))) == (1, (3 * 2 + 2 * 14) / 16)  # ties: the later slot stops


def test_the_summary_matches_an_explicit_computation(rr):
    rng = np.random.default_rng(2)
    records = []
    for t in range(4):
        decisions = []
        for _ in range(t + 1):
            steps = int(rng.integers(20, 60))
            stops = [*sorted(set(rr.checkpoints(steps, rr.SHARES))), steps]
            curves = rng.uniform(1, 2, (4, len(stops))).tolist()
            decisions.append({"slots": rng.permutation(9)[:4].tolist(), "steps": steps,
                              "stops": stops, "curves": curves,
                              "judge": rng.uniform(1, 2, 4).tolist()})  # fmt: skip
        records.append({"teacher": t, "decisions": decisions})
    summary = rr.summarise(records)
    assert list(summary) == list(rr.RULES)
    for name, (n, shares) in rr.RULES.items():
        regret, gap, agree, ran = [], [], [], []
        for r in records:
            for d in r["decisions"]:
                judge = d["judge"]
                chosen, steps = rr.race(d, (n, shares))
                full = min(range(n), key=lambda i: d["curves"][i][-1])
                ref = min(range(3), key=lambda i: d["curves"][i][-1])
                regret.append((judge[chosen] - min(judge)) / min(judge))
                gap.append(regret[-1] - (judge[ref] - min(judge)) / min(judge))
                agree.append(chosen == full)
                ran.append(steps)
        got = summary[name]
        assert got["decisions"] == len(regret) == 10
        for stat, values in (("regret", regret), ("- reference", gap), ("agreement", agree),
                             ("rollouts", ran)):  # fmt: skip
            mean, lo, hi = got[stat]
            assert mean == pytest.approx(np.mean(values), rel=1e-12, abs=1e-15)
            assert lo <= mean + 1e-12 and mean <= hi + 1e-12
    assert summary[rr.REFERENCE]["- reference"] == [0.0, 0.0, 0.0]
    ranks = rr.winner_ranks(records, 4)
    stream = np.bincount([np.argmin([c[-1] for c in d["curves"]]) for r in records
                          for d in r["decisions"]], minlength=4) / 10  # fmt: skip
    judged = np.bincount([np.argmin(d["judge"]) for r in records for d in r["decisions"]],
                         minlength=4) / 10  # fmt: skip
    assert ranks == {"stream": stream.tolist(), "judge": judged.tolist()}
    assert "| top 3, race 1/4 (v25) |" in rr.markdown(summary)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--teachers", "0"], "--teachers"),
        (["--top", "3"], "--top"),
        (["--agents", "nowhere"], "--agents"),
    ],
)
def test_bad_arguments_get_one_line(rr, argv, flag, tmp_path, capsys):
    assert flag in usage_error_line(rr.main, argv, tmp_path / "out", capsys)


def test_episodes_are_stored_and_a_second_run_replays_them(
    rr, agents, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(rr, "teacher_env", lambda t, quick: GrowthEnv(**CHOSEN))
    argv = ["--quick", "--teachers", "2", "--workers", "1", "--agents", str(agents)]
    first = rr.main([*argv, "--out", str(tmp_path / "out")])
    stored = (tmp_path / "out" / "episodes.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["teacher"] for line in stored) == [0, 1]
    capsys.readouterr()
    assert rr.main([*argv, "--out", str(tmp_path / "out")]) == first
    assert "episodes to run" not in capsys.readouterr().out


def test_an_out_folder_of_other_settings_is_refused_and_left_alone(rr, agents, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "settings.json").write_text(json.dumps({"teachers": 6}))
    (out / "episodes.jsonl").write_text("kept\n")
    with pytest.raises(SystemExit) as exc:
        rr.main(["--quick", "--agents", str(agents), "--out", str(out)])
    assert exc.value.code == 2
    assert "--out" in capsys.readouterr().err.strip().splitlines()[-1]
    assert (out / "episodes.jsonl").read_text() == "kept\n"
