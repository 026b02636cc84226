"""The DAG growth strategies (Douka et al. 2025) against explicit one-by-one computations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from growenv.nets.dag import (
    KINDS,
    GrowingDAG,
    amplitude_search,
    apply_growth,
    bottleneck,
    extended_forward,
)
from growenv.policies import dag_strategies as ds
from growenv.policies.heuristics import bic
from tests.experiment_scripts import load_experiment

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[1]


def net_and_data(seed: int = 0, n: int = 300):
    """in -> a -> out, in -> b -> out, a -> b, and three splits of a nonlinear target."""
    g = torch.Generator().manual_seed(seed)
    net = GrowingDAG(
        4,
        2,
        nodes={"a": 3, "b": 2},
        edges=[("in", "a"), ("a", "out"), ("in", "b"), ("b", "out"), ("a", "b")],
        dtype=F64,
        generator=g,
    )
    w = torch.randn(4, 2, generator=g, dtype=F64)

    def split():
        x = torch.rand(n, 4, generator=g, dtype=F64) * 2 - 1
        return x, torch.sin(2 * x @ w) + x[:, :2] ** 2

    return net, split(), split(), split()


def one_by_one(net, expansions, search, select=None, neurons=3):
    """Per expansion: its candidate, gamma (own search) and the loss it is judged on."""
    out = []
    for e in expansions:
        c = e.candidate(neurons)
        res = amplitude_search(net, c, *search)
        gamma = float(res.gamma)
        if select is None:
            value = float(res.losses.min())
        else:
            x, y = select
            value = float(((extended_forward(net, x, c, gamma) - y) ** 2).sum(-1).mean())
        out.append((e, c, gamma, value))
    return out


@pytest.mark.parametrize("with_select", [False, True])
def test_whole_space_is_the_argmin_of_a_one_by_one_loop(with_select):
    net, stats, search, select = net_and_data()
    report = bottleneck(net, *stats)
    sel = select if with_select else None
    d = ds.whole_space(net, report, search, sel, neurons=3)
    rows = one_by_one(net, report.expansions, search, sel)
    losses = [r[3] for r in rows]
    best = int(np.argmin(losses))
    assert d.expansion.key == rows[best][0].key
    assert d.gamma == pytest.approx(rows[best][2])
    assert d.loss == pytest.approx(losses[best], rel=1e-9)
    assert d.considered == len(report.expansions)
    assert d.compute.search > 0 and (d.compute.selection > 0) == with_select


def test_restricted_offers_only_expansions_into_the_max_psi_node():
    net, stats, search, select = net_and_data(1)
    report = bottleneck(net, *stats)
    psi = {v: float(r.bottleneck) for v, r in report.nodes.items()}
    a = max(psi, key=psi.get)
    assert ds.max_bottleneck_node(report) == a
    for node in ["a", "b", "out"]:
        offered = ds.restricted_expansions(net, report, node)
        feeders = set(net.in_edges(node))
        expected = [
            e
            for e in report.expansions
            if (e.kind != "widen" and e.target == node)
            or (e.kind == "widen" and (e.source == node or e.source in feeders))
        ]
        assert [e.key for e in offered] == [e.key for e in expected]
        assert offered  # every node here can be fed
    d = ds.bottleneck_restricted(net, report, search, select, neurons=3)
    rows = one_by_one(net, ds.restricted_expansions(net, report, a), search, select)
    best = int(np.argmin([r[3] for r in rows]))
    assert d.info["node"] == a
    assert d.expansion.key == rows[best][0].key
    assert d.considered == len(rows) < len(report.expansions)
    whole = ds.whole_space(net, report, search, select, neurons=3)
    assert d.compute.search < whole.compute.search
    assert d.compute.statistics == whole.compute.statistics


def test_bic_formula_and_sign_by_hand():
    k, n, mse = 37, 500, 0.04
    assert bic(k, mse, n, "mse") == pytest.approx(k * math.log(n) + n * math.log(mse))
    # lower loss, lower BIC (gromo 0.1.0's k log2 n - 2 log2(loss) has the opposite sign)
    assert bic(k, 0.01, n, "mse") < bic(k, 0.02, n, "mse")
    assert bic(k + 1, mse, n, "mse") > bic(k, mse, n, "mse")


def test_bic_restricted_picks_the_lowest_bic_and_grows_only_if_it_improves():
    net, stats, search, select = net_and_data(2)
    report = bottleneck(net, *stats)
    d = ds.bic_restricted(net, report, search, select, neurons=3, gate=True)
    a = ds.max_bottleneck_node(report)
    rows = one_by_one(net, ds.restricted_expansions(net, report, a), search, select)
    k = sum(p.numel() for p in net.parameters())
    x, y = select
    n = x.shape[0]
    with torch.no_grad():
        now = float(((net(x) - y) ** 2).sum(-1).mean())
    bic_now = k * math.log(n) + n * math.log(now / 2)  # MSE per output (2 outputs)
    after = [(k + c.added_parameters()) * math.log(n) + n * math.log(v / 2) for _, c, _, v in rows]
    best = int(np.argmin(after))
    assert d.info["bic_now"] == pytest.approx(bic_now)
    assert d.info["bic_after"] == pytest.approx(after[best])
    assert d.grows == (after[best] < bic_now)
    if d.grows:
        assert d.expansion.key == rows[best][0].key


def test_bic_restricted_refuses_growth_that_does_not_pay():
    # a linear target fitted exactly by the edge in -> out: no growth lowers the BIC
    g = torch.Generator().manual_seed(3)
    x = torch.rand(400, 4, generator=g, dtype=F64)
    y = x @ torch.randn(4, 1, generator=g, dtype=F64) + 0.5
    net = GrowingDAG(4, 1, edges=[("in", "out")], dtype=F64)
    sol = torch.linalg.lstsq(torch.cat([x, torch.ones(400, 1, dtype=F64)], 1), y).solution
    with torch.no_grad():
        net.weight("in", "out").copy_(sol[:4].T)
        net.bias("out").copy_(sol[4])
    y = y + 1e-3 * torch.randn(y.shape, generator=g, dtype=F64)
    report = bottleneck(net, x[:200], y[:200])
    search, select = (x[200:300], y[200:300]), (x[300:], y[300:])
    d = ds.bic_restricted(net, report, search, select, gate=True)
    assert not d.grows and d.candidate is None and math.isnan(d.gamma)
    assert d.info["bic_after"] >= d.info["bic_now"]
    assert d.considered > 0 and d.compute.total > 0
    # the paper's rule (default): the candidate of lowest BIC is grown all the same
    paper = ds.bic_restricted(net, report, search, select)
    assert paper.grows and paper.info["bic_after"] == pytest.approx(d.info["bic_after"])


def test_cheap_strategies():
    net, stats, search, _ = net_and_data(4)
    report = bottleneck(net, *stats)
    fog = [float(e.first_order_gain) for e in report.expansions]
    d = ds.greedy_first_order(net, report, search, neurons=3)
    assert d.expansion.key == report.expansions[int(np.argmax(fog))].key
    res = amplitude_search(net, d.candidate, *search)
    assert d.gamma == pytest.approx(float(res.gamma)) and d.considered == 1
    assert d.compute.search < ds.whole_space(net, report, search, neurons=3).compute.search
    assert ds.greedy_first_order(net, report).gamma == 1.0  # no search split: gamma 1
    r1 = ds.random_expansion(net, report, np.random.default_rng(5), search)
    r2 = ds.random_expansion(net, report, np.random.default_rng(5), search)
    assert r1.expansion.key == r2.expansion.key and r1.expansion in report.expansions
    for step in range(6):
        d = ds.round_robin(net, report, step)
        kind = KINDS[step % 3]
        same = [e for e in report.expansions if e.kind == kind]
        best = max(same, key=lambda e: float(e.first_order_gain))
        assert d.info["kind"] == kind and d.expansion.key == best.key


def test_cost_model_by_hand():
    net, stats, search, _ = net_and_data()
    # D = in 4 + a 3 + b 2 = 9 rows, O = a 3 + b 2 + out 2 = 7 columns
    fwd = 4 * 3 + 3 * 2 + 4 * 2 + 2 * 2 + 3 * 2
    assert net.macs() == fwd
    assert ds.statistics_macs(net, 10) == 10 * (2 * fwd + 10 * (10 + 7))
    report = bottleneck(net, *stats)
    e = report.expansion("edge", "in", "out")  # inputs: a, b, in, and the constant
    d = 3 + 2 + 4 + 1
    assert ds.solve_macs(e) == 10 * d**3 + d * d * 2
    c = report.expansion("node", "in", "b").candidate(2)  # changes b and out
    per = 2 * 4 + 2 * 2 + sum(w.numel() for w in c.update_weights.values())
    per += (4 + 3) * 2 + (3 + 2) * 2  # in-edges of b and of out
    assert ds.preview_macs(net, c) == per


def test_growth_from_the_empty_graph():
    _, stats, search, select = net_and_data(5)
    for name in ("whole", "restricted", "bic_restricted"):
        grown = GrowingDAG(4, 2, dtype=F64)
        for _ in range(3):
            report = bottleneck(grown, *stats)
            d = ds.STRATEGIES[name](grown, report, search, select, neurons=3)
            if d.grows:
                apply_growth(grown, d.candidate, d.gamma)
        assert grown.edges, name


def test_quick_experiment_runs_end_to_end(tmp_path):
    exp = load_experiment("dag_teacher")
    out = tmp_path / "run"
    res = exp.main(["--quick", "--out", str(out)])
    assert (out / "results.json").exists() and (out / "dag_teacher.png").exists()
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["summary"]["rows"]) == {"whole", "restricted", "bic_restricted", "oracle"}
    assert saved["results"]["oracle"]["0"]["final_params"] == 4651
    assert res["summary"]["rows"]["whole"]["final_params"][0] > 0
    assert "energy ratio" in (out / "table.md").read_text()
    with pytest.raises(SystemExit):
        exp.main(["--quick", "--out", str(out)])  # non-empty without --force
