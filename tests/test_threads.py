"""Thread helpers and the spectra they run: same results with one worker or several."""

from __future__ import annotations

import threading

import pytest
import torch

from growenv import tiny
from growenv.threads import cpu_workers, parallel_map, single_threaded


def psd(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d + 3, generator=g, dtype=torch.float64)
    return a @ a.T


def test_parallel_map_keeps_order_uses_threads_and_restores_count():
    before = torch.get_num_threads()
    names = parallel_map(lambda i: (i, threading.current_thread().name), range(6), 2)
    assert [i for i, _ in names] == list(range(6))
    main = threading.current_thread().name
    assert {name for _, name in names[0::2]} == {main}  # the caller takes every other item
    assert all(name.startswith("growenv") for _, name in names[1::2])
    assert torch.get_num_threads() == before
    assert parallel_map(lambda i: i * i, [3], 4) == [9]  # one item: no pool
    assert (
        parallel_map(lambda i: threading.current_thread().name, [1, 2], 1)
        == [threading.current_thread().name] * 2
    )


def test_covariance_spectra_independent_of_workers_and_exact():
    mats = [psd(d, s) for s, d in enumerate([12, 30, 5, 30, 1])]
    mats[2][:, -1] = mats[2][-1, :] = 0.0  # singular: the null direction is dropped
    with single_threaded():
        one = tiny.covariance_spectra(mats, 1e-12, 1e-10, 1)
        two = tiny.covariance_spectra(mats, 1e-12, 1e-10, 2)
    for s, a, b in zip(mats, one, two, strict=True):
        assert torch.equal(a.eigvecs, b.eigvecs) and torch.equal(a.inv, b.inv)
        assert torch.allclose(a.pinv_times(torch.eye(len(s), dtype=s.dtype)), torch.linalg.pinv(s))
        isqrt = a.inv_sqrt_matrix()
        assert torch.allclose(isqrt @ s @ isqrt, s @ torch.linalg.pinv(s), atol=1e-10)
    assert int(one[2].rank) == 4


def test_cpu_workers():
    assert cpu_workers("cpu") == torch.get_num_threads()
    assert cpu_workers("meta") == 1


def test_conv_solve_same_with_two_threads():
    from growenv.nets.conv.growth import solve_conv
    from growenv.nets.conv.net import GrowingConvNet
    from growenv.nets.conv.statistics import compute_conv_statistics

    g = torch.Generator().manual_seed(0)
    net = GrowingConvNet(2, [3, 4, 2], 3, 3, 1, 1, None, "tanh", (8, 8), generator=g)
    x = torch.randn(6, 2, 8, 8, generator=g)
    y = torch.randn(6, 3, generator=g)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        stats = compute_conv_statistics(net, x, y)
        sites_1, layers_1 = solve_conv(stats, net)
        alphas_1 = [s.alpha for s in sites_1]  # computed on first access (LazyNeurons)
        torch.set_num_threads(2)
        sites_2, layers_2 = solve_conv(stats, net)
        alphas_2 = [s.alpha for s in sites_2]
    finally:
        torch.set_num_threads(before)
    for a, b in zip(sites_1, sites_2, strict=True):
        assert torch.equal(a.eigenvalues, b.eigenvalues)
    assert all(torch.equal(a, b) for a, b in zip(alphas_1, alphas_2, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(layers_1.update_weight, layers_2.update_weight))


def test_covariance_solver_cholesky_only_where_nothing_is_cut_off():
    well = psd(30, 7)
    singular = well.clone()
    singular[:, -1] = singular[-1, :] = 0.0
    rtol = 1e-8
    lam, vecs = torch.linalg.eigh(well)
    lam[0] = 1.5 * rtol * lam[-1]  # kept, but not above rtol * the bound (~2 lam_max here)
    near = (vecs * lam) @ vecs.T
    assert torch.linalg.eigvalsh(near)[0] > rtol * lam[-1]
    assert int(tiny.covariance_spectrum(near, rtol).rank) == 30
    assert isinstance(tiny.covariance_solver(well, rtol), tiny.CholeskyFactor)
    for s in (singular, near):
        assert isinstance(tiny.covariance_solver(s, rtol), tiny.CovarianceSpectrum)
    assert isinstance(tiny.covariance_solver(well[None], rtol), tiny.CovarianceSpectrum)  # batch


def test_cholesky_factor_matches_the_spectrum():
    """Same ``S^+ M``, gains, eigenvalues and neurons (alpha, omega) from either factor."""
    s = psd(40, 3)
    g = torch.Generator().manual_seed(1)
    m = torch.randn(40, 6, generator=g, dtype=torch.float64)
    n = torch.randn(40, 9, generator=g, dtype=torch.float64)
    chol = tiny.covariance_solver(s, 1e-12)
    spec = tiny.covariance_spectrum(s, 1e-12)
    assert isinstance(chol, tiny.CholeskyFactor) and int(chol.rank) == 40
    for a, b in zip(tiny.best_update_spectral(chol, m), tiny.best_update_spectral(spec, m)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    w = chol.whiten(torch.eye(40, dtype=s.dtype))  # W^T W = S^-1
    torch.testing.assert_close(w.T @ w, torch.linalg.inv(s), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(chol.whiten_t(w), torch.linalg.inv(s), rtol=1e-9, atol=1e-12)
    mine = tiny.whitened_neurons(chol, n)
    ref = tiny.new_neurons(spec.inv_sqrt_matrix(), n)
    for name in ("eigenvalues", "alpha", "omega"):
        torch.testing.assert_close(getattr(mine, name), getattr(ref, name), rtol=1e-8, atol=1e-10)
    back = tiny.whitened_neurons(spec, n)  # the spectrum through the same route
    torch.testing.assert_close(back.alpha, ref.alpha, rtol=1e-9, atol=1e-12)


def test_lazy_neurons_match_whitened_neurons():
    """Singular values now, the same neurons on first access (once), cast to ``dtype``."""
    s = psd(40, 5)
    s[:, -1] = s[-1, :] = 0.0  # singular: the spectrum route
    g = torch.Generator().manual_seed(2)
    n = torch.randn(40, 9, generator=g, dtype=torch.float64)
    for factor in (tiny.covariance_solver(psd(40, 6), 1e-12), tiny.covariance_solver(s, 1e-12)):
        ref = tiny.whitened_neurons(factor, n)
        lazy = tiny.LazyNeurons(factor, n, torch.float32)
        assert lazy._solution is None and lazy.eigenvalues.dtype == torch.float64
        torch.testing.assert_close(lazy.eigenvalues, ref.eigenvalues, rtol=1e-12, atol=1e-14)
        assert lazy.alpha.dtype == lazy.omega.dtype == torch.float32
        assert lazy.solution() is lazy.solution()
        torch.testing.assert_close(lazy.alpha, ref.alpha.float())
        torch.testing.assert_close(lazy.omega, ref.omega.float())


def test_set_threads_returns_previous_and_validates():
    from growenv.threads import set_threads, using_threads

    before = torch.get_num_threads()
    try:
        assert set_threads(1) == before and torch.get_num_threads() == 1
        assert set_threads(None) == 1 and torch.get_num_threads() == 1  # None: left alone
        with using_threads(2):
            assert torch.get_num_threads() == 2
        assert torch.get_num_threads() == 1
        for bad in (0, -1, True, 1.5, "2"):
            with pytest.raises(ValueError, match=r"^threads: expected an int >= 1 or None, got"):
                set_threads(bad)
    finally:
        torch.set_num_threads(before)


def _child_parallel_map(queue) -> None:
    queue.put(parallel_map(lambda i: i + 1, range(4), 2))


def test_parallel_map_in_a_forked_child_returns():
    """The pool's threads do not survive a fork: a child must not submit to the parent's
    executor (it waited forever, as in Gymnasium's async vector env)."""
    import multiprocessing

    assert parallel_map(lambda i: i, range(4), 2) == [0, 1, 2, 3]  # the parent's pool exists
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_parallel_map, args=(queue,))
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail("parallel_map in a forked child did not return within 60 s")
    assert child.exitcode == 0
    assert queue.get(timeout=5) == [1, 2, 3, 4]


def _child_torch(queue) -> None:
    a = torch.randn(300, 300)
    for _ in range(3):
        a = torch.tanh(a @ a)
    queue.put(torch.get_num_threads())


def test_torch_in_a_forked_child_runs_on_one_thread():
    """torch's OpenMP pool does not survive a fork: a child using 2 threads after the parent
    did waited forever. The child runs on one thread instead."""
    import multiprocessing

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        a = torch.randn(300, 300)
        for _ in range(3):
            a @ a  # the parent's pool exists
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_child_torch, args=(queue,))
        child.start()
        child.join(60)
        if child.is_alive():
            child.kill()
            child.join()
            pytest.fail("torch in a forked child did not return within 60 s")
        assert child.exitcode == 0 and queue.get(timeout=5) == 1
        assert torch.get_num_threads() == 2  # the parent keeps its setting
    finally:
        torch.set_num_threads(before)
