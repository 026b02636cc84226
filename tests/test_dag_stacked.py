"""StackedDAG: E DAGs of different shapes trained as one batched model equal separate training."""

from __future__ import annotations

import copy

import pytest
import torch

from growenv.losses import resolve_loss
from growenv.nets.dag.net import GrowingDAG
from growenv.nets.dag.stacked import StackedDAG
from growenv.training import make_optimizer, train_steps


def _nets(dtype: torch.dtype) -> list[tuple[GrowingDAG, torch.optim.Optimizer]]:
    """Three graphs: empty, a chain, and one whose topological order differs from creation
    order (h2 feeds h1), with Adam state from earlier training and a fresh new edge."""
    g = torch.Generator().manual_seed(0)
    empty = GrowingDAG(5, 2, dtype=dtype, generator=g)
    chain = GrowingDAG(5, 2, {"h1": 3}, [("in", "h1"), ("h1", "out")], dtype=dtype, generator=g)
    mixed = GrowingDAG(
        5,
        2,
        {"h1": 4, "h2": 2},
        [("in", "h2"), ("h2", "h1"), ("h1", "out"), ("in", "out")],
        dtype=dtype,
        generator=g,
    )
    out = []
    x = torch.randn(64, 5, generator=g, dtype=dtype)
    y = torch.randn(64, 2, generator=g, dtype=dtype)
    for net in (empty, chain, mixed):
        opt = make_optimizer(net, "adam", lr=1e-2)
        train_steps(net, opt, x, y, "mse", 3, 16, torch.Generator().manual_seed(1))
        out.append((net, opt))
    # a new edge after training: its own (fresh) Adam step count
    mixed.add_edge("h2", "out", torch.full((2, 2), 0.1, dtype=dtype), optimizer=out[2][1])
    return out


# float32: the batched matmul sums a node's in-edges in one product, GrowingDAG one product
# per edge; the different order of the float sums gives differences of a few ulps
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_stacked_training_equals_separate(dtype, tol):
    pairs = _nets(dtype)
    alone = copy.deepcopy(pairs)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 50, 5, generator=g, dtype=dtype)
    y = torch.randn(3, 50, 2, generator=g, dtype=dtype)
    steps, bs = 7, 16
    losses, draws = [], []
    for e, (net, opt) in enumerate(alone):  # train_steps draws its minibatches first
        draws.append(torch.randint(0, 50, (steps, bs), generator=torch.Generator().manual_seed(e)))
        gen = torch.Generator().manual_seed(e)
        losses.append(train_steps(net, opt, x[e], y[e], "mse", steps, bs, gen))
    idx = torch.stack(draws)
    stack = StackedDAG([n for n, _ in pairs], [o for _, o in pairs])
    rows = torch.arange(3).view(-1, 1, 1)
    mean, per_step = stack.train(x[rows, idx], y[rows, idx], resolve_loss("mse"))
    stack.write_back()
    assert per_step.shape == (steps, 3)
    torch.testing.assert_close(mean, torch.stack(losses).to(dtype), rtol=tol, atol=tol)
    for (net, opt), (ref, ref_opt) in zip(pairs, alone, strict=True):
        assert net.nodes == ref.nodes and net.edges == ref.edges
        for p, q in zip(net.parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=tol, atol=tol)
            s, r = opt.state[p], ref_opt.state[q]
            assert float(s["step"]) == float(r["step"])
            for key in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(s[key], r[key], rtol=tol, atol=tol * 1e-3)
        xt = x[0, :8]
        torch.testing.assert_close(net(xt), ref(xt), rtol=tol, atol=tol)


def test_stacked_forward_equals_nets():
    pairs = _nets(torch.float64)
    stack = StackedDAG([n for n, _ in pairs], [o for _, o in pairs])
    x = torch.randn(3, 9, 5, dtype=torch.float64)
    out = stack.forward(x)
    for e, (net, _) in enumerate(pairs):
        torch.testing.assert_close(out[e], net(x[e]), rtol=1e-12, atol=1e-12)
