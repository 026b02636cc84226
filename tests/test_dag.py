"""GrowingDAG and its expansions (Douka et al. 2025) against independent float64 references."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import growenv
from growenv.nets.dag import (
    GrowingDAG,
    amplitude_search,
    amplitude_search_many,
    apply_growth,
    bottleneck,
    dag_statistics,
    extended_forward,
    solve,
)
from growenv.nets.dag.net import descendants, topological_order
from tests.experiment_scripts import load_experiment

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64
SLOPE_SELU = 1.0507009873554805


def skip_dag(seed: int = 0, dtype: torch.dtype = F64, activation: str = "selu") -> GrowingDAG:
    """in -> a -> b -> out with skips in -> b and a -> out, and an unrelated node c."""
    g = torch.Generator().manual_seed(seed)
    return GrowingDAG(
        4,
        3,
        nodes={"a": 5, "b": 3, "c": 2},
        edges=[("in", "a"), ("a", "b"), ("in", "b"), ("b", "out"), ("a", "out"), ("in", "c")],
        activation=activation,
        dtype=dtype,
        generator=g,
    )


def data(n: int = 200, d_in: int = 4, d_out: int = 3, seed: int = 1, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g, dtype=dtype)
    y = torch.sin(x @ torch.randn(d_in, d_out, generator=g, dtype=dtype)) + 0.1 * x[:, :1]
    return x, y


# ------------------------------------------------------------------ independent reference
def reference(net: GrowingDAG, x: torch.Tensor, y: torch.Tensor):
    """Post-activations and v = -dl_i/da per node, from an explicit autograd forward."""
    # x requires grad so that every pre-activation is in the graph: d loss / d a_v sums
    # every path from v to the output
    post2, a2 = {"in": x.detach().clone().requires_grad_(True)}, {}
    for v in net.nodes:
        if v == "in":
            continue
        a = net.bias(v).detach().expand(x.shape[0], -1)
        for u in net.in_edges(v):
            a = a + post2[u] @ net.weight(u, v).detach().T
        a2[v] = a
        post2[v] = a2[v] if v == "out" else torch.nn.functional.selu(a2[v])
    loss = ((post2["out"] - y) ** 2).sum()
    names = list(a2)
    grads = torch.autograd.grad(loss, [a2[v] for v in names], allow_unused=True)
    vgoal = {v: (-g if g is not None else torch.zeros_like(a2[v])) for v, g in zip(names, grads)}
    acts = {u: t.detach() for u, t in post2.items() if u != "out"}
    return acts, vgoal


def ones_col(*blocks: torch.Tensor) -> torch.Tensor:
    b = torch.cat(blocks, 1) if blocks else None
    n = blocks[0].shape[0]
    one = torch.ones(n, 1, dtype=blocks[0].dtype)
    return torch.cat([b, one], 1) if b is not None else one


def projection(b: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares fit of v on b (explicit lstsq): gain d = ||B theta||^2 / n, residual."""
    theta = torch.linalg.lstsq(b, v, driver="gelsd").solution
    fit = b @ theta
    return fit.pow(2).sum() / b.shape[0], v - fit


def tiny_svd(b: torch.Tensor, resid: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    s = b.T @ b / n
    ev, vec = torch.linalg.eigh(s)
    keep = ev > 1e-12 * ev.max()
    isq = (vec[:, keep] / ev[keep].sqrt()) @ vec[:, keep].T
    return torch.linalg.svdvals(isq @ (b.T @ resid / n))


def expected_expansions(net: GrowingDAG, x, y):
    acts, vgoal = reference(net, x, y)
    srcs = {v: net.in_edges(v) for v in net.nodes if v != "in"}
    d, res = {}, {}
    for v in srcs:
        d[v], res[v] = projection(ones_col(*[acts[s] for s in srcs[v]] or [x[:, :0]]), vgoal[v])
    out = {}
    for v in srcs:
        for u in acts:
            if v == u or u in descendants(v, net.edges) or net.nodes[v] == 0:
                continue
            if (u, v) not in net.edges and net.nodes[u] > 0:
                b = ones_col(*[acts[s] for s in srcs[v]], acts[u])
                out[("edge", u, v)] = (projection(b, vgoal[v])[0], None)
            lam = tiny_svd(ones_col(acts[u]), res[v])
            out[("node", u, v)] = (d[v], lam)
    for w in net.hidden_nodes:
        tg = net.out_edges(w)
        if not tg:
            continue
        b = ones_col(*[acts[s] for s in srcs[w]] or [x[:, :0]])
        lam = tiny_svd(b, torch.cat([res[t] for t in tg], 1))
        out[("widen", w, None)] = (sum(d[t] for t in tg), lam)
    psi = {v: vgoal[v].pow(2).sum() / x.shape[0] - d[v] for v in srcs}
    return out, psi


@pytest.mark.parametrize("seed", [0, 1])
def test_every_expansion_against_float64_reference(seed):
    net = skip_dag(seed)
    x, y = data(seed=seed + 5)
    report = bottleneck(net, x, y)
    expected, psi = expected_expansions(net, x, y)
    assert {e.key for e in report.expansions} == set(expected)
    for e in report.expansions:
        d, lam = expected[e.key]
        torch.testing.assert_close(e.update_gain, d, rtol=1e-7, atol=1e-10, msg=str(e.key))
        if lam is None:
            assert e.eigenvalues.numel() == 0
            torch.testing.assert_close(e.first_order_gain, d, rtol=1e-7, atol=1e-10)
            continue
        r = min(lam.shape[0], e.eigenvalues.shape[0])
        assert e.eigenvalues.shape[0] == lam.shape[0], e.key
        torch.testing.assert_close(e.eigenvalues[:r], lam[:r], rtol=1e-6, atol=1e-9)
        k = int((lam >= 1e-3).sum().clamp(min=1 if bool((lam > 0).any()) else 0))
        fo = d + SLOPE_SELU * lam[:k].pow(2).sum()
        torch.testing.assert_close(e.first_order_gain, fo, rtol=1e-6, atol=1e-9, msg=str(e.key))
    for v, node in report.nodes.items():
        torch.testing.assert_close(node.bottleneck, psi[v].clamp(min=0), rtol=1e-7, atol=1e-9)


def test_chain_matches_growing_mlp():
    torch.manual_seed(3)
    mlp = growenv.GrowingMLP(4, [5, 3], 2, dtype=F64)
    dag = GrowingDAG.from_sequential(mlp.to_sequential())
    assert list(dag.nodes) == ["in", "h1", "h2", "out"]
    x, y = data(150, 4, 2, seed=2)
    torch.testing.assert_close(dag(x), mlp(x))
    mrep = growenv.bottleneck(mlp, x, y)
    drep = bottleneck(dag, x, y)
    for j, node in enumerate(["h1", "h2"]):
        site, e = mrep.sites[j], drep.expansion("widen", node)
        torch.testing.assert_close(e.eigenvalues, site.eigenvalues, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(e.update_gain, site.update_gain, rtol=1e-7, atol=1e-10)
        torch.testing.assert_close(e.first_order_gain, site.first_order_gain, rtol=1e-6, atol=1e-9)
        target = ["h2", "out"][j]
        torch.testing.assert_close(drep.nodes[target].bottleneck, site.bottleneck)
        # the same grown net, through either family
        m2, d2 = copy.deepcopy(mlp), copy.deepcopy(dag)
        growenv.apply_growth(m2, site.candidate(2), 0.5)
        apply_growth(d2, e.candidate(2), 0.5)
        torch.testing.assert_close(d2(x), m2(x))


def all_candidates(report, k=2):
    return [e.candidate(k) for e in report.expansions]


def test_preview_at_zero_and_apply_equal_preview():
    net = skip_dag(4)
    x, y = data(seed=7)
    report = bottleneck(net, x, y)
    plain = net(x).detach()
    for e in report.expansions:
        cand = e.candidate(2)
        torch.testing.assert_close(extended_forward(net, x, cand, 0.0), plain, rtol=0, atol=0)
        grown = copy.deepcopy(net)
        new = apply_growth(grown, cand, 0.37)
        torch.testing.assert_close(
            grown(x), extended_forward(net, x, cand, 0.37), rtol=1e-12, atol=1e-12
        )
        assert (new is not None) == (e.kind == "node")
        gs = torch.tensor([0.0, 0.1, 2.0], dtype=F64)
        many = extended_forward(net, x, cand, gs)
        torch.testing.assert_close(many[2], extended_forward(net, x, cand, 2.0))


def test_non_odd_activation_is_continuous_in_gamma():
    g = torch.Generator().manual_seed(0)
    net = GrowingDAG(3, 2, {"a": 2}, [("in", "a"), ("a", "out")], "sigmoid", dtype=F64, generator=g)
    x, y = data(80, 3, 2)
    report = bottleneck(net, x, y)
    for e in report.expansions:
        cand = e.candidate(1)
        torch.testing.assert_close(extended_forward(net, x, cand, 0.0), net(x).detach())
        grown = copy.deepcopy(net)
        apply_growth(grown, cand, 0.8)
        torch.testing.assert_close(grown(x), extended_forward(net, x, cand, 0.8))


def mean_loss(out, y):
    return ((out - y) ** 2).sum(-1).mean()


def test_small_gamma_loss_change_matches_first_order_gain():
    # tanh is smooth at 0 (for SELU/ReLU the slope sigma'(0+) is used, as in TINY and
    # gromo, and the loss is not differentiable in gamma there)
    net = skip_dag(2, activation="tanh")
    x, y = data(seed=3)
    report = bottleneck(net, x, y)
    base = mean_loss(net(x), y).detach()
    gamma = 1e-6
    for e in report.expansions:
        cand = e.candidate(2)
        change = (mean_loss(extended_forward(net, x, cand, gamma), y) - base) / gamma
        # -dL/dgamma: the edge's gain is TINY's first-order gain itself (the new edge is part
        # of the linear update); new neurons add sigma'(0) <P, A^T Omega^T>, P = E[B v^T]
        exact = e.first_order_gain if e.kind == "edge" else e.linear_gain(2)
        assert float(change) == pytest.approx(-float(exact), rel=1e-4, abs=1e-8), e.key
        no_update = e.candidate(2, with_update=False)
        change = (mean_loss(extended_forward(net, x, no_update, gamma), y) - base) / gamma
        exact = e.linear_gain(2, with_update=False)
        assert float(change) == pytest.approx(-float(exact), rel=1e-4, abs=1e-8), e.key


def test_batched_gamma_search_matches_single_and_apply():
    net = skip_dag(1)
    x, y = data(seed=9)
    report = bottleneck(net, x, y)
    cands = all_candidates(report)
    many = amplitude_search_many(net, cands, x, y, chunk_elements=5000)  # several chunks
    for cand, res in zip(cands, many):
        one = amplitude_search(net, cand, x, y)
        torch.testing.assert_close(res.losses, one.losses)
        assert float(res.loss_drop) >= 0
        grown = copy.deepcopy(net)
        apply_growth(grown, cand, res.gamma)
        torch.testing.assert_close(mean_loss(grown(x), y), res.losses.min(), rtol=1e-10, atol=0)


def test_growth_from_empty_graph():
    net = GrowingDAG(4, 3, dtype=F64)
    x, y = data(seed=11)
    torch.testing.assert_close(net(x), torch.zeros(200, 3, dtype=F64))
    report = bottleneck(net, x, y)
    assert {e.key for e in report.expansions} == {("edge", "in", "out"), ("node", "in", "out")}
    losses = [float(report.loss)]
    kinds = set()
    for _ in range(6):
        cands = [e.candidate(2) for e in report.expansions]
        res = amplitude_search_many(net, cands, x, y)
        best = max(range(len(cands)), key=lambda i: float(res[i].loss_drop))
        kinds.add(cands[best].kind)
        apply_growth(net, cands[best], res[best].gamma)
        report = bottleneck(net, x, y)
        losses.append(float(report.loss))
    assert all(b <= a + 1e-12 for a, b in zip(losses, losses[1:]))
    assert losses[-1] < 0.7 * losses[0]
    assert net.hidden_nodes, net.describe()
    assert list(net.nodes)[0] == "in" and list(net.nodes)[-1] == "out"


def test_no_expansion_creates_a_cycle():
    torch.manual_seed(0)
    x, y = data(60, 3, 2, seed=4)
    net = GrowingDAG(3, 2, dtype=F64)
    g = torch.Generator().manual_seed(5)
    for _ in range(10):
        report = bottleneck(net, x, y)
        for e in report.expansions:
            if e.kind in ("edge", "node"):
                assert e.source not in descendants(e.target, net.edges)
                assert e.target != "in" and e.source != "out"
            if e.kind == "edge":
                assert (e.source, e.target) not in net.edges
        pick = report.expansions[int(torch.randint(len(report.expansions), (1,), generator=g))]
        apply_growth(net, pick.candidate(1), 0.5)
        topological_order(list(net.nodes), net.edges)  # raises on a cycle
    with pytest.raises(ValueError, match="would create a cycle"):
        b = GrowingDAG(2, 1, {"a": 1, "b": 1}, [("in", "a"), ("a", "b")])
        b.add_edge("b", "a")


def test_growth_keeps_optimizer_state():
    net = skip_dag(0, torch.float32)
    x, y = data(64, dtype=torch.float32)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        mean_loss(net(x), y).backward()
        opt.step()
    w_ab = net.weight("a", "b")
    before = opt.state[w_ab]["exp_avg"].clone()
    report = bottleneck(net, x, y)
    apply_growth(net, report.expansion("widen", "a").candidate(2), 0.1, optimizer=opt)
    state = opt.state[w_ab]["exp_avg"]
    assert state.shape == w_ab.shape == (3, 7)
    torch.testing.assert_close(state[:, :5], before)
    assert bool((state[:, 5:] == 0).all())
    n_params = len(opt.param_groups[0]["params"])
    report = bottleneck(net, x, y)
    new = apply_growth(net, report.expansion("node", "in", "out").candidate(2), 0.1, opt)
    with pytest.raises(ValueError, match="in-edges of 'out' changed"):
        apply_growth(net, report.expansion("edge", "c", "out").candidate(), 0.1, opt)
    report = bottleneck(net, x, y)
    apply_growth(net, report.expansion("edge", "c", "out").candidate(), 0.1, opt)
    assert len(opt.param_groups[0]["params"]) == n_params + 4
    ids = {id(p) for p in opt.param_groups[0]["params"]}
    assert id(net.bias(new)) in ids and id(net.weight("c", "out")) in ids
    assert {id(p) for p in net.parameters()} <= ids
    opt.zero_grad()
    mean_loss(net(x), y).backward()
    opt.step()


def test_counts_and_description():
    net = skip_dag(0)
    e = net.edges
    assert net.macs() == sum(net.nodes[v] * net.nodes[u] for u, v in e)
    assert net.num_parameters() == net.macs() + 5 + 3 + 2 + 3
    text = net.describe()
    assert "b [3] <- in, a" in text and text.splitlines()[-1].strip().startswith("out [3]")
    assert net.weight("a", "b").shape == (3, 5) and net.bias("b").shape == (3,)
    cand = bottleneck(net, *data()).expansion("node", "c", "out").candidate(2)
    assert cand.added_parameters() == 2 * (2 + 1) + 3 * 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"edges": [("in", "zz")]}, r"edge target: unknown node 'zz'"),
        ({"edges": [("in", "a"), ("in", "a")]}, r"duplicate edge 'in' -> 'a'"),
        ({"edges": [("a", "b"), ("b", "a")]}, r"cycle"),
        ({"edges": [("a", "in")]}, r"no edge may enter 'in'"),
        ({"edges": [("out", "a")]}, r"no edge may leave 'out'"),
        ({"nodes": {"a": -1}}, r"width of node 'a': expected an int >= 0"),
        ({"edges": [("a", "a")]}, r"self-loop"),
    ],
)
def test_bad_input_has_one_line_error(kwargs, match):
    args = {"nodes": {"a": 2, "b": 2}, "edges": []} | kwargs
    with pytest.raises(ValueError, match=match) as info:
        GrowingDAG(3, 1, **args)
    assert "\n" not in str(info.value)


def test_bad_verbs_have_one_line_errors():
    net = GrowingDAG(3, 1, {"a": 2}, [("in", "a"), ("a", "out")])
    cases = [
        (lambda: net.weight("in", "out"), "no such edge"),
        (lambda: net.add_edge("in", "a"), "already exists"),
        (lambda: net.add_node("a", 2), "already exists"),
        (lambda: net.bias("in"), "has no bias"),
        (lambda: net.add_edge("in", "out", torch.zeros(2, 2)), r"weight: expected shape \(1, 3\)"),
        (lambda: net.widen("out", {}, torch.zeros(1), {}), "only hidden nodes"),
        (lambda: net.widen("a", {}, torch.zeros(1), {}), r"expected in_weights for \['in'\]"),
        (lambda: net.add_node("b", -2), "expected an int >= 0"),
        (lambda: net.bias("zz"), "unknown node 'zz'"),
    ]
    for fn, match in cases:
        with pytest.raises(ValueError, match=match) as info:
            fn()
        assert "\n" not in str(info.value)
    with pytest.raises(NotImplementedError, match="add_edge, add_node and widen"):
        net.grow(0, None, None, None)
    x, y = data(30, 3, 1)
    cand = bottleneck(net, x, y).expansion("widen", "a").candidate(1)
    apply_growth(net, cand, 0.1)
    with pytest.raises(ValueError, match="was the net grown"):
        extended_forward(net, x, cand, 0.1)


def test_from_sequential_and_leading_dims():
    seq = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    net = GrowingDAG.from_sequential(seq)
    x = torch.randn(2, 5, 3, dtype=F64)
    torch.testing.assert_close(net(x), seq(x))
    # the solve is a pure function of statistics with leading dimensions
    net = skip_dag(6)
    (x1, y1), (x2, y2) = data(seed=1), data(seed=2)
    s1, s2 = dag_statistics(net, x1, y1), dag_statistics(net, x2, y2)
    stacked = copy.copy(s1)
    stacked.covariance = torch.stack([s1.covariance, s2.covariance])
    stacked.cross = torch.stack([s1.cross, s2.cross])
    stacked.vv = {v: torch.stack([s1.vv[v], s2.vv[v]]) for v in s1.vv}
    _, both = solve(stacked, net.slope0)
    for i, s in enumerate([s1, s2]):
        _, one = solve(s, net.slope0)
        for a, b in zip(both, one):
            assert a.key == b.key
            torch.testing.assert_close(a.eigenvalues[i], b.eigenvalues)
            torch.testing.assert_close(a.first_order_gain[i], b.first_order_gain)


def test_float32_and_streamed_statistics_agree_with_float64():
    net32 = skip_dag(8, torch.float32)
    net64 = copy.deepcopy(net32).double()
    x, y = data(seed=12)
    r64 = bottleneck(net64, x, y)
    r32 = bottleneck(net32, x.float(), y.float())
    streamed = bottleneck(net64, x, y, batch_size=64)
    for a, b, c in zip(r32.expansions, r64.expansions, streamed.expansions):
        assert a.key == b.key == c.key
        assert a.first_order_gain.dtype == torch.float32
        scale = float(b.first_order_gain.abs()) + 1e-3
        assert abs(float(a.first_order_gain) - float(b.first_order_gain)) <= 1e-3 * scale, a.key
        torch.testing.assert_close(c.first_order_gain, b.first_order_gain, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(c.eigenvalues, b.eigenvalues, rtol=1e-8, atol=1e-10)


def test_cross_entropy_loss():
    g = torch.Generator().manual_seed(0)
    net = GrowingDAG(4, 3, {"a": 3}, [("in", "a"), ("a", "out")], dtype=F64, generator=g)
    x, _ = data(seed=13)
    labels = torch.randint(3, (200,), generator=g)
    report = bottleneck(net, x, labels, loss="cross_entropy")
    cands = [e.candidate(1) for e in report.expansions]
    results = amplitude_search_many(net, cands, x, labels, loss="cross_entropy")
    assert all(float(r.loss_drop) >= 0 for r in results)
    assert max(float(r.loss_drop) for r in results) > 0


def test_bench_decision_is_the_best_of_an_exhaustive_loop():
    bench = load_experiment("bench_dag")
    data = bench.load_task(quick=True)
    nets = [bench.grown_graph(data, 2), bench.student_graph(data, 20)]
    (xv, yv) = data["val"]
    for net in nets:
        d = bench.growenv_decision(net, data)
        report = bottleneck(net, *data["train"])
        assert d["num_candidates"] == len(report.expansions) > 1
        best, best_loss = None, float("inf")
        for e in report.expansions:  # one candidate, one search at a time
            res = amplitude_search(net, e.candidate(bench.NEURONS), xv, yv)
            if float(res.losses.min()) < best_loss:
                best, best_loss = e.key, float(res.losses.min())
        assert d["key"] == best
        assert d["val_loss"] == pytest.approx(best_loss, rel=1e-5)
        grown = copy.deepcopy(net)
        apply_growth(grown, d["candidates"][d["best"]], d["gamma"])
        assert float(mean_loss(grown(xv).detach(), yv)) == pytest.approx(d["val_loss"], rel=1e-4)


def test_depth_dot_and_drawing():
    net = skip_dag(0)  # in -> a -> b -> out, in -> b, a -> out, in -> c
    assert net.depth() == {"in": 0, "a": 1, "c": 1, "b": 2, "out": 3}
    dot = net.to_dot()
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    for u, v in net.edges:
        assert f'"{u}" -> "{v}" [label="{net.nodes[v]}x{net.nodes[u]}"];' in dot
    assert dot.count(" -> ") == len(net.edges)
    ax = net.draw()
    labels = sorted(t.get_text() for t in ax.texts if t.get_text())
    assert labels == sorted(f"{v} [{w}]" for v, w in net.nodes.items())
    assert sum(1 for t in ax.texts if not t.get_text()) == len(net.edges)  # one arrow each
    empty = GrowingDAG(3, 2).draw()  # in and out only: out one column right of in
    pos = {t.get_text(): t.get_position() for t in empty.texts if t.get_text()}
    assert pos["out [2]"][0] > pos["in [3]"][0]
