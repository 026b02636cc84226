"""The TINY statistics and solver against an independent float64 computation."""

import pytest
import torch

import growenv
from growenv.nets.mlp.net import GrowingMLP

torch.set_default_dtype(torch.float32)


def make_problem(
    widths, n=400, in_features=7, out_features=3, seed=0, activation="selu", dtype=torch.float32
):
    g = torch.Generator().manual_seed(seed)
    net = GrowingMLP(in_features, widths, out_features, activation=activation, generator=g)
    x = torch.randn(n, in_features, generator=g)
    y = torch.randn(n, out_features, generator=g)
    return net.to(dtype), x.to(dtype), y.to(dtype)


# float64 nets must agree with the naive computation to rounding; float32 ones to 1e-3
# relative (statistics accumulated in float32), measured against the largest eigenvalue.
TOL = {torch.float64: 1e-8, torch.float32: 1e-3}


def naive_site(net, x, y, site, loss="mse", rtol=0.0):
    """Per-sample float64 computation of the TINY quantities for one site, from scratch."""
    ws = [w.detach().double() for w in net.weights]
    bs = [b.detach().double() for b in net.biases]
    act = net.activation
    n = x.shape[0]
    xd = x.double()
    y = y if not y.is_floating_point() else y.double()
    # per-sample forward with explicit layer inputs and per-sample pre-activation gradients
    b_in = {site: [], site + 1: []}
    v_next = []
    for i in range(n):
        h = xd[i]
        pres, ins = [], []
        for layer, (w, b) in enumerate(zip(ws, bs)):
            ins.append(h)
            a = (w @ h + b).detach().requires_grad_(True)
            pres.append(a)
            h = act(a) if layer < len(ws) - 1 else a
            # rebuild graph from this pre-activation onwards
        # recompute the loss as a function of the pre-activation of layer site + 1
        a_next = pres[site + 1].detach().requires_grad_(True)
        h = a_next
        for layer in range(site + 2, len(ws)):
            h = ws[layer] @ act(h) + bs[layer]
        if loss == "mse":
            li = ((h - y[i].double()) ** 2).sum()
        else:
            li = torch.nn.functional.cross_entropy(h[None], y[i : i + 1])
        (g,) = torch.autograd.grad(li, a_next)
        v_next.append(-g)
        b_in[site].append(torch.cat([ins[site], torch.ones(1, dtype=torch.float64)]))
        b_in[site + 1].append(torch.cat([ins[site + 1], torch.ones(1, dtype=torch.float64)]))
    B0 = torch.stack(b_in[site])  # (n, d_j + 1): inputs of layer j (new neurons' inputs)
    B1 = torch.stack(b_in[site + 1])  # (n, d_{j+1} + 1): inputs of layer j + 1
    V = torch.stack(v_next)  # (n, out_{j+1})
    # best update by least squares: min ||V - B1 dW^T||^2
    # (singular values of B1 below sqrt(rtol) * largest are cut: eigenvalues of S = B1^T B1 / n
    # below rtol * largest, the solver's cut-off for statistics of that precision)
    dW = torch.linalg.lstsq(B1, V, rcond=rtol**0.5 or None, driver="gelsd").solution.T
    fit = B1 @ dW.T
    d = (V * fit).sum() / n
    Vp = V - fit
    psi = (Vp**2).sum() / n
    S = B0.T @ B0 / n
    N = B0.T @ Vp / n
    evals, evecs = torch.linalg.eigh(S)
    keep = evals > max(rtol, 1e-13) * evals[-1]
    isqrt = evecs[:, keep] @ torch.diag(evals[keep].rsqrt()) @ evecs[:, keep].T
    u, lam, vh = torch.linalg.svd(isqrt @ N, full_matrices=False)
    out = dict(dW=dW, d=d, psi=psi, lam=lam, isqrt=isqrt, u=u, vh=vh, B0=B0, Vp=Vp)
    return {key: value.detach() for key, value in out.items()}


CASES = [([5, 3, 6], "selu"), ([4], "relu"), ([1, 1], "selu")]
# 9 tanh units of a 2-unit state: S of the last layer has condition number ~3e7, beyond
# what statistics summed in float32 resolve, so that case is checked in float64 only.
ILL_CONDITIONED = [([2, 9], "tanh")]


@pytest.mark.parametrize(
    "widths,activation,dtype",
    [(*case, torch.float64) for case in CASES + ILL_CONDITIONED]
    + [(*case, torch.float32) for case in CASES],
)
def test_sites_match_float64_naive(widths, activation, dtype):
    net, x, y = make_problem(widths, activation=activation, seed=len(widths), dtype=dtype)
    report = growenv.bottleneck(net, x, y, loss="mse")
    assert len(report.sites) == len(widths)
    tol = TOL[dtype]
    for site in range(len(widths)):
        ref = naive_site(net, x, y, site, rtol=1e-6 if dtype == torch.float32 else 0.0)
        s = report.sites[site]
        assert s.eigenvalues.dtype == dtype
        r = min(ref["lam"].numel(), s.eigenvalues.numel())
        assert r == s.eigenvalues.numel()
        lam_scale = float(ref["lam"][0])
        # eigenvalues that are zero in exact arithmetic come out at rounding level times the
        # conditioning of S^{-1/2}: compare them on the scale of the largest one
        torch.testing.assert_close(
            s.eigenvalues[:r].double(), ref["lam"][:r], rtol=tol, atol=max(tol, 1e-5) * lam_scale
        )
        torch.testing.assert_close(s.update_gain.double(), ref["d"], rtol=tol, atol=tol * 1e-2)
        torch.testing.assert_close(s.bottleneck.double(), ref["psi"], rtol=tol, atol=tol * 1e-2)
        dW = torch.cat([s.update_weight, s.update_bias[:, None]], 1).double()
        torch.testing.assert_close(dW, ref["dW"], rtol=10 * tol, atol=10 * tol)
        k = int(s.num_significant)
        expected = ref["d"] + net.slope0 * (ref["lam"][:k] ** 2).sum()
        torch.testing.assert_close(
            s.first_order_gain.double(), expected, rtol=tol, atol=tol * lam_scale**2
        )


def test_cross_entropy_matches_naive():
    g = torch.Generator().manual_seed(3)
    net = GrowingMLP(6, [4, 5], 4, generator=g)
    x = torch.randn(300, 6, generator=g)
    y = torch.randint(0, 4, (300,), generator=g)
    report = growenv.bottleneck(net, x, y, loss="cross_entropy")
    for site in range(2):
        ref = naive_site(net, x, y, site, loss="cross_entropy")
        torch.testing.assert_close(
            report.sites[site].eigenvalues.double()[:3], ref["lam"][:3], rtol=1e-4, atol=1e-6
        )
        torch.testing.assert_close(
            report.sites[site].update_gain.double(), ref["d"], rtol=1e-4, atol=1e-7
        )


def test_new_neurons_lower_bottleneck_by_sum_of_squared_eigenvalues():
    net, x, y = make_problem([4, 6], n=500, seed=7)
    report = growenv.bottleneck(net, x, y)
    site = 0
    ref = naive_site(net, x, y, site)
    s = report.sites[site]
    for k in (1, 2, 3):
        cand = s.candidate(k)
        A = torch.cat([cand.in_weight, cand.in_bias[:, None]], 1).double()  # (K, d+1)
        Om = cand.out_weight.double()  # (out, K)
        # linearised contribution of the new neurons: Omega A^T b
        resid = ref["Vp"] - ref["B0"] @ A.T @ Om.T
        psi_after = (resid**2).sum() / x.shape[0]
        expected = ref["psi"] - (ref["lam"][:k] ** 2).sum()
        torch.testing.assert_close(psi_after, expected, rtol=1e-4, atol=1e-6)


def test_linear_gain_matches_finite_difference():
    # tanh is smooth at 0; for kinked activations (SELU, ReLU) sigma'(0+) is used, as in
    # TINY and gromo, and the loss is not differentiable in gamma there
    net, x, y = make_problem([5, 4], n=600, seed=11, activation="tanh")
    report = growenv.bottleneck(net, x, y)
    for site in range(2):
        s = report.sites[site]
        cand = s.candidate(2)
        net64 = GrowingMLP.from_sequential(net.to_sequential().double())
        eps = 1e-5
        cand64 = growenv.GrowthCandidate(
            site,
            cand.in_weight.double(),
            cand.in_bias.double(),
            cand.out_weight.double(),
            cand.update_weight.double(),
            cand.update_bias.double(),
            cand.eigenvalues.double(),
        )
        out = growenv.extended_forward(net64, cand64, x.double(), torch.tensor([0.0, eps]).double())
        losses = ((out - y.double()) ** 2).sum(-1).mean(-1)
        slope = (losses[0] - losses[1]) / eps
        torch.testing.assert_close(slope, s.linear_gain(2).double(), rtol=2e-3, atol=1e-6)
        # the update alone: its slope is exactly the update gain d
        cand64.in_weight.zero_()
        cand64.out_weight.zero_()
        out = growenv.extended_forward(net64, cand64, x.double(), torch.tensor([0.0, eps]).double())
        losses = ((out - y.double()) ** 2).sum(-1).mean(-1)
        torch.testing.assert_close(
            (losses[0] - losses[1]) / eps, s.update_gain.double(), rtol=2e-3, atol=1e-6
        )


def test_layer_updates_include_first_layer():
    net, x, y = make_problem([3, 3], seed=5)
    report = growenv.bottleneck(net, x, y)
    assert report.layers.update_gain.shape == (3,)
    # layer 0's best update equals least squares of v_0 on [x, 1]
    xb = torch.cat([x, torch.ones(x.shape[0], 1)], 1).double()
    xx = x.clone().requires_grad_(True)
    a0 = torch.nn.functional.linear(xx, net.weights[0], net.biases[0])
    a0.retain_grad()
    out = net.forward_suffix(a0, 0)
    ((out - y) ** 2).sum().backward()
    v0 = -a0.grad.double()
    dW = torch.linalg.lstsq(xb, v0).solution.T
    got = torch.cat([report.layers.update_weight[0], report.layers.update_bias[0][:, None]], 1)
    torch.testing.assert_close(got.double(), dW, rtol=1e-3, atol=1e-5)


def test_streaming_equals_one_batch_and_dataloader():
    net, x, y = make_problem([4, 4], n=300, seed=2)
    full = growenv.bottleneck(net, x, y)
    streamed = growenv.bottleneck(net, x, y, batch_size=64)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=50)
    from_loader = growenv.bottleneck(net, loader)
    for other in (streamed, from_loader):
        for a, b in zip(full.sites, other.sites):
            scale = float(a.eigenvalues[0])
            torch.testing.assert_close(a.eigenvalues, b.eigenvalues, rtol=1e-4, atol=1e-4 * scale)
            torch.testing.assert_close(a.first_order_gain, b.first_order_gain, rtol=1e-4, atol=1e-7)
        assert other.num_samples == 300


def test_site_report_invariant_to_sample_order():
    net, x, y = make_problem([3, 5], n=256, seed=4)
    perm = torch.randperm(256, generator=torch.Generator().manual_seed(0))
    a = growenv.bottleneck(net, x, y)
    b = growenv.bottleneck(net, x[perm], y[perm], batch_size=32)
    for sa, sb in zip(a.sites, b.sites):
        scale = float(sa.eigenvalues[0])
        torch.testing.assert_close(sa.eigenvalues, sb.eigenvalues, rtol=1e-4, atol=1e-4 * scale)


def test_growth_from_zero_width():
    net, x, y = make_problem([3, 0], seed=9)
    report = growenv.bottleneck(net, x, y)
    # site 1 (second hidden state, width 0) feeds the output: it has something to gain
    s = report.sites[1]
    assert float(s.eigenvalues[0]) > 0
    cand = s.candidate(2)
    before = growenv.amplitude_search(net, cand, x, y)
    growenv.apply_growth(net, cand, before.gamma)
    assert net.hidden_widths == [3, 2]
    after = ((net(x) - y) ** 2).sum(-1).mean()
    torch.testing.assert_close(after, before.base_loss - before.loss_drop, rtol=1e-5, atol=1e-6)
    assert float(before.loss_drop) > 0


def test_gradmax_and_random_variants():
    net, x, y = make_problem([4, 4], seed=1)
    s = growenv.bottleneck(net, x, y).sites[0]
    gm = s.candidate(2, method="gradmax")
    assert torch.all(gm.in_weight == 0) and torch.all(gm.in_bias == 0)
    # outgoing weights are unit-norm top right singular vectors of P = E[b v^T]
    p = s.raw_correlation.double()
    _, sv, vh = torch.linalg.svd(p, full_matrices=False)
    torch.testing.assert_close(gm.out_weight.double().abs(), vh[:2].T.abs(), rtol=1e-4, atol=1e-5)
    rnd = s.candidate(3, method="random", generator=torch.Generator().manual_seed(0))
    assert rnd.num_neurons == 3 and rnd.in_weight.abs().sum() > 0
    rnd2 = s.candidate(3, method="random", generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(rnd.in_weight, rnd2.in_weight)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    net, x, y = make_problem([6, 5], seed=12)
    cpu = growenv.bottleneck(net, x, y)
    gpu = growenv.bottleneck(net.cuda(), x.cuda(), y.cuda())
    for a, b in zip(cpu.sites, gpu.sites):
        torch.testing.assert_close(a.eigenvalues, b.eigenvalues.cpu(), rtol=1e-3, atol=1e-5)
        torch.testing.assert_close(
            a.first_order_gain, b.first_order_gain.cpu(), rtol=1e-3, atol=1e-6
        )


def test_wide_layers_solved_alone_and_input_factors_reused(monkeypatch):
    from growenv.nets.mlp import report as report_module

    net, x, y = make_problem([5, 3], in_features=9, seed=13, dtype=torch.float64)
    padded = growenv.bottleneck(net, x, y)
    monkeypatch.setattr(report_module, "PAD_LIMIT", 6)  # input (10) is now "wide"
    alone = growenv.bottleneck(net, x, y)
    assert alone.input_factors is not None and padded.input_factors is None
    reused = growenv.bottleneck(net, x, y, input_factors=alone.input_factors)
    for a, b, c in zip(padded.sites, alone.sites, reused.sites):
        torch.testing.assert_close(a.eigenvalues, b.eigenvalues, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(a.eigenvalues, c.eigenvalues, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(a.first_order_gain, c.first_order_gain, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(padded.layers.update_gain, reused.layers.update_gain)
