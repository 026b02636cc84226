"""GrowthEnv with net="dag" (issue 21): the slot layout, masks against the report, growth of
exactly the chosen expansion, both env checkers from the empty graph, random episodes,
observations in the feature table's ranges, determinism, accounting and bad input."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch

import growenv
from growenv.env import features
from growenv.env.config import EnvConfig
from growenv.nets.dag import IN, OUT, GrowingDAG
from growenv.nets.dag import costs as dag_costs
from growenv.nets.dag.net import descendants
from growenv.nets.dag.slots import SlotLayout, num_slots

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = dict(
    net="dag",
    train_steps=3,
    batch_size=32,
    max_steps=4,
    task_kwargs=dict(n_train=128, n_stats=64, n_val=64, n_test=64),
)


def dag_env(**kwargs) -> growenv.GrowthEnv:
    return growenv.GrowthEnv(**{**SMALL, **kwargs})


def grown_env(seed: int = 0, steps: int = 3, **kwargs) -> growenv.GrowthEnv:
    """An env after ``steps`` growths of the largest estimated gain (a few hidden nodes)."""
    env = dag_env(max_steps=steps + 2, **kwargs)
    _, info = env.reset(seed=seed)
    for _ in range(steps):
        _, _, _, _, info = env.step(int(np.argmax(info["candidate_gains"])))
    return env


# ------------------------------------------------------------------------------ slots
@pytest.mark.parametrize("max_nodes", [1, 3, 8])
def test_slot_mapping_round_trips(max_nodes):
    layout = SlotLayout(max_nodes)
    assert layout.num_slots == num_slots(max_nodes) == 2 * (max_nodes + 1) ** 2 - max_nodes
    keys = [layout.key(s) for s in range(layout.num_slots)]
    assert len(set(keys)) == layout.num_slots
    for s, (kind, i, j) in enumerate(keys):
        assert layout.slot(kind, i, j) == s
        assert (layout.kinds[s], layout.sources[s]) == (kind, i)
        assert layout.targets[s] == (-1 if j is None else j)
        if kind == "widen":
            assert j is None and 1 <= i <= max_nodes
        else:
            assert i != j and 0 <= i <= max_nodes and 1 <= j <= max_nodes + 1
    # edges first, then new nodes over the same pairs, then widen 1..M
    p = len(layout.pairs)
    assert layout.key(0) == ("edge", 0, 1) and layout.key(p) == ("node", 0, 1)
    assert layout.key(layout.num_slots - 1) == ("widen", max_nodes, None)


def test_slot_errors_are_one_line():
    layout = SlotLayout(2)
    for call, pattern in (
        (lambda: layout.slot("edge", 1, 1), r"^slot: no edge slot for nodes \(1, 1\)"),
        (lambda: layout.slot("edge", 3, 1), r"^slot: no edge slot"),
        (lambda: layout.slot("widen", 0), r"^slot: widen takes a hidden node index in 1..2"),
        (lambda: layout.slot("grow", 0, 1), r"^kind: expected one of"),
        (lambda: layout.key(layout.num_slots), r"^slot: expected an int in \[0, 16\)"),
        (lambda: SlotLayout(0), r"^max_nodes: expected an int >= 1, got 0$"),
        (lambda: layout.node_names(["a", "b", "c"]), r"^max_nodes: expected an int >= 3"),
    ):
        with pytest.raises(ValueError, match=pattern) as err:
            call()
        assert "\n" not in str(err.value)


def test_slots_of_a_report_and_the_restricted_space():
    net = GrowingDAG(3, 2, nodes={"a": 2, "b": 1}, edges=[("in", "a"), ("a", "out")])
    x, y = torch.randn(40, 3), torch.randn(40, 2)
    report = growenv.bottleneck(net, x, y)
    layout = SlotLayout(3)
    names = layout.node_names(["a", "b"])
    assert names == ["in", "a", "b", None, "out"]
    slots = layout.slots_of(report.expansions, names)
    assert len(slots) == len(report.expansions)
    index = {n: i for i, n in enumerate(names) if n is not None}
    for s, e in slots.items():
        kind, i, j = layout.key(s)
        assert (kind, names[i], None if j is None else names[j]) == e.key
        assert j is None or index[e.target] == j
    # restricted around out (index 4): edges/nodes into out, widen out's feeder a (index 1)
    restricted = layout.restricted(4, [(0, 1), (1, 4)])
    assert all(layout.targets[s] == 4 for s in restricted if layout.kinds[s] != "widen")
    assert [layout.key(s) for s in restricted if layout.kinds[s] == "widen"] == [("widen", 1, None)]


# ------------------------------------------------------------------------------ config
def test_config_fields_validate_and_round_trip():
    config = EnvConfig(net="dag", max_nodes=3, neuron_fit="tiny", start_graph="chain")
    assert EnvConfig.from_json(config.to_json()) == config
    assert config.num_slots == num_slots(3)
    assert config.family_options == {"neuron_fit": "tiny", "start_graph": "chain"}
    for kwargs, pattern in (
        (dict(max_nodes=0), r"^max_nodes: expected an int >= 1, got 0$"),
        (dict(max_nodes=True), r"^max_nodes: expected an int >= 1, got True$"),
        (dict(neuron_fit="exact"), r"^neuron_fit: expected 'tiny' or 'nonlinear', got 'exact'$"),
        (dict(start_graph="full"), r"^start_graph: expected 'empty' or 'chain', got 'full'$"),
        (dict(method="gradmax"), r"^method: expected 'tiny' with net='dag'"),
        (
            dict(start_graph="chain", hidden_layers=3, max_nodes=2),
            r"^max_nodes: expected an int >= hidden_layers \(3",
        ),
        (
            dict(neuron_fit="nonlinear", neurons_per_growth="auto"),
            r"^neurons_per_growth: expected an int >= 1 with neuron_fit='nonlinear'",
        ),
    ):
        with pytest.raises(ValueError, match=pattern):
            EnvConfig(net="dag", **kwargs)
    # max_sites is ignored by the dag family (its slots follow from max_nodes)
    assert EnvConfig(net="dag", hidden_layers=5, max_sites=1).num_slots == num_slots(8)


def test_lockstep_batches_dag_but_not_its_other_obstacles():
    """The lockstep DAG env (LockstepDagVecEnv) batches net='dag'; Adam only, one line."""
    assert EnvConfig(net="dag").lockstep_obstacle() is None
    assert EnvConfig(net="dag", fit_scope="chosen").lockstep_obstacle() is None
    obstacle = EnvConfig(net="dag", optimizer="sgd").lockstep_obstacle()
    assert obstacle.startswith("optimizer: the lockstep env implements 'adam'")
    assert "\n" not in obstacle


# ------------------------------------------------------------------------------ episodes
def test_default_env_starts_from_the_empty_graph_and_passes_both_checkers():
    from gymnasium.utils.env_checker import check_env

    env = gym.make("growenv/Grow-v1", net="dag")
    unwrapped = env.unwrapped
    assert unwrapped.config.max_nodes == 8 and unwrapped.config.start_graph == "empty"
    assert env.action_space.n == num_slots(8) + 2
    assert env.observation_space.shape == (features.dag_observation_size(num_slots(8), 8),)
    small = gym.make("growenv/Grow-v1", **SMALL)  # the passive checker wraps gym.make
    obs, info = small.reset(seed=0)
    net = small.unwrapped.net
    assert list(net.nodes) == [IN, OUT] and net.edges == []
    assert info["widths"] == [] and info["params"] == net.out_features
    assert info["node_names"][0] == IN and info["node_names"][-1] == OUT
    small.step(small.unwrapped.skip_action)
    check_env(small.unwrapped, skip_render_check=True)


def test_sb3_env_checker_with_dag_defaults():
    from stable_baselines3.common.env_checker import check_env

    check_env(gym.make("growenv/Grow-v1", net="dag").unwrapped, warn=True)


def test_random_episodes_stay_finite_and_in_the_spaces():
    env = gym.make("growenv/Grow-v1", **SMALL)
    env.action_space.seed(1)
    env.reset(seed=1)
    for _ in range(2):
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            assert env.observation_space.contains(obs) and np.isfinite(reward)
            done = terminated or truncated
        env.reset()
    masked = dag_env()  # masked random actions only: every one grows what it names
    masked_rng = np.random.default_rng(0)
    _, info = masked.reset(seed=2)
    for _ in range(SMALL["max_steps"]):
        valid = np.flatnonzero(masked.action_masks()[: masked.max_sites])
        action = int(masked_rng.choice(valid))
        params = info["params"]
        _, _, _, _, info = masked.step(action)
        assert not info["invalid_action"] and info["grown_site"] == action
        assert info["params"] > params


def test_observations_stay_in_the_feature_table_ranges():
    env = dag_env(max_nodes=3, max_steps=6, start_graph="chain", hidden_layers=2)
    obs, info = env.reset(seed=3)
    observations = [obs]
    for _ in range(5):
        obs, *_, info = env.step(int(np.argmax(info["candidate_gains"])))
        observations.append(obs)
    s, m = env.max_sites, env.config.max_nodes + 2
    n_exp, n_node = len(features.EXPANSION_TABLE), len(features.NODE_TABLE)
    bounds = {"{0, 1}": (0, 1), "[0, inf)": (0, np.inf), "[0, 1]": (0, 1), "[0, 4]": (0, 4)}
    for obs in observations:
        exp = obs[: s * n_exp].reshape(s, n_exp)
        nodes = obs[s * n_exp : s * n_exp + m * n_node].reshape(m, n_node)
        glob = obs[s * n_exp + m * n_node :]
        assert len(glob) == len(features.GLOBAL_TABLE)
        for values, table in (
            (exp, features.EXPANSION_TABLE),
            (nodes, features.NODE_TABLE),
            (glob[None], features.GLOBAL_TABLE),
        ):
            for j, feature in enumerate(table):
                lo, hi = bounds.get(feature.range, (-np.inf, np.inf))
                assert ((values[:, j] >= lo) & (values[:, j] <= hi)).all(), feature.name
        # the present column is the offered slots; kinds are one-hot where present
        assert (exp[:, 1:4].sum(1) == exp[:, 0]).all()
    assert nodes[:, 0].sum() == 2 + len(env.net.hidden_nodes)


def test_history_columns_are_the_growths_of_each_kind_so_far():
    """The last three expansion columns against bookkeeping by hand: an episode that takes
    node, skip, edge, widen, node (each the best slot of its kind) and a growth that fails
    (a masked slot: the skip)."""
    max_steps = 7
    env = dag_env(max_nodes=3, max_steps=max_steps)
    obs, info = env.reset(seed=5)
    s, n_exp = env.max_sites, len(features.EXPANSION_TABLE)
    kinds = np.array([("edge", "node", "widen").index(k) for k in env.slot_layout.kinds])
    cols = [features.EXPANSION_FEATURES.index(c) for c in
            ("kind_grown_last", "kind_growths", "kind_idle_steps")]  # fmt: skip
    assert tuple(cols) == features.HISTORY_COLUMNS
    grown: list[tuple[int, int]] = []  # (step, kind) by hand
    plan = ["node", "skip", "edge", "widen", "node", "absent"]
    for step, want in enumerate(plan):
        exp = obs[: s * n_exp].reshape(s, n_exp)
        present = exp[:, 0] > 0.5
        for k in range(3):
            rows = exp[present & (kinds == k)][:, cols]
            last = float(bool(grown) and grown[-1][1] == k)
            count = sum(1 for _, g in grown if g == k) / max_steps
            when = max([t for t, g in grown if g == k], default=-1)
            idle = min((step - when) / max_steps, 1.0)
            np.testing.assert_allclose(rows, np.tile([last, count, idle], (len(rows), 1)))
        assert (exp[~present][:, cols] == 0).all()
        mask = info["action_mask"][:s]
        if want == "skip":
            action = env.skip_action
        elif want == "absent":
            action = int(np.flatnonzero(~mask)[0])
        else:
            k = ("edge", "node", "widen").index(want)
            valid = np.flatnonzero(mask & (kinds == k))
            action = int(valid[np.argmax(info["candidate_gains"][valid])])
        obs, _, _, _, info = env.step(action)
        if info["grown_site"] >= 0:
            grown.append((step, int(kinds[info["grown_site"]])))
    assert grown == [(0, 1), (2, 0), (3, 2), (4, 1)]
    env.reset(seed=5)
    assert env.episode.grown_kinds == []


def test_kind_history_closed_form():
    out = features.kind_history([(0, 2), (3, 0), (4, 2)], step=6, max_steps=10)
    np.testing.assert_allclose(out, [[0, 0.1, 0.3], [0, 0, 0.7], [1, 0.2, 0.2]])
    np.testing.assert_allclose(features.kind_history([], 0, 4), [[0, 0, 0.25]] * 3)
    assert features.kind_history([], 20, 4).max() == 1.0


def test_masks_match_the_report_and_never_close_a_cycle():
    env = grown_env(seed=0, steps=4, max_nodes=6)
    net, layout = env.net, env.slot_layout
    names = env.dag.names
    offered = layout.slots_of(env.report.expansions, names)
    mask = env.action_masks()[: env.max_sites]
    assert set(np.flatnonzero(mask)) <= set(offered)
    full = len(net.hidden_nodes) >= layout.max_nodes
    for s in range(env.max_sites):
        kind, i, j = layout.key(s)
        if not mask[s]:
            continue
        assert not (full and kind == "node")
        u, v = names[i], None if j is None else names[j]
        assert u is not None and (j is None or v is not None)
        if kind == "edge":
            assert (u, v) not in net.edges
        if kind in ("edge", "node"):
            assert u not in descendants(v, net.edges)  # no path v -> u: no cycle
    # a slot the graph does not offer: masked, and an action on it is the skip action
    absent = layout.slot("edge", layout.max_nodes, layout.out_index)
    assert names[layout.max_nodes] is None  # 4 growths made at most 4 of 6 nodes
    assert not mask[absent]
    params = env.net.num_parameters()
    _, _, _, _, info = env.step(absent)
    assert info["invalid_action"] and info["grown_site"] == -1
    assert env.net.num_parameters() == params
    with pytest.raises(ValueError, match=r"^site: slot \d+ \(edge #6 -> out\) is not offered"):
        env.evaluate_candidate(absent)


def test_a_step_grows_exactly_the_chosen_expansion():
    env = grown_env(seed=1, steps=2)
    for slot in (int(np.argmax(env.episode.gains)),
                 int(np.flatnonzero(env.action_masks()[: env.max_sites])[-1])):  # fmt: skip
        expected = copy.deepcopy(env.net)
        result = env.evaluate_candidate(slot)
        kind = env.slot_layout.key(slot)[0]
        new = env.family.apply_growth(expected, result.candidate, result.gamma)
        env.grow(slot)
        assert env.net.nodes == expected.nodes and env.net.edges == expected.edges
        for a, b in zip(env.net.parameters(), expected.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert (new is not None) == (kind == "node")
        if new is not None:
            assert env.dag.hidden[-1] == new
        env._train_and_measure()


def test_node_slots_close_at_max_nodes():
    env = dag_env(max_nodes=1, max_steps=3)
    _, info = env.reset(seed=0)
    layout = env.slot_layout
    node = layout.slot("node", 0, layout.out_index)
    assert info["action_mask"][node]
    _, _, _, _, info = env.step(node)
    assert info["widths"] and len(env.net.hidden_nodes) == 1
    kinds = np.array(layout.kinds)
    assert not info["action_mask"][: env.max_sites][kinds == "node"].any()


def test_same_seed_same_trajectory():
    def trajectory(seed: int) -> list:
        env = gym.make("growenv/Grow-v1", **SMALL)
        env.action_space.seed(seed)
        obs, _ = env.reset(seed=seed)
        out = [obs.tolist()]
        rng = np.random.default_rng(seed)
        done = False
        while not done:
            valid = np.flatnonzero(env.unwrapped.action_masks())
            obs, reward, terminated, truncated, info = env.step(int(rng.choice(valid)))
            out.append([obs.tolist(), reward, info["params"], info["graph_edges"]])
            done = terminated or truncated
        return out

    assert trajectory(3) == trajectory(3)
    assert trajectory(3) != trajectory(4)


def test_evaluate_candidates_is_the_batched_search_and_is_charged():
    env = grown_env(seed=0, steps=2)
    mask = env.action_masks()[: env.max_sites]
    before = env.compute_by_phase["search"]
    found = env.evaluate_candidates()
    valid = np.flatnonzero(mask)
    assert np.isneginf(found["loss_drop"][~mask]).all()
    assert (found["loss_drop"][valid] >= 0).all()
    cands = [env.dag.expansion(int(s)).candidate(env.config.neurons_per_growth) for s in valid]
    n = len(env.task.stats)
    expected = dag_costs.search_macs(env.net, cands, 32, n)
    assert env.compute_by_phase["search"] - before == expected
    for s in valid[:3]:  # one search alone finds what the batch found
        alone = env.evaluate_candidate(int(s))
        assert float(alone.gamma) == pytest.approx(found["gamma"][s])
        assert float(alone.loss_drop) == pytest.approx(found["loss_drop"][s], rel=1e-4, abs=1e-7)
    only = env.evaluate_candidates(slots=valid[:2])
    assert np.isfinite(only["loss_drop"]).sum() == min(2, len(valid))


def test_describe_render_and_bad_actions():
    env = dag_env(render_mode="ansi", invalid_action="raise")
    _, info = env.reset(seed=0)
    layout = env.slot_layout
    edge = layout.slot("edge", 0, layout.out_index)
    assert env.describe_action(edge) == "grow edge in -> out"
    assert env.describe_action(layout.slot("node", 0, 1)) == "grow node in -> new -> #1"
    text = env.render()
    assert "out" in text and "valid expansions" in text
    with pytest.raises(ValueError, match=r"^action: \d+ \(grow widen #1\) is masked"):
        env.step(layout.slot("widen", 1))
    with pytest.raises(ValueError, match=r"^action: expected 0 <= action < 156, got 156$"):
        env.step(156)
    assert isinstance(env.unwrapped.render(), str)
