"""experiments/learned_growth.py: task sets, the choice of configuration, argument errors.

The episodes themselves are the env's and the policies' (tested elsewhere); here the
protocol's bookkeeping is checked against explicit computations.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from tests.experiment_scripts import load_experiment, usage_error_line

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lg():
    return load_experiment("learned_growth")


def iqm(values: np.ndarray) -> float:
    """Interquartile mean by an explicit sort: the mean of the middle half (n divisible by 4)."""
    v = np.sort(values.ravel())
    n = v.size
    assert n % 4 == 0
    return float(v[n // 4 : 3 * n // 4].mean())


def test_selection_families_are_disjoint_from_training_test_and_each_other(lg):
    sel = lg.selection_tasks(3)
    assert list(sel) == ["selection", "selection-4class", "selection-wide"]
    seeds = {f: [t.info["seed"] for t in ts] for f, ts in sel.items()}
    flat = [s for ss in seeds.values() for s in ss]
    assert len(set(flat)) == len(flat)
    assert all(lg.SELECTION_OFFSET <= s < lg.TEST_OFFSET for s in flat)
    # the held-out shapes are what they claim: 4 outputs; hidden widths of at least 80
    assert all(t.out_features == 4 for t in sel["selection-4class"])
    assert all(min(t.info["hidden"]) >= 80 for t in sel["selection-wide"])
    assert [lg.is_selection(f) for f in ("selection", "selection-wide", "teacher-5class")] == [
        True,
        True,
        False,
    ]
    test = lg.test_tasks(2, None)
    teachers = ("teacher-depth3", "teacher-5class", "teacher-train")
    test_seeds = [t.info["seed"] for f in teachers for t in test[f]]
    assert len(set(test_seeds)) == len(test_seeds) == 5
    assert not set(test_seeds) & set(flat)
    assert min(test_seeds) >= lg.TEST_OFFSET
    # teacher-train is the training distribution's shape: depth 2, 3 classes or regression
    for t in test["teacher-train"]:
        assert len(t.info["hidden"]) == 2 and t.out_features in (1, 3)
    lg.check_disjoint(4, 6)


def test_test_splits_add_other_splits_of_the_same_data(lg):
    """``--test-splits 3``: digits in splits 0, 1, 2; split 0 is the one earlier runs tested."""
    one = lg.test_tasks(1, None)["digits"]
    three = lg.test_tasks(1, None, 3)["digits"]
    assert len(one) == 1 and len(three) == 3
    idx = [np.asarray(t.info["split_indices"]["train"]) for t in three]
    assert np.array_equal(idx[0], np.asarray(one[0].info["split_indices"]["train"]))
    assert not np.array_equal(idx[0], idx[1]) and not np.array_equal(idx[1], idx[2])
    # the same samples in every split, only partitioned otherwise
    for t in three:
        parts = np.concatenate([np.asarray(v) for v in t.info["split_indices"].values()])
        assert np.array_equal(np.sort(parts), np.arange(1797))


def test_the_first_split_moves_the_splits_to_fresh_seeds(lg):
    """``--first-split 2 --test-splits 2``: digits in splits 2 and 3, the same tasks as the
    last two of ``--test-splits 4``."""
    four = lg.test_tasks(1, None, 4)["digits"]
    moved = lg.test_tasks(1, None, 2, first_split=2)["digits"]
    for a, b in zip(moved, four[2:], strict=True):
        for part in ("train", "val", "test"):
            ia, ib = (np.asarray(t.info["split_indices"][part]) for t in (a, b))
            assert np.array_equal(ia, ib)


def test_a_configuration_overrides_the_training_mix_only(lg):
    mix = lg.value_config("dqn-kinds-mix", 0, 100, quick=False)
    plain = lg.value_config("dqn-kinds", 0, 100, quick=False)
    assert mix.env_kwargs["task_kwargs"]["classes"] == [0, 3, 10]
    assert plain.env_kwargs["task_kwargs"]["classes"] == list(lg.TRAIN_CLASSES)
    assert {**mix.env_kwargs["task_kwargs"], "classes": None} == {
        **plain.env_kwargs["task_kwargs"],
        "classes": None,
    }
    assert mix.action_set == "best-per-kind" and mix.env_kwargs["fit_scope"] == "all"
    bandit = lg.value_config("bandit-kinds", 0, 100, quick=False)
    assert bandit.algo == "bandit" and bandit.action_set == "best-per-kind"
    skip = lg.value_config("rollout-skip", 0, 100, quick=False)
    long = lg.value_config("rollout-kinds-long", 0, 100, quick=False)
    assert (
        skip.action_set == "best-per-kind-skip" and skip.env_kwargs["task_kwargs"]["n_val"] == 4096
    )
    assert {**skip.env_kwargs["task_kwargs"], "n_val": None} == {
        **long.env_kwargs["task_kwargs"],
        "n_val": None,
    }
    assert {**vars(skip), "action_set": None, "env_kwargs": None} == {
        **vars(long),
        "action_set": None,
        "env_kwargs": None,
    }
    val = lg.value_config("rollout-kinds-val", 0, 100, quick=False)
    assert val.env_kwargs == skip.env_kwargs  # the same training teachers, 4,096 val samples
    assert {**vars(val), "env_kwargs": None} == {**vars(long), "env_kwargs": None}


def _records(losses: dict[str, np.ndarray], families: list[str]) -> list[dict]:
    """Episode records of ``losses[method]`` of shape (runs, families, tasks)."""
    out = []
    for m, arr in losses.items():
        for r in range(arr.shape[0]):
            for fi, f in enumerate(families):
                for t in range(arr.shape[2]):
                    out.append(
                        {"family": f, "task": t, "run": r, "method": m, "test_loss": arr[r, fi, t]}
                    )
    return out


def _compute_fields(decision: float, growths: int) -> dict:
    """The compute fields of an episode record with ``decision`` decision MACs in all."""
    return {
        "decision_macs": decision,
        "growths": growths,
        "compute": decision + 1.0,
        "compute_by_phase": {"search": decision},
        "seconds": 1.0,
        "params": 1.0,
        "budget": 2.0,
    }


def test_selection_normalises_by_the_heuristics_and_picks_the_lowest_iqm(lg):
    rng = np.random.default_rng(0)
    families = ["selection", "selection-4class"]
    scale = np.array([[1.0, 10.0], [0.1, 3.0]])  # per family, task: very different scales
    losses = {
        m: scale[None] * (1 + off + 0.05 * rng.standard_normal((4, 2, 2)))
        for m, off in (("a", 0.1), ("b", -0.1), ("round-robin", 0.0), ("greedy", 0.05))
    }
    records = _records(losses, families)
    out = lg.select(records, ["a", "b"], ["round-robin", "greedy"], families, runs=4)
    ref = (losses["round-robin"] + losses["greedy"]).mean(0) / 2  # per (family, task)
    for m in ("a", "b", "round-robin", "greedy"):
        assert out["iqm"][m][0] == pytest.approx(iqm(losses[m] / ref[None]), rel=1e-12)
    assert out["selected"] == "b"
    d = out["difference"]["b"]["round-robin"]
    assert d[0] == pytest.approx(iqm(losses["b"] / ref) - iqm(losses["round-robin"] / ref))
    assert d[2] < 0  # b is 10 % below round-robin everywhere: the CI is below 0
    assert out["difference"]["a"]["round-robin"][1] > 0
    b_a = out["between_configs"]["b"]["a"]  # paired episodes: b sits 0.2 below a
    assert b_a[0] == pytest.approx(iqm(losses["b"] / ref) - iqm(losses["a"] / ref))
    assert b_a[2] < 0 < out["between_configs"]["a"]["b"][1]


def test_a_compute_bar_selects_only_configurations_within_its_decision_compute(lg):
    """b has the lowest IQM but spends more decision MACs per growth than whole-space on one
    family: a is selected; the bar takes no part in the normalisation; with both over the
    bar the lowest IQM is selected and both are marked."""
    rng = np.random.default_rng(1)
    families = ["selection", "selection-4class"]
    losses = {
        m: 1 + off + 0.05 * rng.standard_normal((4, 2, 2))
        for m, off in (("a", 0.0), ("b", -0.1), ("round-robin", 0.05), ("whole-space", -0.5))
    }
    records = _records(losses, families)
    cost = {"a": (90.0, 90.0), "b": (90.0, 110.0), "whole-space": (100.0, 100.0)}
    for r in records:
        per_growth = cost.get(r["method"], (1.0, 1.0))[families.index(r["family"])]
        growths = 1 + r["task"]  # episodes of different lengths: a ratio of sums
        r.update(_compute_fields(per_growth * growths, growths))
    plain = lg.select(records, ["a", "b"], ["round-robin"], families, runs=4)
    out = lg.select(
        records, ["a", "b"], ["round-robin"], families, runs=4, compute_bar="whole-space"
    )
    assert plain["selected"] == "b" and plain["within_compute"] == {}
    assert out["iqm"] == plain["iqm"]  # whole-space (far lower losses) normalises nothing
    assert out["within_compute"] == {"a": True, "b": False}
    assert out["selected"] == "a"
    text = lg.markdown({"groups": {}}, {}, [], out, "a")
    assert "| b (over whole-space's decision compute) |" in text
    per_growth = {"a": [90.0, 90.0], "b": [90.0, 110.0], "whole-space": [100.0, 100.0]}
    assert {m: [v[f] for f in families] for m, v in out["decision_macs_growth"].items()} == (
        pytest.approx(per_growth)
    )
    assert "| b | 90 | 110 |" in text and "| whole-space | 100 | 100 |" in text
    for r in records:
        if r["method"] == "a" and r["family"] == "selection":
            r["decision_macs"] *= 1.2
    out = lg.select(
        records, ["a", "b"], ["round-robin"], families, runs=4, compute_bar="whole-space"
    )
    assert out["within_compute"] == {"a": False, "b": False} and out["selected"] == "b"


def test_diagnostics_are_scored_but_never_selected_nor_normalise(lg):
    families = ["selection", "selection-wide"]
    rng = np.random.default_rng(4)
    losses = {
        "a": 1.0 + 0.1 * rng.random((3, 2, 4)),
        "round-robin": 1.1 + 0.1 * rng.random((3, 2, 4)),
        "oracle": 0.5 + 0.1 * rng.random((3, 2, 4)),  # far below: it would be selected
    }
    records = _records(losses, families)
    out = lg.select(records, ["a"], ["round-robin"], families, runs=3, diagnostics=["oracle"])
    plain = lg.select(_records(losses, families), ["a"], ["round-robin"], families, runs=3)
    assert out["selected"] == "a" and out["diagnostics"] == ["oracle"]
    assert out["iqm"]["a"] == plain["iqm"]["a"]  # the diagnostic normalises nothing
    # its IQM is that of its losses over round-robin's task means, by hand
    ratio = losses["oracle"] / losses["round-robin"].mean(axis=0, keepdims=True)
    flat = np.sort(ratio.ravel())
    n = flat.size
    assert out["iqm"]["oracle"][0] == pytest.approx(flat[n // 4 : n - n // 4].mean())
    assert out["difference"]["oracle"]["round-robin"][0] < -0.4
    assert set(out["between_configs"]["oracle"]) == {"a"}  # against each configuration
    assert "oracle" not in out["between_configs"]["a"]
    text = lg.markdown({"groups": {}}, {}, [], out, "a")
    assert "| oracle (diagnostic) |" in text and "| a (selected) |" in text


def test_selection_waits_for_complete_configurations(lg):
    families = ["selection"]
    losses = {m: np.ones((2, 1, 2)) for m in ("a", "round-robin")}
    records = _records(losses, families)
    records = [r for r in records if not (r["method"] == "a" and r["run"] == 1)]
    out = lg.select(records, ["a"], ["round-robin"], families, runs=2)
    assert out["selected"] is None and "a" not in out["iqm"]


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--phases", "train,tset"], "--phases: expected names among"),
        (["--selection-heuristics", "greedy,rr"], "--selection-heuristics: expected names"),
        (["--configs", "dqn-kinds,foo"], "--configs: expected names"),
        (["--selection-tasks", "1001"], "--selection-tasks: expected an int in [1, 1000]"),
        (["--test-splits", "0"], "--test-splits: expected an int in [1, 100]"),
        (["--first-split", "-1"], "--first-split: expected an int in [0, 1000000]"),
        (["--configs", ""], "--configs: expected one or more names"),
        (["--diagnostics", "oracle"], "--diagnostics: expected names among"),
        (["--compute-bar", "wholespace"], "--compute-bar: expected names among"),
        (["--agents", "0"], "--agents: expected an int >= 1"),
    ],
)
def test_bad_arguments_get_one_line(lg, argv, flag, tmp_path, capsys):
    assert flag in usage_error_line(lg.main, argv, tmp_path / "out", capsys)


def test_the_docs_page_names_the_configurations_the_script_trains(lg):
    """The configuration table of docs/experiments/learned_growth.md cannot drift from
    CONFIGS: every row is a configuration of the script, trained for the steps the page says,
    in a best-per-kind set or the slots set, with fitted gains or (said in its row) unfitted
    slots, and its run command lists them all."""
    page = (ROOT / "docs" / "experiments" / "learned_growth.md").read_text()
    table = page.split("| configuration | env steps / agent | learner |")[1].split("\n\n")[0]
    rows = [line.strip() for line in table.splitlines() if line.strip().startswith("| `")]
    names = [row.split("`")[1] for row in rows]
    assert len(names) >= 2
    command = page.split("--configs ")[1].split()[0]
    assert sorted(command.split(",")) == sorted(names)
    for name, row in zip(names, rows, strict=True):
        steps = int(row.split("|")[2].strip().replace(",", ""))
        assert lg.agent_steps(name, 10**6, quick=False) == steps
        assert lg.CONFIGS[name]["action_set"] in ("best-per-kind", "best-per-kind-skip", "slots")
        scope = lg.learned_env(name)["fit_scope"]
        assert scope == "all" or (scope == "chosen" and 'fit_scope="chosen"' in row)


def test_each_episode_runs_once_whatever_the_phases(lg, tmp_path, monkeypatch):
    """Heuristic selection episodes belong to both ``baselines`` and ``select``: one call
    with both phases, then a rerun, must store every episode exactly once."""
    calls = []

    def fake_episode(key, args):
        calls.append(lg._key_id(key))
        return {**key, "test_loss": 1.0 + 0.01 * key["run"]}

    monkeypatch.setattr(lg, "episode_job", fake_episode)
    argv = ["--quick", "--agents", "2", "--configs", "dqn-kinds", "--workers", "1"]
    argv += ["--out", str(tmp_path / "out")]
    lg.main([*argv, "--phases", "baselines,select,test"])
    first = len(calls)
    keys = [lg._key_id(r) for r in lg.load_store(tmp_path / "out" / "episodes.jsonl")]
    assert len(keys) == len(set(keys)) == first
    # quick: 3 selection families x 2 teachers; test teacher families of 2, 1 and 2
    # teachers (depth 3, 5 classes, training shape) + digits
    selection, test = 3 * 2 * 2, (2 + 1 + 2 + 1) * 2
    n_heur = len(lg.HEURISTICS)
    assert first == selection * (1 + len(lg.SELECTION_HEURISTICS)) + test * (1 + n_heur)
    lg.main([*argv, "--phases", "baselines,select,test"])
    assert len(calls) == first  # a rerun finds everything done


@pytest.mark.parametrize(
    ("name", "source"),
    [("lookahead-skip", "rollout-skip"), ("rollout-slots", "lookahead-learned")],
)
def test_a_configuration_evaluated_by_another_policy_trains_as_its_source(lg, name, source):
    """lookahead-skip's agents are rollout-skip's and rollout-slots' are lookahead-learned's
    (the run copies them): each pair must train identically, and only the configuration with
    a ``policy`` uses its own spec in episodes."""
    for quick in (False, True):
        assert lg.value_config(name, 3, 400, quick) == lg.value_config(source, 3, 400, quick)
    assert lg.learned_env(name) == lg.learned_env(source)


def test_the_chosen_scope_configuration_differs_from_its_source_in_the_env_only(lg):
    """lookahead-learned-chosen is lookahead-learned with unfitted slots: the same learner,
    labels and policy; its agents train and are evaluated with fit_scope="chosen"."""
    chosen = lg.value_config("lookahead-learned-chosen", 3, 400, quick=False)
    source = lg.value_config("lookahead-learned", 3, 400, quick=False)
    assert lg.learned_env("lookahead-learned-chosen") == {"fit_scope": "chosen"}
    assert lg.learned_env("lookahead-learned") == {"fit_scope": "all"}
    assert chosen.env_kwargs["fit_scope"] == "chosen" and source.env_kwargs["fit_scope"] == "all"
    assert chosen == dataclasses.replace(source, env_kwargs=chosen.env_kwargs)
    assert {**chosen.env_kwargs, "fit_scope": "all"} == source.env_kwargs
    assert lg.CONFIGS["lookahead-learned-chosen"]["policy"] == "lookahead-learned"


def test_episodes_of_a_configuration_use_its_policy_spec(lg, monkeypatch, tmp_path):
    specs = []

    def fake_make_policy(spec, **kwargs):
        specs.append((spec, kwargs))
        return object()

    def fake_episode(env_kwargs, policy, seed, env):
        env.reset(seed=seed)
        row = {"test_loss": 1.0, "test_accuracy": None, "val_loss": 1.0, "params": 1}
        return [{**row, "grown_site": -1, "compute": 0.0, "action_name": "reset"}]

    monkeypatch.setattr(lg, "make_policy", fake_make_policy)
    monkeypatch.setattr(lg, "run_episode", fake_episode)
    args = {"out": str(tmp_path), "quick": True, "selection_tasks": 1}
    methods = ("lookahead-skip", "rollout-skip", "lookahead-learned", "lookahead-learned-capped")
    for method in methods:
        key = {"family": "selection", "task": 0, "method": method, "run": 2, "kind": "learned"}
        lg.episode_job(key, args)
    agents = tmp_path / "agents"
    assert specs == [
        (f"lookahead-skip:{agents / 'lookahead-skip' / 'seed_2'}", {}),
        (f"dqn:{agents / 'rollout-skip' / 'seed_2'}", {}),
        (f"lookahead-learned:{agents / 'lookahead-learned' / 'seed_2'}", {}),
        # the capped configuration evaluates lookahead-learned-chosen's agents, with a budget
        (
            f"lookahead-learned:{agents / 'lookahead-learned-chosen' / 'seed_2'}",
            {"budget": "whole-space"},
        ),
    ]


def test_the_capped_configuration_shares_the_chosen_agents_and_their_training(lg, tmp_path):
    """lookahead-learned-capped is lookahead-learned-chosen acting under whole-space's compute
    bar: the same learner and env, and its training is the chosen configuration's (one agent
    folder, trained once)."""
    name, source = "lookahead-learned-capped", "lookahead-learned-chosen"
    assert lg.agents_of(name) == source and lg.agents_of(source) == source
    for quick in (False, True):
        assert lg.value_config(name, 3, 400, quick) == lg.value_config(source, 3, 400, quick)
    assert lg.learned_env(name) == lg.learned_env(source)
    run = tmp_path / "agents" / source / "seed_1"
    run.mkdir(parents=True)
    (run / "done.json").write_text(json.dumps({"config": source, "seed": 1, "cpu_seconds": 2.0}))
    record = lg.train_job(name, 1, 400, tmp_path, False)
    assert record == {"config": name, "seed": 1, "cpu_seconds": 2.0}
    assert not (tmp_path / "agents" / name).exists()


@pytest.mark.parametrize(
    ("name", "classes"), [("lookahead-learned", [0, 3]), ("lookahead-learned-mix", [0, 3, 10])]
)
def test_lookahead_learned_trains_a_slot_scorer_on_never_rollouts(lg, name, classes):
    """lookahead-learned's learner regresses a scorer of every slot on the lookahead's own
    rollouts, labelled on training teachers with 4,096 validation samples (the mix: with
    10-class teachers too), and its config passes the learner's checks (log-ratio rewards,
    no growth costs)."""
    config = lg.value_config(name, 0, 1000, False).validate()
    assert (config.algo, config.rollout_base, config.action_set) == ("rollout", "never", "slots")
    assert lg.agent_steps(name, 1000, False) == 200
    assert config.env_kwargs["task_kwargs"]["n_val"] == 4096
    assert config.env_kwargs["task_kwargs"]["classes"] == classes
    assert config.env_kwargs["fit_scope"] == "all"


def test_decision_compute_is_compared_per_family_as_a_ratio_of_sums(lg):
    """One costly growth must not outweigh the other episodes: per family, all decision
    MACs over all growths, checked against an explicit sum."""

    def rec(method, family, decision, growths):
        return {"method": method, "family": family, **_compute_fields(decision, growths)}

    records = [
        rec("whole-space", "cifar10", 100.0, 1),  # stops after one costly growth
        rec("whole-space", "digits", 30.0, 10),
        rec("whole-space", "digits", 10.0, 10),
        rec("learned", "cifar10", 400.0, 10),
        rec("learned", "digits", 50.0, 10),
        rec("learned", "digits", 30.0, 10),
        rec("learned", "selection", 1e9, 1),  # never counted
    ]
    table = lg.compute_table(records, ["learned", "whole-space"])
    ws, ours = table["whole-space"]["by_family"], table["learned"]["by_family"]
    assert ws["cifar10"]["decision_macs_growth"] == 100.0
    assert ws["digits"]["decision_macs_growth"] == (30.0 + 10.0) / 20
    assert ours["digits"]["decision_macs_growth"] == (50.0 + 30.0) / 20
    assert ours["cifar10"]["decision_macs_growth"] == 40.0
    assert table["learned"]["decision_macs_episode"] == (400.0 + 50.0 + 30.0) / 3
    # a mean of per-episode ratios would say the learned method is cheaper (30 < 37.3);
    # per family it is cheaper on CIFAR-10 only
    assert lg.within_compute(table, "learned", "whole-space") == {
        "cifar10": True,
        "digits": False,
    }
    assert lg.within_compute(table, "learned", "greedy") == {}


def test_the_long_proposer_differs_from_its_source_in_steps_only(lg):
    """lookahead-learned-chosen-mix-long trains v15's proposer for twice the env steps, its
    evaluations at the same interval; the projected policy acting with it is v17's policy
    with other agents."""
    long_steps = lg.agent_steps("lookahead-learned-chosen-mix-long", 10**6, quick=False)
    steps = lg.agent_steps("lookahead-learned-chosen-mix", 10**6, quick=False)
    assert (long_steps, steps) == (400, 200)
    longer = lg.value_config("lookahead-learned-chosen-mix-long", 2, long_steps, quick=False)
    source = lg.value_config("lookahead-learned-chosen-mix", 2, steps, quick=False)
    assert (longer.eval_every, source.eval_every) == (100, 100)
    assert longer.learning_starts == 2 * source.learning_starts
    assert longer == dataclasses.replace(
        source, total_timesteps=400, learning_starts=longer.learning_starts
    )
    projected, projected_long = (
        lg.CONFIGS["lookahead-learned-projected-mix"],
        lg.CONFIGS["lookahead-learned-projected-mix-long"],
    )
    assert lg.agents_of("lookahead-learned-projected-mix-long") == (
        "lookahead-learned-chosen-mix-long"
    )
    assert {**projected_long, "agents": projected["agents"]} == projected
    for name in ("lookahead-learned-projected-mix-long", "lookahead-learned-capped-short-mix-long"):
        assert lg.agent_steps(name, 10**6, quick=False) == 400  # its agents' steps


def test_the_select_phase_alone_prints_the_selection_tables(lg, tmp_path, monkeypatch, capsys):
    """``--phases select`` (what a declared rule is read from) prints the selection table,
    the configurations' differences on the same episodes and, with ``--compute-bar``, their
    decision MACs per growth; the numbers are those of :func:`select` on the stored
    episodes."""
    offsets = {"dqn-kinds": -0.1, "bandit-kinds": 0.05}

    def fake_episode(key, args):
        loss = 1.0 + offsets.get(key["method"], 0.0) + 0.01 * key["run"] + 0.02 * key["task"]
        macs = 300.0 if key["method"] == "whole-space" else 100.0 * (1 + key["run"])
        return {**key, "test_loss": loss, **_compute_fields(macs * 2, 2)}

    monkeypatch.setattr(lg, "episode_job", fake_episode)
    out = tmp_path / "out"
    argv = ["--quick", "--agents", "2", "--configs", "dqn-kinds,bandit-kinds", "--workers", "1"]
    argv += ["--compute-bar", "whole-space", "--out", str(out), "--phases", "select"]
    lg.main(argv)
    text = capsys.readouterr().out
    records = lg.load_store(out / "episodes.jsonl")
    families = sorted({r["family"] for r in records})
    heuristics = list(lg.SELECTION_HEURISTICS)
    ref = lg.select(records, ["dqn-kinds", "bandit-kinds"], heuristics, families, 2, "whole-space")
    assert ref["selected"] == "dqn-kinds"
    assert text.strip() == "\n".join(lg.selection_markdown(ref, "dqn-kinds")).strip()
    assert "| dqn-kinds (selected) |" in text
    d = ref["between_configs"]["dqn-kinds"]["bandit-kinds"]
    assert d[0] < 0 and f"| dqn-kinds | {lg._fmt(d, '+.4f')} |  |" in text
    assert "| whole-space |" + " 300 |" * len(families) in text
    assert "| dqn-kinds |" + " 150 |" * len(families) in text  # runs 0, 1: 100, 200 MACs


def test_run_jobs_keeps_what_finished_when_interrupted(lg, tmp_path, monkeypatch):
    """Ctrl-C during the jobs: the finished records are in the store, the message says how
    many and where (the pool itself is tested in tests/test_pool.py)."""

    def fake_pool(fn, calls, workers, on_result):
        on_result(0, fn(*calls[0]))
        raise KeyboardInterrupt

    monkeypatch.setattr(lg, "run_pool", fake_pool)
    store = tmp_path / "episodes.jsonl"
    jobs = [(dict, {"family": "selection", "task": i}) for i in range(3)]
    with pytest.raises(KeyboardInterrupt, match=r"^interrupted: 1 of 3 jobs finished, kept in "):
        lg.run_jobs(jobs, 2, store)
    assert lg.load_store(store) == [{"family": "selection", "task": 0}]


def test_v21s_candidate_and_heuristic_differ_from_their_sources_in_the_rollouts_batch(lg):
    """v21: the candidate is v15's uncapped proposer (its agents, its env) with rollouts on
    half the episode's minibatch size, and the new heuristic is the lookahead with the same
    rollouts, on the learned policies' unfitted slots; both are in the test's heuristics or
    configurations and the heuristic is a selection diagnostic."""
    half, source = (
        lg.CONFIGS["lookahead-learned-half-mix"],
        lg.CONFIGS["lookahead-learned-chosen-mix"],
    )
    assert lg.agents_of("lookahead-learned-half-mix") == "lookahead-learned-chosen-mix"
    assert half["policy_kwargs"] == {"rollout_batch": 64} and lg.BASE_ENV["batch_size"] == 128
    assert {k: v for k, v in half.items() if k not in ("agents", "policy_kwargs")} == source
    assert lg.learned_env("lookahead-learned-half-mix") == {"fit_scope": "chosen"}
    assert lg.HEURISTIC_POLICIES["lookahead-half"] == ("lookahead", {"rollout_batch": 64})
    assert lg.HEURISTICS["lookahead-half"] == "chosen"
    assert lg.DIAGNOSTICS["lookahead-half"] == ("lookahead", {"rollout_batch": 64}, "chosen")


def test_v22s_candidate_is_v21s_with_rollouts_on_three_quarters_of_the_minibatch(lg):
    """v22: v21's candidate (v15's uncapped proposer, its agents and env) with rollouts on 96
    of the episode's 128 samples per step; test seeds and splits moved past v21's."""
    b96, half = lg.CONFIGS["lookahead-learned-b96-mix"], lg.CONFIGS["lookahead-learned-half-mix"]
    assert b96["policy_kwargs"] == {"rollout_batch": 96} and lg.BASE_ENV["batch_size"] == 128
    assert {k: v for k, v in b96.items() if k != "policy_kwargs"} == {
        k: v for k, v in half.items() if k != "policy_kwargs"
    }
    assert lg.agents_of("lookahead-learned-b96-mix") == "lookahead-learned-chosen-mix"
    assert lg.learned_env("lookahead-learned-b96-mix") == {"fit_scope": "chosen"}
    assert lg.TEST_OFFSET == 20 * 10**6  # 1.9e7 spent by v25's test


def test_v23s_candidate_adds_the_lookaheads_candidates_on_48_samples(lg):
    """v23: v21's candidate (v15's uncapped proposer, its agents and env) also rolls out each
    kind's best slot (``kinds=True``: no budget, so always), on 48 of 128 samples per step."""
    kinds, half = (
        lg.CONFIGS["lookahead-learned-kinds-b48-mix"],
        lg.CONFIGS["lookahead-learned-half-mix"],
    )
    assert kinds["policy_kwargs"] == {"kinds": True, "rollout_batch": 48}
    assert {k: v for k, v in kinds.items() if k != "policy_kwargs"} == {
        k: v for k, v in half.items() if k != "policy_kwargs"
    }
    assert lg.agents_of("lookahead-learned-kinds-b48-mix") == "lookahead-learned-chosen-mix"
    assert lg.learned_env("lookahead-learned-kinds-b48-mix") == {"fit_scope": "chosen"}


def test_v24s_candidate_is_v21s_with_nested_rollout_minibatches(lg):
    """v24: v21's candidate (v15's uncapped proposer, its agents and env, rollouts on 64 of
    128 samples per step) with the rollouts' minibatches nested in the episode's."""
    nested, half = (
        lg.CONFIGS["lookahead-learned-nested-half-mix"],
        lg.CONFIGS["lookahead-learned-half-mix"],
    )
    assert nested["policy_kwargs"] == {**half["policy_kwargs"], "nested": True}
    assert {k: v for k, v in nested.items() if k != "policy_kwargs"} == {
        k: v for k, v in half.items() if k != "policy_kwargs"
    }
    assert lg.agents_of("lookahead-learned-nested-half-mix") == "lookahead-learned-chosen-mix"
    assert lg.learned_env("lookahead-learned-nested-half-mix") == {"fit_scope": "chosen"}


def test_v25s_candidate_is_v15s_full_size_policy_with_raced_rollouts(lg):
    """v25: v15's uncapped full-size policy (its agents and env, 3 proposals) whose worst
    rollout stops after a quarter of the rollouts' steps."""
    race, source = (
        lg.CONFIGS["lookahead-learned-race-mix"],
        lg.CONFIGS["lookahead-learned-chosen-mix"],
    )
    assert race["policy_kwargs"] == {"drop_worst_after": 0.25}
    assert {k: v for k, v in race.items() if k not in ("agents", "policy_kwargs")} == source
    assert "policy_kwargs" not in source
    assert lg.agents_of("lookahead-learned-race-mix") == "lookahead-learned-chosen-mix"
    assert lg.learned_env("lookahead-learned-race-mix") == {"fit_scope": "chosen"}
