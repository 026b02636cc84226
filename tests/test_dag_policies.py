"""The DAG strategies as registered policies (issue 21, item 4): each picks what its definition
says on hand-made states, the restricted space agrees with dag_strategies' on a real report,
the heuristics run on DAG slots, and the registry keeps DAG-only policies off site envs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import growenv
from growenv.harness.bench import plan_jobs
from growenv.nets.dag.slots import SlotLayout
from growenv.policies import POLICIES, make_policy
from growenv.policies.dag import bottleneck_node
from growenv.policies.dag_strategies import max_bottleneck_node, restricted_expansions
from growenv.policies.heuristics import bic

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LAYOUT = SlotLayout(3)  # indices: 0 in, 1..3 hidden, 4 out
IN_, H1, H2, H3, OUT_ = range(5)
EDGES = [(IN_, H1), (H1, H2), (H2, OUT_), (IN_, H3), (H3, OUT_)]


class StubDagEnv:
    """The PolicyEnv of a DAG env with made-up drops; records the searched slots."""

    def __init__(self, drops: dict[int, float], layout: SlotLayout = LAYOUT) -> None:
        self.slot_layout = layout
        self.max_sites = layout.num_slots
        self.skip_action = layout.num_slots
        self.stop_action = layout.num_slots + 1
        self.drops = drops
        self.searched: list[list[int]] = []
        self.report = SimpleNamespace(num_samples=100)
        self.task = SimpleNamespace(loss="mse", out_features=1)

    def evaluate_candidates(self, slots=None):
        chosen = range(self.max_sites) if slots is None else [int(s) for s in slots]
        self.searched.append(sorted(chosen))
        out = np.full(self.max_sites, -np.inf)
        for s in chosen:
            out[s] = self.drops.get(s, 0.0)
        return {"loss_drop": out, "gamma": np.zeros(self.max_sites)}


def dag_info(psi_node: int, valid=None, gains=None, params: int = 100, stats_loss: float = 1.0):
    """Info of a DAG state: ``psi_node`` has the largest bottleneck; ``valid`` slots (default:
    all) unmasked; candidate_params 10 each."""
    n = LAYOUT.num_slots
    mask = np.zeros(n + 2, dtype=bool)
    mask[n:] = True
    mask[list(range(n)) if valid is None else list(valid)] = True
    psi = np.full(LAYOUT.num_nodes, 0.1)
    psi[IN_] = -np.inf
    psi[psi_node] = 1.0
    gains = np.zeros(n) if gains is None else np.asarray(gains, dtype=float)
    return {
        "action_mask": mask,
        "candidate_gains": np.where(mask[:n], gains, -np.inf),
        "candidate_params": np.full(n, 10.0),
        "node_bottlenecks": psi,
        "graph_edges": EDGES,
        "stats_loss": stats_loss,
        "params": params,
        "step": 0,
    }


def restricted_of(node: int) -> set[int]:
    return set(LAYOUT.restricted(node, EDGES))


# ---------------------------------------------------------------------- hand-made states
def test_restricted_searches_and_picks_only_expansions_feeding_argmax_psi():
    outside = LAYOUT.slot("edge", IN_, H1)  # the largest drop, but not into h2
    inside = LAYOUT.slot("node", IN_, H2)
    env = StubDagEnv({outside: 5.0, inside: 1.0, LAYOUT.slot("widen", H1): 0.5})
    policy = make_policy("restricted")
    action = policy.act(None, dag_info(H2), env)
    assert action == inside
    assert set(env.searched[0]) == restricted_of(H2)
    for s in env.searched[0]:
        kind, i, j = LAYOUT.key(s)
        assert j == H2 if kind != "widen" else i in (H2, H1)  # h1 feeds h2
    assert policy.last["node"] == H2
    # only valid slots are searched; none valid in the space: skip without a search
    env = StubDagEnv({})
    assert policy.act(None, dag_info(H2, valid=[outside]), env) == env.skip_action
    assert env.searched == []
    # no drop: skip
    env = StubDagEnv({})
    assert policy.act(None, dag_info(OUT_), env) == env.skip_action


def test_bottleneck_node_ignores_in_and_absent_indices():
    info = dag_info(OUT_)
    assert bottleneck_node(info) == OUT_
    info["node_bottlenecks"][H3] = -np.inf  # absent
    info["node_bottlenecks"][H1] = 1.0  # tie with out: the earliest index
    assert bottleneck_node(info) == H1


def test_whole_space_picks_the_largest_drop_over_every_valid_slot():
    best = LAYOUT.slot("edge", IN_, H1)
    env = StubDagEnv({best: 5.0, LAYOUT.slot("node", IN_, H2): 1.0})
    assert make_policy("whole-space").act(None, dag_info(H2), env) == best
    assert env.searched == [list(range(LAYOUT.num_slots))]


def test_bic_restricted_grows_the_lowest_bic_gated_only_if_it_beats_the_current():
    a, b = LAYOUT.slot("edge", IN_, H2), LAYOUT.slot("node", IN_, H2)
    outside = LAYOUT.slot("edge", IN_, H1)
    n, loss = 100, 1.0
    env = StubDagEnv({a: 0.5, b: 0.55, outside: 0.9})
    info = dag_info(H2, stats_loss=loss)
    info["candidate_params"][b] = 40.0  # b drops more but costs more parameters
    policy = make_policy("bic-restricted", gate=True)
    assert policy.act(None, info, env) == a
    current, after = policy.last_bic
    assert current == pytest.approx(bic(100, loss, n, "mse"))
    assert after[a] == pytest.approx(bic(110, 0.5, n, "mse"))
    assert after[b] == pytest.approx(bic(140, 0.45, n, "mse"))
    assert np.isinf(after[outside])  # not in the restricted space: not scored
    env = StubDagEnv({a: 1e-6})  # a drop that does not pay for 10 parameters
    assert policy.act(None, dag_info(H2), env) == env.skip_action
    # the paper's rule (default): the BIC chooses, growth happens
    assert make_policy("bic-restricted").act(None, dag_info(H2), env) == a


def test_round_robin_cycles_expansion_kinds_with_the_best_gain_within():
    n = LAYOUT.num_slots
    gains = np.arange(n, dtype=float)
    edges = [s for s in range(n) if LAYOUT.kinds[s] == "edge"]
    nodes = [s for s in range(n) if LAYOUT.kinds[s] == "node"]
    valid = edges[:3] + nodes[:2]  # no widen slot valid
    env = StubDagEnv({})
    policy = make_policy("round-robin")
    policy.reset(0)
    picks = [policy.act(None, dag_info(OUT_, valid=valid, gains=gains), env) for _ in range(4)]
    # edge, node, (widen has none:) edge, node; each the largest gain of its kind
    assert picks == [edges[2], nodes[1], edges[2], nodes[1]]
    assert env.searched == []  # reads the info only


def test_greedy_and_random_on_dag_slots():
    n = LAYOUT.num_slots
    gains = np.zeros(n)
    gains[7], gains[9] = 3.0, 5.0
    env = StubDagEnv({})
    assert make_policy("greedy").act(None, dag_info(OUT_, valid=[7, 8], gains=gains), env) == 7
    policy = make_policy("random")
    policy.reset(0)
    picks = {policy.act(None, dag_info(OUT_, valid=[7, 8]), env) for _ in range(30)}
    assert picks <= {7, 8, env.skip_action} and len(picks) > 1


# ------------------------------------------------------------------------- registry, bench
def test_dag_policies_refuse_site_envs_in_one_line():
    entry = POLICIES["restricted"]
    assert entry.nets == ("dag",) and entry.reads_env and not entry.lockstep
    assert POLICIES["periodic"].nets == ("mlp", "conv")
    with pytest.raises(ValueError, match=r"^policy: 'restricted' runs on envs with net='dag'"):
        entry.check_net("mlp")
    with pytest.raises(ValueError, match=r"^policy: 'periodic' runs on envs with net='mlp'"):
        plan_jobs(["teacher_student"], ["periodic"], [0], {"net": "dag"})
    stub = SimpleNamespace(slot_layout=None, max_sites=4, skip_action=4, stop_action=5)
    for name in ("whole-space", "restricted", "bic-restricted"):
        with pytest.raises(ValueError, match=rf"^policy: '{name}' needs an env with DAG"):
            make_policy(name).act(None, dag_info(OUT_), stub)
    jobs = plan_jobs(["teacher_student"], ["greedy", "restricted"], [0, 1], {"net": "dag"})
    # greedy runs its seeds in one lockstep DAG env; restricted queries the env: one per seed
    assert [(j.policy, j.lockstep) for j in jobs] == [
        ("greedy", True),
        ("restricted", False),
        ("restricted", False),
    ]


# ------------------------------------------------------------------------------ real env
def test_restricted_space_on_a_real_env_is_dag_strategies_one():
    env = growenv.GrowthEnv(
        net="dag",
        max_nodes=4,
        train_steps=5,
        max_steps=6,
        task_kwargs=dict(n_train=256, n_stats=128, n_val=128, n_test=128),
    )
    _, info = env.reset(seed=0)
    policy = make_policy("restricted")
    for _ in range(4):
        node = bottleneck_node(info)
        names = info["node_names"]
        assert names[node] == max_bottleneck_node(env.report)
        expected = {
            env.slot_layout.slot(
                e.kind,
                names.index(e.source),
                None if e.target is None else names.index(e.target),
            )
            for e in restricted_expansions(env.net, env.report, names[node])
        }
        offered = set(env.dag.expansions)
        space = set(env.slot_layout.restricted(node, info["graph_edges"]))
        assert space & offered == expected & offered
        action = policy.act(None, info, env)
        assert action == env.skip_action or action in space
        _, _, _, _, info = env.step(action)
