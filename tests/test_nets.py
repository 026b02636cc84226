"""GrowingMLP: conversion, counts, growth with optimizer state, preview/apply, bad input."""

import pytest
import torch
from torch import nn

import growenv
from growenv.nets.mlp.net import GrowingMLP


def data(n=128, d=6, o=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, o, generator=g)


def test_sequential_round_trip_and_counts():
    seq = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    net = GrowingMLP.from_sequential(seq)
    x, _ = data()
    torch.testing.assert_close(net(x), seq(x))
    back = net.to_sequential()
    torch.testing.assert_close(back(x), seq(x))
    assert net.hidden_widths == [4, 3]
    assert net.num_parameters() == sum(p.numel() for p in seq.parameters()) == 28 + 15 + 8
    assert net.flops() == 6 * 4 + 4 * 3 + 3 * 2


@pytest.mark.parametrize(
    "activation", ["selu", "relu", "tanh", "sigmoid", nn.GELU(), nn.Softplus()]
)
def test_slope_at_zero_is_derived(activation):
    net = GrowingMLP(3, [2], 1, activation=activation)
    act = net.activation
    z = torch.tensor([1e-6], dtype=torch.float64)
    fd = float((act(z) - act(torch.zeros(1, dtype=torch.float64))) / 1e-6)
    assert net.slope0 == pytest.approx(fd, rel=1e-4)
    assert net.sigma0 == pytest.approx(float(act(torch.zeros(1))))


def test_zero_width_forward_and_growth():
    net = GrowingMLP(6, [0, 0], 2)
    x, y = data()
    out = net(x)
    # with empty hidden states the output is the last bias for every sample
    torch.testing.assert_close(out, net.biases[-1].detach().expand(128, 2))
    report = growenv.bottleneck(net, x, y)
    assert [s.width for s in report.sites] == [0, 0]


def candidate_for(net, x, y, site, k=2):
    return growenv.bottleneck(net, x, y).sites[site].candidate(k)


@pytest.mark.parametrize("activation", ["selu", "sigmoid"])
def test_preview_at_zero_equals_forward_and_apply_equals_preview(activation):
    g = torch.Generator().manual_seed(1)
    net = GrowingMLP(6, [3, 4], 2, activation=activation, generator=g)
    x, y = data()
    for site in range(2):
        cand = candidate_for(net, x, y, site)
        torch.testing.assert_close(growenv.extended_forward(net, cand, x, 0.0), net(x).detach())
        gammas = torch.tensor([0.0, 0.3, 1.7])
        many = growenv.extended_forward(net, cand, x, gammas)
        assert many.shape == (3, 128, 2)
        preview = growenv.extended_forward(net, cand, x, 0.3)
        torch.testing.assert_close(preview, many[1])
        grown = GrowingMLP.from_sequential(net.to_sequential())
        grown.activation = net.activation
        growenv.apply_growth(grown, cand, 0.3)
        torch.testing.assert_close(grown(x).detach(), preview, rtol=1e-5, atol=1e-5)
        assert grown.hidden_widths[site] == net.hidden_widths[site] + cand.num_neurons


def test_amplitude_search_is_argmin_of_real_loss():
    g = torch.Generator().manual_seed(2)
    net = GrowingMLP(6, [2, 2], 2, generator=g)
    x, y = data(seed=3)
    cand = candidate_for(net, x, y, 1)
    gammas = torch.tensor([0.0, 0.01, 0.1, 0.5, 1.0, 2.0])
    res = growenv.amplitude_search(net, cand, x, y, gammas=gammas)
    # independent evaluation: apply each gamma to a copy and compute the loss
    losses = []
    for gamma in gammas:
        copy = GrowingMLP.from_sequential(net.to_sequential())
        growenv.apply_growth(copy, cand, float(gamma))
        losses.append(float(((copy(x) - y) ** 2).sum(-1).mean().detach()))
    losses = torch.tensor(losses)
    torch.testing.assert_close(res.losses, losses, rtol=1e-5, atol=1e-6)
    assert float(res.gamma) == float(gammas[losses.argmin()])
    torch.testing.assert_close(res.loss_drop, losses[0] - losses.min(), rtol=1e-5, atol=1e-6)


def test_optimizer_state_survives_growth():
    g = torch.Generator().manual_seed(4)
    net = GrowingMLP(6, [3, 3], 2, generator=g)
    x, y = data()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        ((net(x) - y) ** 2).sum(-1).mean().backward()
        opt.step()
    w1 = net.weights[1]
    old_avg = opt.state[w1]["exp_avg"].clone()
    old_sq = opt.state[w1]["exp_avg_sq"].clone()
    step = opt.state[w1]["step"].clone()
    cand = candidate_for(net, x, y, 0, k=2)
    growenv.apply_growth(net, cand, 0.5, optimizer=opt)
    w1_after = net.weights[1]
    assert w1_after is w1  # same Parameter object: the optimizer still holds it
    st = opt.state[w1]
    assert st["exp_avg"].shape == (3, 5)
    torch.testing.assert_close(st["exp_avg"][:, :3], old_avg)
    torch.testing.assert_close(st["exp_avg_sq"][:, :3], old_sq)
    assert torch.all(st["exp_avg"][:, 3:] == 0) and torch.all(st["exp_avg_sq"][:, 3:] == 0)
    assert torch.equal(st["step"], step)
    # and training goes on with the grown net
    opt.zero_grad()
    ((net(x) - y) ** 2).sum(-1).mean().backward()
    opt.step()
    assert opt.state[net.weights[0]]["exp_avg"].shape == net.weights[0].shape


def test_sgd_momentum_survives_growth():
    net = GrowingMLP(6, [3], 2)
    x, y = data()
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.9)
    ((net(x) - y) ** 2).sum(-1).mean().backward()
    opt.step()
    cand = candidate_for(net, x, y, 0, k=1)
    growenv.apply_growth(net, cand, 0.5, optimizer=opt)
    assert opt.state[net.weights[0]]["momentum_buffer"].shape == (4, 6)


def test_bad_input_messages():
    net = GrowingMLP(6, [3, 3], 2)
    x, y = data()
    with pytest.raises(ValueError, match=r"x: expected shape \(n, 6\)"):
        growenv.bottleneck(net, x[:, :5], y)
    with pytest.raises(ValueError, match="y: expected shape"):
        growenv.bottleneck(net, x, y[:, :1])
    with pytest.raises(
        ValueError, match=r"^x: expected finite values .*, got nan at index \(3, 2\)"
    ):
        bad = x.clone()
        bad[3, 2] = float("nan")
        growenv.bottleneck(net, bad, y)
    with pytest.raises(ValueError, match="loss: expected one of"):
        growenv.bottleneck(net, x, y, loss="hinge")
    with pytest.raises(ValueError, match="cross_entropy"):
        growenv.bottleneck(net, x, y, loss="cross_entropy")
    report = growenv.bottleneck(net, x, y)
    with pytest.raises(ValueError, match="num_neurons: expected an int >= 1"):
        report.sites[0].candidate(0)
    with pytest.raises(ValueError, match="method"):
        report.sites[0].candidate(1, method="magic")
    with pytest.raises(ValueError, match="site: expected 0 <= site < 2"):
        net.check_site(2)
    with pytest.raises(ValueError, match="hidden\\[1\\]"):
        GrowingMLP(6, [3, -1], 2)
    with pytest.raises(TypeError, match=r"seq\[2\]: expected torch.nn.Linear"):
        GrowingMLP.from_sequential(nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Conv1d(3, 3, 1)))
    with pytest.raises(ValueError, match="ending with Linear"):
        GrowingMLP.from_sequential(nn.Sequential(nn.Linear(3, 3), nn.ReLU()))
    with pytest.raises(ValueError, match="activation: unknown name"):
        GrowingMLP(3, [2], 1, activation="swishy")
    stale = report.sites[0].candidate(1)
    growenv.apply_growth(net, report.sites[1].candidate(1), 0.1)
    with pytest.raises(ValueError, match="do not fit site 0"):
        growenv.apply_growth(net, stale, 0.1)
    with pytest.raises(ValueError, match="gammas"):
        fresh = growenv.bottleneck(net, x, y).sites[0].candidate(1)
        growenv.amplitude_search(net, fresh, x, y, gammas=torch.tensor([-1.0]))


def test_cross_entropy_and_callable_loss_agree():
    g = torch.Generator().manual_seed(5)
    net = GrowingMLP(6, [3, 3], 4, generator=g)
    x = torch.randn(100, 6, generator=g)
    labels = torch.randint(0, 4, (100,), generator=g)
    a = growenv.bottleneck(net, x, labels, loss="cross_entropy")

    def ce(out, y):
        return torch.nn.functional.cross_entropy(
            out.reshape(-1, out.shape[-1]), y.expand(out.shape[:-1]).reshape(-1), reduction="none"
        ).reshape(out.shape[:-1])

    b = growenv.bottleneck(net, x, labels, loss=ce)
    for sa, sb in zip(a.sites, b.sites):
        torch.testing.assert_close(sa.eigenvalues, sb.eigenvalues)
