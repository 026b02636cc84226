"""The nonlinear neuron fit of DAG expansions (``fit="nonlinear"``) against independent
float64 computations from the activations (explicit least squares, autograd references)."""

from __future__ import annotations

import copy

import pytest
import torch

from growenv.data.tasks import make_task
from growenv.nets.dag import (
    GrowingDAG,
    amplitude_search,
    apply_growth,
    bottleneck,
    extended_forward,
    fit_neurons,
)
from growenv.nets.dag import neuron_fit as nf
from tests.test_dag import data, ones_col, projection, reference, skip_dag

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64
K = 4


def _inputs_and_residual(net, x, y, e):
    """The expansion's inputs ``b`` (constant last) and residual from an autograd reference."""
    acts, vgoal = reference(net, x, y)

    def resid(v):
        srcs = net.in_edges(v)
        return projection(ones_col(*[acts[s] for s in srcs] or [x[:, :0]]), vgoal[v])[1]

    if e.kind == "node":
        return ones_col(acts[e.source]), resid(e.target), vgoal[e.target]
    targets = net.out_edges(e.source)
    b = ones_col(*[acts[s] for s in net.in_edges(e.source)])
    return (
        b,
        torch.cat([resid(t) for t in targets], 1),
        torch.cat([vgoal[t] for t in targets], 1),
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_fitted_gain_and_output_weights_against_float64_reference(seed):
    net, (x, y) = skip_dag(seed), data(seed=seed + 5)
    report = bottleneck(net, x, y, fit="nonlinear", neurons=K)
    checked = 0
    for e in report.expansions:
        if e.kind == "edge":
            assert e.fitted is None
            continue
        b, r, v = _inputs_and_residual(net, x, y, e)
        alpha, omega = e.fitted.alpha, e.fitted.omega
        h = torch.selu(b @ alpha.T)  # sigma(0) = 0 for SELU
        n = x.shape[0]
        gain = (r.square().sum() - (r - h @ omega.T).square().sum()) / n
        torch.testing.assert_close(e.fitted.gain, gain, rtol=1e-8, atol=1e-12)
        torch.testing.assert_close(e.estimated_gain, e.update_gain + gain, rtol=1e-8, atol=1e-12)
        # omega is the ridge least-squares optimum for its alpha: the normal equations
        # h^T (r - h omega^T) = eps omega^T, eps = RIDGE * mean diag(h^T h)
        eps = nf.RIDGE * float((h.T @ h).diagonal().mean())
        torch.testing.assert_close(h.T @ (r - h @ omega.T), eps * omega.T, rtol=1e-6, atol=1e-9)
        # each neuron's pre-activation has a unit RMS over the samples
        rms = (b @ alpha.T).square().mean(0).sqrt()
        torch.testing.assert_close(rms, torch.ones_like(rms), rtol=1e-6, atol=1e-6)
        # the per-neuron slopes: E[v . omega_k h_k]
        slopes = ((v @ omega) * h).mean(0)
        torch.testing.assert_close(e.fitted_slopes, slopes, rtol=1e-8, atol=1e-12)
        checked += 1
    assert checked >= 5


def test_fit_sees_the_nonlinear_residual_that_tiny_cannot():
    """After the exact linear fit, TINY's lambda of ``in -> new -> out`` is 0; the fitted
    neurons take up part of the residual, and the gamma search on held-out data confirms."""
    task = make_task("teacher_student", seed=0, n_train=600, n_stats=600)
    x, y = task.train.x.double(), task.train.y.double()
    net = GrowingDAG(20, 1, edges=[("in", "out")], dtype=F64)
    fit = torch.linalg.lstsq(ones_col(x), y).solution
    with torch.no_grad():
        net.weight("in", "out").copy_(fit[:20].T)
        net.bias("out").copy_(fit[20])
    psi = float(bottleneck(net, x, y).nodes["out"].bottleneck)
    tiny = bottleneck(net, x, y).expansion("node", "in", "out")
    assert float(tiny.eigenvalues[0]) ** 2 < 1e-12 * psi
    drops = []
    for seed in range(3):  # three random starts: each takes up a part, held out too
        report = bottleneck(net, x, y, fit="nonlinear", neurons=10, fit_seed=seed)
        fitted = report.expansion("node", "in", "out")
        assert float(fitted.fitted.gain) > 0.05 * psi
        xs, ys = task.stats.x.double(), task.stats.y.double()
        held_out = amplitude_search(net, fitted.candidate(), xs, ys)
        assert float(held_out.gamma) > 0 and float(held_out.loss_drop) > 0
        drops.append(float(held_out.loss_drop) / float(held_out.base_loss))
    assert sum(drops) / len(drops) > 0.01


@pytest.mark.parametrize("kind", ["node", "widen"])
def test_preview_apply_and_first_order_slope_of_fitted_candidates(kind):
    net, (x, y) = skip_dag(2), data(seed=3)
    report = bottleneck(net, x, y, fit="nonlinear", neurons=K)
    e = next(e for e in report.expansions if e.kind == kind and e.source == "a")
    cand = e.candidate()
    assert cand.scaling == "output" and cand.num_neurons == K
    base = net(x)
    assert torch.equal(extended_forward(net, x, cand, 0.0), base)
    for gamma in (0.3, 1.7):
        grown = copy.deepcopy(net)
        apply_growth(grown, cand, gamma)
        torch.testing.assert_close(grown(x), extended_forward(net, x, cand, gamma))
    # gamma scales the whole move linearly: preview(g) - base is linear in g
    d1 = extended_forward(net, x, cand, 1.0) - base
    d2 = extended_forward(net, x, cand, 2.0) - base
    if kind == "node" and e.target == "out":
        torch.testing.assert_close(d2, 2 * d1)
    # -dL/dgamma at 0 (sum-reduced MSE per sample) against a finite difference
    loss = lambda out: (out - y).square().sum(-1).mean()  # noqa: E731
    eps = 1e-6
    fd = (loss(base) - loss(extended_forward(net, x, cand, eps))) / eps
    torch.testing.assert_close(e.linear_gain(), fd.detach(), rtol=1e-4, atol=1e-8)
    # fewer neurons: the first ones, and the slope of those only
    two = e.candidate(2)
    assert two.num_neurons == 2
    torch.testing.assert_close(e.linear_gain(2), e.update_gain + e.fitted_slopes[:2].sum())


def test_fit_is_reproducible_per_expansion_and_subset_fits_agree():
    net, (x, y) = skip_dag(0), data(seed=4)
    whole = bottleneck(net, x, y, fit="nonlinear", neurons=K, fit_seed=3)
    again = bottleneck(net, x, y, fit="nonlinear", neurons=K, fit_seed=3)
    other = bottleneck(net, x, y, fit="nonlinear", neurons=K, fit_seed=4)
    part = bottleneck(net, x, y, keep_samples=True)
    subset = [e for e in part.expansions if e.kind == "widen"][:1] + [
        e for e in part.expansions if e.kind == "node"
    ][-2:]
    fit_neurons(net, part, subset, K, seed=3)
    for e in subset:
        w = whole.expansion(*e.key)
        torch.testing.assert_close(e.fitted.alpha, w.fitted.alpha, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(e.fitted.gain, w.fitted.gain, rtol=1e-9, atol=1e-12)
    for a, b, c in zip(whole.expansions, again.expansions, other.expansions, strict=True):
        if a.fitted is not None:
            assert torch.equal(a.fitted.alpha, b.fitted.alpha)
            assert not torch.equal(a.fitted.alpha, c.fitted.alpha)
    assert all(e.fitted is None for e in part.expansions if e not in subset)


def test_more_steps_never_fit_worse_and_padding_is_inert():
    g = torch.Generator().manual_seed(0)
    n = 300
    b1 = torch.cat([torch.randn(n, 3, generator=g, dtype=F64), torch.ones(n, 1, dtype=F64)], 1)
    b2 = torch.cat([torch.randn(n, 6, generator=g, dtype=F64), torch.ones(n, 1, dtype=F64)], 1)
    r1 = torch.sin(2 * b1[:, :2]) * b1[:, 2:3]
    r2 = torch.tanh(b2[:, :1] * b2[:, 1:2])
    act = torch.nn.SELU()
    s1 = nf.start_directions(b1, None, 0, 3, torch.Generator().manual_seed(1))
    s2 = nf.start_directions(b2, None, 0, 3, torch.Generator().manual_seed(2))
    gains = [float(nf.fit(b1, r1, s1, act, 0.0, iterations=it).gain) for it in (0, 3, 10)]
    assert gains[0] <= gains[1] <= gains[2] and gains[2] > gains[0]
    # b1 and b2 share a size bucket (4 and 7 inputs): padded and batched == alone
    batched = nf.fit_many([b1, b2], [r1, r2], [s1, s2], act, 0.0)
    for bb, rr, ss, got in zip((b1, b2), (r1, r2), (s1, s2), batched, strict=True):
        alone = nf.fit(bb, rr, ss, act, 0.0)
        torch.testing.assert_close(got.alpha, alone.alpha, rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(got.omega, alone.omega, rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(got.gain, alone.gain, rtol=1e-7, atol=1e-12)


def test_fit_arguments_have_one_line_errors():
    net, (x, y) = skip_dag(0), data()
    with pytest.raises(ValueError, match=r"^fit: expected one of \('tiny', 'nonlinear'\)"):
        bottleneck(net, x, y, fit="gd")
    with pytest.raises(ValueError, match=r"^neurons: fit=\"nonlinear\" needs"):
        bottleneck(net, x, y, fit="nonlinear")
    report = bottleneck(net, x, y)
    with pytest.raises(ValueError, match="keep_samples=True"):
        fit_neurons(net, report, report.expansions, 2)
    report = bottleneck(net, x, y, keep_samples=True)
    grown = copy.deepcopy(net)
    grown.add_edge("c", "out")
    with pytest.raises(ValueError, match="grown since"):
        fit_neurons(grown, report, report.expansions, 2)


def test_float32_fit_runs_in_float32_and_matches_its_float64_recomputation():
    net, (x, y) = skip_dag(1), data(seed=6)
    net32 = copy.deepcopy(net).float()
    report = bottleneck(net32, x.float(), y.float(), fit="nonlinear", neurons=K)
    for e in report.expansions:
        if e.fitted is None:
            continue
        assert e.fitted.alpha.dtype == torch.float32
        b, r, _ = _inputs_and_residual(net, x, y, e)
        alpha, omega = e.fitted.alpha.double(), e.fitted.omega.double()
        h = torch.selu(b @ alpha.T)
        gain = (r.square().sum() - (r - h @ omega.T).square().sum()) / x.shape[0]
        torch.testing.assert_close(e.fitted.gain.double(), gain, rtol=1e-3, atol=1e-5)


def test_public_verb_passes_the_fit_to_dags_and_mlps_ignore_it():
    import growenv

    net, (x, y) = skip_dag(0), data(seed=2)
    public = growenv.bottleneck(net, x, y, neuron_fit="nonlinear", neurons=K)
    direct = bottleneck(net, x, y, fit="nonlinear", neurons=K)
    for a, b in zip(public.expansions, direct.expansions, strict=True):
        assert a.key == b.key
        if b.fitted is not None:
            assert torch.equal(a.fitted.alpha, b.fitted.alpha)
    assert all(e.fitted is None for e in growenv.bottleneck(net, x, y).expansions)
    mlp = growenv.GrowingMLP(4, [2], 3)
    plain = growenv.bottleneck(mlp, x.float(), y.float())
    ignored = growenv.bottleneck(mlp, x.float(), y.float(), neuron_fit="nonlinear", neurons=2)
    assert torch.equal(plain.sites[0].eigenvalues, ignored.sites[0].eigenvalues)
