"""GrowingConvNet, its TINY statistics and growth against explicit float64 loops."""

from __future__ import annotations

import copy
import dataclasses
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from growenv.nets.conv.cell_correlation import (
    MAX_RELATIVE_PERIOD,
    contract,
    correlate,
    make_cells,
    relative_form,
)
from growenv.nets.conv.growth import (
    ConvGrowthCandidate,
    conv_amplitude_search,
    conv_apply_growth,
    conv_bottleneck,
    conv_extended_forward,
    solve_conv,
)
from growenv.nets.conv.net import GrowingConvNet
from growenv.nets.conv.plans import Patches, UnfoldCovPlan, _progressions
from growenv.nets.conv.statistics import compute_conv_statistics, conv_statistics_macs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# (channels, kernel_size, stride, padding, pool, image (H, W)); tiny images, few channels
GEOMETRIES = {
    "k3s1p1": ([3, 2], 3, 1, 1, None, (6, 6)),
    "k3s1p0": ([3, 2], 3, 1, 0, None, (7, 6)),
    "k3s2p1": ([3, 2], 3, 2, 1, None, (7, 7)),
    "k3s2p0-s1p1": ([2, 3], 3, [2, 1], [0, 1], None, (9, 8)),
    "k3s1-s2": ([3, 2], 3, [1, 2], 1, None, (7, 8)),
    "k3s2p0-s2p1": ([3, 2], 3, 2, [0, 1], None, (9, 10)),
    "k5p2-k3p0": ([2, 2], [5, 3], 1, [2, 0], None, (6, 7)),
    "avgpool-3stages": ([2, 2, 2], 3, 1, 1, ["avg", None, None], (8, 8)),
    "s2+avg3s2": ([2, 2], 3, [2, 1], 1, [("avg", 3, 2), None], (11, 11)),
}


def make_net(name: str, activation: str = "tanh", dtype=torch.float64, seed: int = 0):
    channels, k, s, p, pool, size = GEOMETRIES[name]
    g = torch.Generator().manual_seed(seed)
    net = GrowingConvNet(2, channels, 3, k, s, p, pool, activation, size, generator=g)
    return net.to(dtype), size


def data(size, n=5, dtype=torch.float64, seed=1, channels=2, out=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, *size, generator=g).to(dtype)
    y = torch.randn(n, out, generator=g).to(dtype)
    return x, y


# ----------------------------------------------------------------- float64 reference (loops)
def explicit_patches(y: torch.Tensor, k: int, s: int, p: int, out_size) -> torch.Tensor:
    """(n, Ho, Wo, C k k) zero-padded patches, one position and one offset at a time."""
    n, c, h, w = y.shape
    out = torch.zeros(n, *out_size, c, k, k, dtype=y.dtype)
    for p0, p1, o0, o1 in itertools.product(
        range(out_size[0]), range(out_size[1]), range(k), range(k)
    ):
        r0, r1 = s * p0 + o0 - p, s * p1 + o1 - p
        if 0 <= r0 < h and 0 <= r1 < w:
            out[:, p0, p1, :, o0, o1] = y[:, :, r0, r1]
    return out.reshape(n, *out_size, c * k * k)


def with_ones(t: torch.Tensor) -> torch.Tensor:
    return torch.cat([t, torch.ones(*t.shape[:-1], 1, dtype=t.dtype)], -1)


def reference(net, x, y, kernel="full"):
    """Sample means of the statistics by explicit loops over positions and kernel offsets.

    Patches ``u`` of the new channel at hidden positions are averaged over pooling windows;
    for each output position ``p`` of the next conv and each kernel offset ``o`` the patch at
    ``s p + o - pad`` (zero in the padding) is correlated with the gradient and the next
    layer's patch.
    """
    net = copy.deepcopy(net).double()
    x, y = x.double(), y.double()
    ins, pres, h = [], [], x
    for l, st in enumerate(net.stages):
        ins.append(h)
        w, b = net.weights[l].detach(), net.biases[l].detach()
        a = F.conv2d(h, w, b, st.stride, st.padding).requires_grad_(True)
        pres.append(a)
        h = net.stage_output(a, l)
    f = h.mean((-2, -1))
    out = F.linear(f, net.weights[-1].detach(), net.biases[-1].detach()).requires_grad_(True)
    grads = torch.autograd.grad(((out - y) ** 2).sum(), [*pres, out])
    ins, f, n = [t.detach() for t in ins], f.detach(), x.shape[0]
    res = {"S": [], "M": [], "Sg": [], "P": [], "C": []}
    pooled = []
    for l, st in enumerate(net.stages):
        g = grads[l]
        size = tuple(g.shape[-2:])
        u = with_ones(explicit_patches(ins[l], st.kernel_size, st.stride, st.padding, size))
        res["S"].append(torch.einsum("nhwa,nhwb->ab", u, u) / n)
        res["M"].append(-torch.einsum("nhwa,nchw->ac", u, g) / n)
        if st.pool is not None:
            kp, sp = st.pool_size, st.pool_step
            hh, wh = (size[0] - kp) // sp + 1, (size[1] - kp) // sp + 1
            avg = torch.zeros(n, hh, wh, u.shape[-1], dtype=u.dtype)
            for q0, q1, d0, d1 in itertools.product(range(hh), range(wh), range(kp), range(kp)):
                avg[:, q0, q1] += u[:, sp * q0 + d0, sp * q1 + d1] / kp**2
            u = avg
        pooled.append(u)
    b = with_ones(f)
    res["S"].append(b.T @ b / n)
    res["M"].append(-b.T @ grads[-1] / n)
    for j in range(net.num_sites - 1):
        u, nxt, g = pooled[j], net.stages[j + 1], grads[j + 1]
        k2, s2, p2 = nxt.kernel_size, nxt.stride, nxt.padding
        out_size = tuple(g.shape[-2:])
        un = with_ones(explicit_patches(ins[j + 1], k2, s2, p2, out_size))
        offsets = list(itertools.product(range(k2), range(k2)))
        if kernel == "restricted":
            offsets = [(k2 // 2, k2 // 2)]
        d, o = u.shape[-1], g.shape[1]
        sg = torch.zeros(d, d, dtype=torch.float64)
        pm = torch.zeros(d, o, len(offsets), dtype=torch.float64)
        cm = torch.zeros(len(offsets), d, un.shape[-1], dtype=torch.float64)
        for p0, p1 in itertools.product(range(out_size[0]), range(out_size[1])):
            for i, (o0, o1) in enumerate(offsets):
                q0, q1 = s2 * p0 + o0 - p2, s2 * p1 + o1 - p2
                if 0 <= q0 < u.shape[1] and 0 <= q1 < u.shape[2]:
                    uq = u[:, q0, q1]
                    sg += uq.T @ uq
                    pm[:, :, i] -= uq.T @ g[:, :, p0, p1]
                    cm[i] += uq.T @ un[:, p0, p1]
        res["Sg"].append(sg / n)
        res["P"].append(pm.reshape(d, -1) / n)
        res["C"].append((cm if kernel == "full" else cm[0]) / n)
    um = pooled[-1].mean((1, 2))
    res["Sg"].append(um.T @ um / n)
    res["P"].append(-um.T @ grads[-1] / n)
    res["C"].append(um.T @ b / n)
    return res


def reference_projected(ref, net, kernel, rtol, j):
    """Best update ``dW`` of layer ``j + 1`` and ``N = P - C dW^T`` of site ``j`` (loops)."""
    s, m = ref["S"][j + 1], ref["M"][j + 1]
    dw = (torch.linalg.pinv(s, rtol=rtol, hermitian=True) @ m).T  # (O, E)
    p, c = ref["P"][j], ref["C"][j]
    if kernel == "full" and j < net.num_sites - 1:
        offsets = c.shape[0]
        n = p.reshape(p.shape[0], -1, offsets).clone()
        for i in range(offsets):
            n[:, :, i] -= c[i] @ dw.T
        return dw, n.reshape(p.shape[0], -1)
    return dw, p - c @ dw.T


def reference_solve(ref, net, kernel, rtol):
    """Independent float64 solve: pinv / eigh / svdvals of the reference statistics."""
    out = []
    for j in range(net.num_sites):
        m = ref["M"][j + 1]
        dw, n = reference_projected(ref, net, kernel, rtol, j)
        d = (m.T * dw).sum()
        ev, vecs = torch.linalg.eigh(ref["Sg"][j])
        keep = ev > rtol * ev[-1]
        isqrt = vecs[:, keep] @ torch.diag(ev[keep].rsqrt()) @ vecs[:, keep].T
        lam = torch.linalg.svdvals(isqrt @ n)
        sig = max(int((lam >= 1e-3).sum()), 1)
        out.append({"d": d, "lam": lam, "fo": d + net.slope0 * (lam[:sig] ** 2).sum()})
    return out


def rel(a, b) -> float:
    a, b = torch.as_tensor(a).detach().double(), torch.as_tensor(b).detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-300))


# ------------------------------------------------------------------------------ statistics
def brute_cell_correlations(a, b, sigma, dmin, kd, cells):
    """``G[i, j, cb, ca, d0, d1]`` by explicit loops over the cells' positions."""
    n_r, n_c = len(cells[0].cells), len(cells[1].cells)
    ref = torch.zeros(n_r, n_c, b.shape[1], a.shape[1], *kd, dtype=a.dtype)
    for (i, (r0, n0)), (j, (c0, n1)) in itertools.product(
        enumerate(cells[0].cells), enumerate(cells[1].cells)
    ):
        for m0, m1, d0, d1 in itertools.product(range(n0), range(n1), range(kd[0]), range(kd[1])):
            r, c = r0 + cells[0].step * m0, c0 + cells[1].step * m1
            ar, ac = sigma * r + dmin[0] + d0, sigma * c + dmin[1] + d1
            if 0 <= ar < a.shape[-2] and 0 <= ac < a.shape[-1]:
                ref[i, j, :, :, d0, d1] += b[:, :, r, c].T @ a[:, :, ar, ac]
    return ref


def random_engine_case(seed, period=None, min_size=1):
    """Random cells (weights periodic inside, arbitrary near the borders), maps and offsets."""
    g = torch.Generator().manual_seed(seed)

    def randint(lo, hi):
        return int(torch.randint(lo, hi + 1, (1,), generator=g))

    sigma = randint(1, 2)
    period = randint(1, 4) if period is None else period
    top = max(12, min_size + 6)
    size = (randint(min_size, top), randint(min_size, top))
    dmin = (randint(-3, 1), randint(-3, 1))
    dmax = (dmin[0] + randint(0, 4), dmin[1] + randint(0, 4))
    cells = []
    for d in range(2):
        border = min(randint(0, 3), size[d])
        vec = [float(randint(0, 3)) for _ in range(period)]
        inner = [vec[i % period] for i in range(size[d])]
        for i in list(range(border)) + list(range(size[d] - border, size[d])):
            inner[i] = float(randint(0, 5))
        cells.append(make_cells([inner], size[d], period)[0])
    a_size = tuple(sigma * (size[d] - 1) + randint(1, 4) for d in range(2))
    a = torch.randn(3, 2, *a_size, generator=g, dtype=torch.float64)
    b = torch.randn(3, 3, *size, generator=g, dtype=torch.float64)
    return a, b, sigma, dmin, dmax, cells, g


@pytest.mark.parametrize("seed", range(40))
def test_correlation_engine_matches_brute_force(seed):
    """The cell-wise correlations (corners, bands, interior, stride phases) against loops."""
    a, b, sigma, dmin, dmax, cells, _ = random_engine_case(seed)
    ours = correlate(a, b, sigma, dmin, dmax, *cells)
    kd = (dmax[0] - dmin[0] + 1, dmax[1] - dmin[1] + 1)
    ref = brute_cell_correlations(a, b, sigma, dmin, kd, cells)
    assert torch.allclose(ours, ref, atol=1e-10)


@pytest.mark.parametrize("period", [1, 2, 3])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("seed", range(20))
def test_relative_form_matches_brute_force(seed, symmetric, period, monkeypatch):
    """Weights relative to the (periodic) interior (each phase's whole grid, strips per
    phase, corners; at their supports only) contract to the same statistic as the cells'
    own correlations (period 3 too, beyond what the plans use it for)."""
    monkeypatch.setattr("growenv.nets.conv.cell_correlation.MAX_RELATIVE_PERIOD", 3)
    a, b, sigma, dmin, dmax, cells, g = random_engine_case(seed, period, min_size=4 + 4 * period)
    if symmetric:  # the covariance case: a is b, offsets symmetric around 0
        sigma, t = 1, max(dmax[0] - dmin[0], 1)
        dmin, dmax, a = (-t, -t), (t, t), b
    kd = (dmax[0] - dmin[0] + 1, dmax[1] - dmin[1] + 1)
    sels = []
    for d in range(2):  # per cell and offset weights; some cells equal to the interior
        sel = torch.randn(2, len(cells[d].cells), kd[d], generator=g, dtype=torch.float64)
        sel = sel * (torch.rand(1, 1, kd[d], generator=g, dtype=torch.float64) > 0.3)
        sels.append(sel)
    rel, support = relative_form(sels, cells)
    ref = brute_cell_correlations(a, b, sigma, dmin, kd, cells)
    expected = contract(sels[0], sels[1], ref)
    if support is None:  # no single interior cell: the weights are left as they are
        assert all(torch.equal(r, s) for r, s in zip(rel, sels))
        return
    ours = contract(rel[0], rel[1], correlate(a, b, sigma, dmin, dmax, *cells, support))
    assert torch.allclose(ours, expected, atol=1e-10), (ours - expected).abs().max()


@pytest.mark.parametrize("period", [1, 2, 3])
def test_relative_form_cases_are_not_trivial(period):
    """Most random cases above take the relative form and have border cells (periods up to
    MAX_RELATIVE_PERIOD; longer ones keep the cells' own correlations)."""
    with_borders = 0
    for seed in range(20):
        _, _, _, _, _, cells, _ = random_engine_case(seed, period, min_size=4 + 4 * period)
        sels = [torch.ones(len(c.cells), 3, dtype=torch.float64) for c in cells]
        sels = [s * torch.arange(1, len(s) + 1, dtype=s.dtype).view(-1, 1) for s in sels]
        _, support = relative_form(sels, cells)
        with_borders += support is not None and any(len(s) for s in support)
        if period > MAX_RELATIVE_PERIOD:
            assert support is None
    assert with_borders >= 15 or period > MAX_RELATIVE_PERIOD


@pytest.mark.parametrize("seed", range(10))
def test_unfold_covariances_match_weighted_gram(seed):
    """UnfoldCovPlan (positions grouped by weight, split into progressions, patches read from
    a strided view) against weighted Gram matrices of ``F.unfold``'s patches."""
    g = torch.Generator().manual_seed(seed)
    k, step, pad = 3, 2, int(torch.randint(0, 2, (1,), generator=g))
    size = (
        int(torch.randint(9, 18, (1,), generator=g)),
        int(torch.randint(9, 18, (1,), generator=g)),
    )
    q_size = tuple((size[d] + 2 * pad - k) // step + 1 for d in range(2))
    patches = Patches(k, [[float(i == j) for j in range(k)] for i in range(k)], step, pad, q_size)
    omegas = [
        tuple([float(torch.randint(1, 3, (1,), generator=g)) for _ in range(q)] for q in q_size)
        for _ in range(2)
    ]
    x = torch.randn(5, 2, *size, generator=g, dtype=torch.float64)
    plan = UnfoldCovPlan(patches, omegas, x)
    plan.CHUNK = 2  # several chunks
    ours = plan.assemble(plan.accumulate(x), x.shape[0])
    u = F.unfold(x, k, padding=pad, stride=step)  # (n, D, Q)
    u = torch.cat([u, torch.ones_like(u[:, :1])], 1)
    for m, (w0, w1) in enumerate(omegas):
        w = (torch.tensor(w0).view(-1, 1) * torch.tensor(w1).view(1, -1)).reshape(-1)
        ref = torch.einsum("nap,p,nbp->ab", u, w.double(), u)
        assert torch.allclose(ours[m], ref, atol=1e-10), (ours[m] - ref).abs().max()


def test_progressions_split_positions_into_slices():
    assert _progressions([0, 2, 4, 6, 7]) == [slice(0, 7, 2), slice(7, 8, 1)]
    assert _progressions([1, 3, 5, 6, 7]) == [slice(1, 6, 2), slice(6, 8, 1)]
    assert _progressions([4]) == [slice(4, 5, 1)]


@pytest.mark.parametrize("kernel", ["full", "restricted"])
@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_statistics_match_explicit_loops(name, kernel):
    net, size = make_net(name)
    x, y = data(size)
    stats = compute_conv_statistics(net, x, y, kernel=kernel, raw_correlation=True)
    assert stats.projection is None
    ref = reference(net, x, y, kernel)
    pairs = {"S": stats.S, "M": stats.M, "Sg": stats.S_growth, "P": stats.P, "C": stats.C}
    for key, ours in pairs.items():
        assert len(ours) == len(ref[key]), key
        for i, (a, b) in enumerate(zip(ours, ref[key])):
            assert a.shape == b.shape, (key, i)
            assert rel(a, b) < 1e-12, (key, i, rel(a, b))


@pytest.mark.parametrize("kernel", ["full", "restricted"])
@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_projected_statistics_match_explicit_loops(name, kernel):
    """One batch (the default): conv -> conv sites hold ``N = P - C dW^T`` of the loops, with
    ``dW`` the pseudo-inverse solution of the loops' ``S``, ``M``; no ``C`` is kept."""
    net, size = make_net(name)
    x, y = data(size, n=24)  # more samples than the next conv's inputs: N is not ~0
    stats = compute_conv_statistics(net, x, y, kernel=kernel)
    assert stats.projection == (1e-12, 1e-10, torch.float64)
    ref = reference(net, x, y, kernel)
    for key in ("S", "M", "Sg"):
        ours = {"S": stats.S, "M": stats.M, "Sg": stats.S_growth}[key]
        for i, (a, b) in enumerate(zip(ours, ref[key], strict=True)):
            assert rel(a, b) < 1e-12, (key, i, rel(a, b))
    for j in range(net.num_sites):
        if j == net.num_sites - 1:  # the head site is linear: raw P and C, as before
            assert rel(stats.P[j], ref["P"][j]) < 1e-12
            assert rel(stats.C[j], ref["C"][j]) < 1e-12
            continue
        assert stats.C[j] is None
        _, n = reference_projected(ref, net, kernel, 1e-12, j)
        assert float(n.abs().max()) > 1e-3 * float(ref["P"][j].abs().max())
        assert rel(stats.P[j], n) < 1e-9, (j, rel(stats.P[j], n))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kernel", ["full", "restricted"])
@pytest.mark.parametrize("name", ["k3s1p1", "k3s2p0-s1p1", "avgpool-3stages", "s2+avg3s2"])
def test_projected_and_raw_routes_give_the_same_report(name, kernel, dtype):
    net, size = make_net(name, activation="selu", dtype=dtype)
    x, y = data(size, n=24, dtype=dtype)
    projected = conv_bottleneck(net, x, y, kernel=kernel)
    raw = conv_bottleneck(net, x, y, kernel=kernel, raw_correlation=True)
    streamed = conv_bottleneck(net, x, y, kernel=kernel, batch_size=10)  # raw route
    tol = 1e-3 if dtype == torch.float32 else 1e-10  # float32: summation order (streamed)
    for a, b, c in zip(projected.sites, raw.sites, streamed.sites, strict=True):
        for other in (b, c):
            scale = float(other.eigenvalues[0])
            assert float((a.eigenvalues - other.eigenvalues).abs().max()) <= tol * scale
            assert rel(a.first_order_gain, other.first_order_gain) < tol
            assert rel(a.update_gain, other.update_gain) < tol
        assert b.raw_correlation is not None
        if a.site < net.num_sites - 1:
            assert a.raw_correlation is None


def test_projected_report_names_what_needs_the_raw_correlation():
    net, size = make_net("k3s1p1")
    x, y = data(size)
    site = conv_bottleneck(net, x, y).sites[0]
    with pytest.raises(ValueError, match="raw_correlation=True"):
        site.linear_gain(1)
    with pytest.raises(ValueError, match="raw_correlation=True"):
        site.candidate(1, method="gradmax")
    raw = conv_bottleneck(net, x, y, raw_correlation=True).sites[0]
    assert raw.candidate(1, method="gradmax").method == "gradmax"
    stats = compute_conv_statistics(net, x, y)
    with pytest.raises(ValueError, match="raw_correlation=True"):
        solve_conv(stats, net, rtol=1e-8)


def test_maxpool_is_linearised_as_average():
    """MaxPool stages use the average-pool statistics (a max of equal values has no linear
    derivative); the statistics equal those of the same net with AvgPool."""
    net, size = make_net("avgpool-3stages")
    x, y = data(size)
    stats_avg = compute_conv_statistics(net, x, y)
    net_max = copy.deepcopy(net)
    net_max.stages = (dataclasses.replace(net.stages[0], pool="max"), *net.stages[1:])
    stats_max = compute_conv_statistics(net_max, x, y)
    assert rel(stats_max.S_growth[0], stats_avg.S_growth[0]) < 1e-12
    assert not torch.allclose(net_max(x), net(x))


@pytest.mark.parametrize("kernel", ["full", "restricted"])
@pytest.mark.parametrize("name", ["k3s1p1", "k3s1p0", "k3s2p0-s1p1", "avgpool-3stages"])
def test_eigenvalues_and_gains_match_float64(name, kernel):
    """float32 statistics + solve against the float64 loops and an independent solve."""
    net, size = make_net(name, activation="selu", dtype=torch.float32)
    x, y = data(size, n=48, dtype=torch.float32)
    report = conv_bottleneck(net, x, y, kernel=kernel)
    ref = reference_solve(reference(net, x, y, kernel), net, kernel, rtol=1e-6)
    assert len(report.sites) == net.num_sites
    for site, r in zip(report.sites, ref):
        k = min(5, r["lam"].shape[0])
        scale = float(r["lam"][0])
        assert float((site.eigenvalues[:k].double() - r["lam"][:k]).abs().max()) <= 1e-3 * scale
        assert rel(site.update_gain, r["d"]) < 1e-3
        assert rel(site.first_order_gain, r["fo"]) < 1e-3


@pytest.mark.parametrize("kernel", ["full", "restricted"])
@pytest.mark.parametrize("name", ["k3s1p1", "k3s2p1", "s2+avg3s2"])
def test_linear_gain_matches_finite_difference(name, kernel):
    """``-dL/dgamma`` at 0 (``site.linear_gain``) against a finite difference of the real
    loss of the preview, smooth activation (tanh), float64."""
    net, size = make_net(name, activation="tanh")
    x, y = data(size, n=160)
    report = conv_bottleneck(net, x, y, kernel=kernel, raw_correlation=True)
    with torch.no_grad():
        base = ((net(x) - y) ** 2).sum(-1).mean()
    for site in report.sites:
        cand = site.candidate(2)
        eps = 1e-8
        moved = ((conv_extended_forward(net, cand, x, eps) - y) ** 2).sum(-1).mean()
        fd = float(base - moved) / eps
        assert fd == pytest.approx(float(site.linear_gain(2)), rel=2e-3), site.site


# ------------------------------------------------------------------------ preview / apply
@pytest.mark.parametrize("activation", ["selu", "sigmoid"])
@pytest.mark.parametrize("kernel", ["full", "restricted"])
def test_preview_at_zero_is_forward_and_apply_equals_preview(kernel, activation):
    net, size = make_net("avgpool-3stages", activation=activation, dtype=torch.float32)
    x, y = data(size, n=12, dtype=torch.float32)
    report = conv_bottleneck(net, x, y, kernel=kernel)
    for site in report.sites:
        cand = site.candidate(2)
        assert isinstance(cand, ConvGrowthCandidate)
        assert torch.equal(conv_extended_forward(net, cand, x, 0.0), net(x))
        gammas = torch.tensor([0.0, 0.05, 0.7])
        previews = conv_extended_forward(net, cand, x, gammas)
        assert previews.shape == (3, 12, 3)
        assert torch.allclose(previews[0], net(x), atol=1e-6)
        grown = copy.deepcopy(net)
        params_before = grown.num_parameters()
        conv_apply_growth(grown, cand, 0.7)
        assert torch.allclose(grown(x), previews[2], rtol=1e-4, atol=1e-5)
        assert grown.num_parameters() - params_before == cand.added_parameters()
        assert grown.hidden_widths[site.site] == net.hidden_widths[site.site] + cand.num_neurons


def test_amplitude_search_is_argmin_of_real_loss():
    net, size = make_net("k3s1p1", activation="selu", dtype=torch.float32)
    x, y = data(size, n=20, dtype=torch.float32)
    report = conv_bottleneck(net, x, y)
    cand = report.sites[0].candidate(2)
    result = conv_amplitude_search(net, cand, x, y, max_elements=500)  # several chunks
    assert float(result.loss_drop) >= 0
    for g, loss in zip(result.gammas[::8], result.losses[::8]):
        real = ((conv_extended_forward(net, cand, x, float(g)) - y) ** 2).sum(-1).mean()
        assert float(loss) == pytest.approx(float(real), rel=1e-5)
    assert float(result.losses.min()) == pytest.approx(float(result.base_loss - result.loss_drop))


def test_growth_from_one_channel_and_optimizer_state():
    g = torch.Generator().manual_seed(3)
    net = GrowingConvNet(2, [1, 1], 2, activation="selu", image_size=6, generator=g)
    x, y = data((6, 6), n=32, dtype=torch.float32, out=2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss = ((net(x) - y) ** 2).sum(-1).mean()
    loss.backward()
    opt.step()
    params = list(net.parameters())
    moments = {id(p): opt.state[p]["exp_avg"].clone() for p in params}
    for site in (0, 1, 0):
        report = conv_bottleneck(net, x, y)
        cand = report.sites[site].candidate(2)
        amp = conv_amplitude_search(net, cand, x, y)
        conv_apply_growth(net, cand, amp.gamma, optimizer=opt)
    assert net.hidden_widths[0] >= 3 and net.hidden_widths[1] >= 2
    assert all(p is q for p, q in zip(net.parameters(), params))
    for p in params:
        state = opt.state[p]
        assert state["exp_avg"].shape == p.shape and state["exp_avg_sq"].shape == p.shape
        old = moments[id(p)]
        assert torch.equal(state["exp_avg"][tuple(slice(0, s) for s in old.shape)], old)
    opt.zero_grad()
    ((net(x) - y) ** 2).sum(-1).mean().backward()
    opt.step()  # the grown state is usable


def test_streamed_batches_equal_one_batch_and_cross_entropy():
    net, size = make_net("k3s2p1", dtype=torch.float32)
    x, y = data(size, n=10, dtype=torch.float32)
    one = compute_conv_statistics(net, x, y, raw_correlation=True)
    streamed = compute_conv_statistics(net, x, y, batch_size=3)  # raw: several batches
    loader = [(x[:4], y[:4]), (x[4:], y[4:])]
    iterated = compute_conv_statistics(net, loader)
    for other in (streamed, iterated):
        for a, b in zip(one.C + one.P + one.S_growth, other.C + other.P + other.S_growth):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    report = conv_bottleneck(net, x, labels, loss="cross_entropy")
    assert all(torch.isfinite(s.first_order_gain) for s in report.sites)


def test_candidate_methods_and_table():
    net, size = make_net("k3s1p1", dtype=torch.float32)
    x, y = data(size, n=16, dtype=torch.float32)
    for kernel in ("full", "restricted"):
        report = conv_bottleneck(net, x, y, kernel=kernel, raw_correlation=True)
        assert "site" in report.table()
        for method in ("tiny", "gradmax", "random"):
            cand = report.sites[0].candidate(2, method=method, generator=torch.Generator())
            assert cand.in_weight.shape == (2, 2, 3, 3)
            assert cand.out_weight.shape == (2, 2, 3, 3)
            if kernel == "restricted":
                mask = torch.ones(3, 3, dtype=torch.bool)
                mask[1, 1] = False
                assert not cand.out_weight[:, :, mask].any()
        head = report.sites[1].candidate(1)
        assert head.out_weight.shape == (3, 1) and head.kernel == "linear"


# -------------------------------------------------------------------------- net and errors
def test_sequential_round_trip_counts_and_flops():
    net, size = make_net("s2+avg3s2", dtype=torch.float32)
    x, _ = data(size, n=4, dtype=torch.float32)
    seq = net.to_sequential()
    assert torch.allclose(seq(x), net(x))
    back = GrowingConvNet.from_sequential(seq, image_size=size)
    assert torch.allclose(back(x), net(x))
    assert net.num_parameters() == sum(p.numel() for p in seq.parameters())
    # multiply-adds: conv 0 (2 -> 2, 3x3, stride 2 -> 6x6), conv 1 (2 -> 2 on 2x2), head 2 -> 3
    assert net.flops() == 2 * 2 * 9 * 36 + 2 * 2 * 9 * 4 + 2 * 3
    assert net.layer_sizes == [2, 2, 2, 3] and net.num_sites == 2
    assert net.added_parameters(0, 2) == 2 * (2 * 9 + 1 + 2 * 9)
    assert net.added_parameters(1, 1) == 2 * 9 + 1 + 3
    assert net.added_flops(0, 1) == 2 * 9 * 36 + 2 * 9 * 4
    grown = copy.deepcopy(net)
    x, y = data(size, n=8, dtype=torch.float32)
    conv_apply_growth(grown, conv_bottleneck(grown, x, y).sites[0].candidate(1), 0.5)
    assert grown.num_parameters() - net.num_parameters() == net.added_parameters(0, 1)
    assert grown.flops() - net.flops() == net.added_flops(0, 1)
    full, restricted = (conv_statistics_macs(net, 10, kernel) for kernel in ("full", "restricted"))
    assert full > restricted > 3 * 10 * net.flops()
    # projected: conv 1's forward pass (2 -> 2 channels, 3x3, 2x2 outputs) replaces the
    # cross term: 2 x 2 channels over the 2x2 hidden positions at 23^2 offsets (pooled
    # patches: step 2 * 2 = 4, span 2 * (3 - 1) + 3 = 7; 4 * (2 + 2) + 7 = 23 per axis)
    projected = conv_statistics_macs(net, 10, "full", projected=True)
    assert full - projected == 10 * (2 * 2 * 23**2 * 4 - 2 * 2 * 9 * 4)
    pad_same = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding="same"), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 1),
    )  # fmt: skip
    assert GrowingConvNet.from_sequential(pad_same).stages[0].padding == 1


def head(c):
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 2)]


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([nn.Conv2d(3, 4, (3, 5)), nn.ReLU(), *head(4)], "square"),
        ([nn.Conv2d(3, 4, 3, dilation=2), nn.ReLU(), *head(4)], "dilat"),
        ([nn.Conv2d(4, 4, 3, groups=2), nn.ReLU(), *head(4)], "group"),
        ([nn.ConvTranspose2d(3, 4, 3), nn.ReLU(), *head(4)], "transposed"),
        ([nn.Conv2d(3, 4, 3, bias=False), nn.ReLU(), *head(4)], "bias"),
        ([nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), *head(4)], "BatchNorm"),
        ([nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(5, 4, 3), nn.ReLU(), *head(4)], "in_channels"),
        ([nn.Conv2d(3, 4, 3), nn.ReLU(), *head(5)], "in_features"),
        ([nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2)], "AdaptiveAvgPool2d"),
        ([nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2, padding=1), *head(4)], "padding"),
        ([nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Tanh(), *head(4)], "same type"),
    ],
)
def test_from_sequential_errors(layers, message):
    with pytest.raises((ValueError, TypeError), match=message):
        GrowingConvNet.from_sequential(nn.Sequential(*layers))


def test_bad_inputs():
    net = GrowingConvNet(3, [2, 2], 2, image_size=8)
    with pytest.raises(ValueError, match="shape"):
        net.check_input(torch.randn(4, 3, 8))
    with pytest.raises(ValueError, match="channels"):
        net.check_input(torch.randn(4, 1, 8, 8))
    with pytest.raises(TypeError, match="floating"):
        net.check_input(torch.zeros(4, 3, 8, 8, dtype=torch.long))
    with pytest.raises(TypeError, match="Tensor"):
        net.check_input([[1.0]])
    small = GrowingConvNet(3, [2], 2, kernel_size=5, padding=0)
    with pytest.raises(ValueError, match="too small"):
        small.check_input(torch.randn(1, 3, 4, 4))
    x, y = torch.randn(6, 3, 8, 8), torch.randn(6, 2)
    with pytest.raises(ValueError, match="kernel"):
        conv_bottleneck(net, x, y, kernel="1x1")
    with pytest.raises(TypeError, match="GrowingConvNet"):
        conv_bottleneck(nn.Linear(3, 2), x, y)
    with pytest.raises(ValueError, match="image size"):
        compute_conv_statistics(net, [(x[:3], y[:3]), (torch.randn(3, 3, 9, 9), y[3:])])
    with pytest.raises(ValueError, match="NaN"):
        conv_bottleneck(net, x.clone().fill_(float("nan")), y)
    with pytest.raises(ValueError, match="site"):
        net.check_site(2)
    with pytest.raises(ValueError, match="channels"):
        GrowingConvNet(3, [0], 2)
    report = conv_bottleneck(net, x, y)
    cand = report.sites[0].candidate(1)
    conv_apply_growth(net, cand, 0.1)
    with pytest.raises(ValueError, match="grown"):
        conv_extended_forward(net, report.sites[1].candidate(1), x)
