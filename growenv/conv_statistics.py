"""TINY statistics of a :class:`~growenv.conv.GrowingConvNet`, in one forward+backward pass.

Conventions (as gromo's conv modules, so that the numbers agree): statistics are **sums over
spatial positions and means over samples**; ``v = -dl_i/da`` with ``l_i`` the sample's own
loss. A patch vector ``b`` carries a trailing ones entry (the bias); patch entries are
ordered as ``F.unfold`` orders them (channel-major, then kernel row, then column), so they
reshape to conv weights directly.

Per convolution ``l`` (input map ``Y_l``, patches ``b_l(p)`` at its output positions ``p``):
``S_l = E[sum_p b_l b_l^T]``, ``M_l = E[sum_p b_l v_l^T]``, ``vv_l = E[sum_p ||v_l||^2]``;
for the head (pooled features ``f``): ``S = E[[f;1][f;1]^T]`` etc.

Site ``j`` between conv ``j`` and conv ``j + 1``: a new channel is
``pool(sigma(alpha . b_j(q)))`` at hidden positions ``q``; linearised, pooling acts on the
patches, giving ``u(q) = pool(b_j)(q)`` (``u = 0`` in conv ``j + 1``'s zero padding). Its
outgoing kernel ``omega`` (``out x k x k`` for ``kernel="full"``, the centre tap only for
``"restricted"``) adds ``sum_o omega_{c,o} alpha . u(s p + o - pad)`` to output ``c`` at
``p``. Hence, with ``u_o(p) = u(s p + o - pad)``:

* ``S_growth = E[sum_p sum_o u_o u_o^T] = E[sum_q w(q) u(q) u(q)^T]`` where ``w(q)`` counts
  the ``(p, o)`` pairs reaching ``q`` (border effects of padding and stride),
* ``P[:, (c, o)] = E[sum_p u_o(p) v_c(p)]`` and the cross term
  ``C[o] = E[sum_p u_o(p) b_{j+1}(p)^T]``, so that ``N[:, (c, o)] = P - C[o] dW_c``.

The last stage's site feeds the head through the global average: the same closed form with
the position-averaged patches ``mean_q u(q)`` (MLP-like, per sample).

**How it is computed.** ``u`` is linear in the conv input ``X``: ``u(q) = sum_t A_t X(S q +
t)`` (``A``: the conv's kernel offsets convolved with the pooling window). Every statistic
is therefore a weighted sum, over positions, of products ``X(sigma r + delta) Z(r)`` with
``Z`` one of ``X``, the next input ``H`` or the gradient ``v``, and a *separable* weight
(padding masks, stride lattices and ``w(q)`` are products of a row and a column factor).
Those weights are constant (per stride phase) away from the borders, so positions are split
into cells: each border row/column on its own, and one cell per stride phase for the
interior; ``conv2d`` weight-gradients give each cell's correlations at all offsets
``delta`` at once (:func:`_correlate`). This is exact and never forms the unfolded patches
(nor gromo's patch x offset x position tensor): the products are over the ``C_in`` channels
of ``X`` (not ``C_in k^2``) at ``(2k-1)^2`` to ``(3k-2)^2`` offsets, and the per-batch work
is these correlations alone; the cells are combined with the (small, fixed) geometry weights
once, after the last batch (two dense products per statistic). For a 16 -> 16 -> 16 3x3
pair that is ~6 GMAC per 128 32x32 images against ~25 GMAC for the unfolded cross term.

**One batch: the projected route.** The widest correlation is the cross term ``C`` (at
``(2S(k'-1) + T)^2`` offsets, 49 for the pair). The solver only needs
``N = P - C dW^T = E[sum_p u (v - dW b)^T]``: when the data are one batch, the best update
``dW`` of the next conv is solved from its own ``S`` and ``M`` first
(:meth:`ConvStatisticsAccumulator.project`), and ``P`` is correlated with the residual
gradient instead -- one convolution replaces ``C`` (4.6 instead of 6.0 GMAC for the pair).
Such statistics keep no raw ``P``/``C`` for those sites (``raw_correlation=True`` keeps
them, as streamed batches always do).

MaxPool stages are linearised as an average over the window (a max of equal values has no
linear derivative); preview, apply and the amplitude search use the real max.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from growenv import tiny
from growenv.conv import GrowingConvNet
from growenv.losses import PerSampleLoss, prepare_target, resolve_loss
from growenv.statistics import GrowthStatistics, iterate_batches
from growenv.threads import single_threaded

KERNELS = ("full", "restricted")


@dataclass
class ConvGrowthStatistics(GrowthStatistics):
    """Sample means (sums over positions) of the TINY statistics of a conv net.

    ``S``, ``M``, ``vv``: per layer (convolutions, then the head). Per site: ``S_growth``
    ``(D, D)``, ``P`` ``(D, O')`` with ``O' = out * k^2`` (full kernel, columns ordered
    ``(channel, kernel row, kernel column)``), ``out`` (restricted kernel or the head site),
    and the cross term ``C``: ``(k^2, D, E)`` for a full-kernel site, ``(D, E)`` otherwise,
    so that ``N = P - C dW^T`` (per offset) with :func:`growenv.tiny.projected_cross_correlation`.
    ``site_kernels[j]`` is ``"full"``, ``"restricted"`` or ``"linear"`` (the head site).
    """

    S_growth: list[torch.Tensor]
    site_kernels: list[str]
    # (rtol, atol, dtype) when the conv -> conv sites' P already holds N = P - C dW^T
    # (their C is None): computed in one pass from the residual gradient, see
    # ConvStatisticsAccumulator.project; the solve must use the same settings
    projection: tuple[float, float, torch.dtype] | None = None
    # factors of the layers' S computed for that projection (by layer), reused by the solve
    layer_factors: dict[int, tiny.CovarianceFactors] | None = None


# --------------------------------------------------------------------------- geometry (1-D)
def _lattice(pos: int, offset: int, stride: int, size: int) -> int:
    """1 if ``pos = stride * i + offset`` for some ``0 <= i < size``, else 0."""
    rel = pos - offset
    return int(rel % stride == 0 and 0 <= rel // stride < size)


def _tap_matrix(kernel: int, conv_stride: int, pool: int) -> list[list[float]]:
    """``A[o, t]``: weight of ``X(S q + t)`` in patch entry ``o`` (one dimension).

    Without pooling (``pool = 1``) the identity; with an average over ``pool`` positions of
    the pre-pool grid, ``A[o, conv_stride * d + o] = 1 / pool``.
    """
    span = conv_stride * (pool - 1) + kernel
    taps = [[0.0] * span for _ in range(kernel)]
    for o in range(kernel):
        for d in range(pool):
            taps[o][conv_stride * d + o] += 1.0 / pool
    return taps


def _tap_weights(
    x_len: int, span: int, step: int, pad: int, q_len: int, omega: list[float]
) -> list[list[float]]:
    """Per tap ``t``: the weight of ``X(r)`` read as ``X(step q + t - pad)`` at ``q``."""
    out = []
    for t in range(span):
        row = []
        for r in range(x_len):
            hit = _lattice(r, t - pad, step, q_len)
            row.append(omega[(r - t + pad) // step] if hit else 0.0)
        out.append(row)
    return out


def _growth_weights(h_len: int, k: int, stride: int, pad: int, o_len: int, offsets) -> list[float]:
    """``w(q)``: number of (output position, kernel offset) pairs of the next conv reading q."""
    return [float(sum(_lattice(q, o - pad, stride, o_len) for o in offsets)) for q in range(h_len)]


@dataclass(frozen=True)
class _Cells:
    """Partition of ``range(size)``: cell ``i`` holds ``start + step * m`` for ``m < count``."""

    size: int
    step: int
    cells: tuple[tuple[int, int], ...]


def _make_cells(vectors: list[list[float]], size: int, period: int) -> tuple[_Cells, list]:
    """Cells on which every vector is constant: border rows alone, interior by stride phase.

    Returns the cells and ``coef[v][i]``, the value of vector ``v`` on cell ``i``.
    """
    border = 0
    while border < size:
        lo, hi = border, size - border
        if all(v[i] == v[i + period] for v in vectors for i in range(lo, hi - period)):
            break
        border += 1
    lo, hi = border, max(size - border, border)
    cells = [(i, 1) for i in range(lo)]
    for phase in range(period):
        count = len(range(lo + phase, hi, period))
        if count:
            cells.append((lo + phase, count))
    cells += [(i, 1) for i in range(hi, size)]
    coef = [[v[start] for start, _ in cells] for v in vectors]
    return _Cells(size, period, tuple(cells)), coef


# ---------------------------------------------------------------------- correlations (n-D)
class _Padded:
    """A map read as zero outside its grid; ``window`` pads only the window it returns."""

    def __init__(self, a: torch.Tensor) -> None:
        self.t = a

    def window(self, start: tuple[int, int], length: tuple[int, int]) -> torch.Tensor:
        """``a[..., start0 : start0 + length0, start1 : start1 + length1]``, zero outside."""
        sl, pads = [], []
        for d in range(2):
            size = self.t.shape[-2 + d]
            lo, hi = max(start[d], 0), min(start[d] + length[d], size)
            valid = max(hi - lo, 0)
            sl.append(slice(lo, lo + valid))
            before = min(lo - start[d], length[d] - valid)
            pads.append((before, length[d] - valid - before))
        out = self.t[:, :, sl[0], sl[1]]
        if any(p for pair in pads for p in pair):
            out = F.pad(out, (*pads[1], *pads[0]))
        return out

    def transposed(self) -> _Padded:
        return _Padded(self.t.transpose(-1, -2))


def _runs(cells: _Cells) -> list[list[int]]:
    """Indices of the one-row cells, grouped in runs of adjacent rows."""
    singles = sorted((start, i) for i, (start, count) in enumerate(cells.cells) if count == 1)
    runs: list[list[int]] = []
    for k, (start, i) in enumerate(singles):
        if k and start == singles[k - 1][0] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _bands(
    a: _Padded, b, ca: int, sigma, dmin, kd, rows: _Cells, cols: _Cells, out: torch.Tensor
) -> None:
    """Cells one row high and several columns wide: each run of consecutive border rows
    against one column cell is one weight-gradient (the rows stacked as channels, the
    kernel taller by ``sigma`` per extra row)."""
    n, cb = b.shape[0], b.shape[1]
    runs = _runs(rows)
    for j, (c0, m) in enumerate(cols.cells):
        if m == 1:
            continue
        step = sigma * cols.step
        col_sl = slice(c0, c0 + cols.step * (m - 1) + 1, cols.step)
        for run in runs:
            r0 = rows.cells[run[0]][0]
            height = sigma * (len(run) - 1) + kd[0]
            win = a.window(
                (sigma * r0 + dmin[0], sigma * c0 + dmin[1]), (height, step * (m - 1) + kd[1])
            )
            bs = b[:, :, r0 : r0 + len(run), col_sl].transpose(1, 2).reshape(n, len(run) * cb, 1, m)
            size = (len(run) * cb, ca, height, kd[1])
            g = torch.nn.grad.conv2d_weight(win, size, bs, stride=(1, step))
            for t, i in enumerate(run):
                out[i, j] = g[t * cb : (t + 1) * cb, :, sigma * t : sigma * t + kd[0]]


def _correlate(
    a: torch.Tensor,
    b: torch.Tensor,
    sigma: int,
    dmin: tuple[int, int],
    dmax: tuple[int, int],
    rows: _Cells,
    cols: _Cells,
) -> torch.Tensor:
    """``G[i, j, cb, ca, d0, d1] = sum_n sum_{r in cell (i, j)} b(r) a(sigma r + dmin + d)``.

    ``a`` (n, ca, ., .) is zero outside its grid; ``b`` (n, cb, R0, R1). Single-position
    cells (corners) are one batched einsum; adjacent border rows (columns) of one side are one
    conv2d weight-gradient per interior column (row) cell; a single interior cell is the
    full-grid correlation (the conv's own zero padding, half the offsets when ``a is b``)
    minus all the others; with stride phases, each interior cell takes its own strided
    weight-gradient. Few, large kernel calls: on shared cores every call pays for its
    threads' synchronisation.
    """
    kd = (dmax[0] - dmin[0] + 1, dmax[1] - dmin[1] + 1)
    ca = a.shape[1]
    ap = _Padded(a)
    out = a.new_zeros(len(rows.cells), len(cols.cells), b.shape[1], ca, *kd)
    corners = [
        (i, j)
        for i, (r0, n0) in enumerate(rows.cells)
        for j, (c0, n1) in enumerate(cols.cells)
        if n0 == 1 and n1 == 1
    ]
    if corners:
        wins = []
        for row_run in _runs(rows):  # one padded region per block of corners
            r_first, r_last = rows.cells[row_run[0]][0], rows.cells[row_run[-1]][0]
            for col_run in _runs(cols):
                c_first, c_last = cols.cells[col_run[0]][0], cols.cells[col_run[-1]][0]
                region = ap.window(
                    (sigma * r_first + dmin[0], sigma * c_first + dmin[1]),
                    (sigma * (r_last - r_first) + kd[0], sigma * (c_last - c_first) + kd[1]),
                )
                for i, j in itertools.product(row_run, col_run):
                    r0 = sigma * (rows.cells[i][0] - r_first)
                    c0 = sigma * (cols.cells[j][0] - c_first)
                    wins.append(((i, j), region[:, :, r0 : r0 + kd[0], c0 : c0 + kd[1]]))
        keys = [key for key, _ in wins]
        bs = torch.stack([b[:, :, rows.cells[i][0], cols.cells[j][0]] for i, j in keys])
        res = torch.einsum("snb,snaxy->sbaxy", bs, torch.stack([w for _, w in wins]))
        for k, value in zip(keys, res, strict=True):
            out[k] = value
    _bands(ap, b, ca, sigma, dmin, kd, rows, cols, out)
    flipped = out.transpose(0, 1).transpose(-1, -2)  # a view: columns become rows
    _bands(
        ap.transposed(), b.transpose(-1, -2), ca, sigma, dmin[::-1], kd[::-1], cols, rows, flipped
    )
    big = [
        (i, j)
        for i, (r0, n0) in enumerate(rows.cells)
        for j, (c0, n1) in enumerate(cols.cells)
        if n0 > 1 and n1 > 1
    ]
    weight_size = (b.shape[1], ca, *kd)
    if len(big) == 1 and rows.step == 1 and cols.step == 1:
        if a is b and sigma == 1 and dmin == (-dmax[0], -dmax[1]) and dmax[0] > 0:
            full = _symmetric_full_correlation(a, dmax)
        else:
            full = _full_correlation(ap, b, sigma, dmin, dmax, weight_size)
        out[big[0]] = full - out.sum((0, 1))
        return out
    for i, j in big:
        (r0, n0), (c0, n1) = rows.cells[i], cols.cells[j]
        stride = (sigma * rows.step, sigma * cols.step)
        first = (sigma * r0 + dmin[0], sigma * c0 + dmin[1])
        length = (stride[0] * (n0 - 1) + kd[0], stride[1] * (n1 - 1) + kd[1])
        bs = b[
            :,
            :,
            r0 : r0 + rows.step * (n0 - 1) + 1 : rows.step,
            c0 : c0 + cols.step * (n1 - 1) + 1 : cols.step,
        ]
        out[i, j] = torch.nn.grad.conv2d_weight(
            ap.window(first, length), weight_size, bs, stride=stride
        )
    return out


def _full_correlation(ap: _Padded, b, sigma, dmin, dmax, weight_size) -> torch.Tensor:
    """Correlation over the whole grid of ``b``; uses the conv's own zero padding when it
    fits (no copy of ``a``)."""
    a, size, kd = ap.t, b.shape[-2:], weight_size[-2:]
    pad = [-dmin[d] for d in range(2)]
    fits = all(
        pad[d] >= 0
        and (a.shape[-2 + d] + 2 * pad[d] - kd[d]) // sigma + 1 == size[d]
        and sigma * (size[d] - 1) + dmax[d] <= a.shape[-2 + d] - 1 + pad[d]
        for d in range(2)
    )
    if fits:
        return torch.nn.grad.conv2d_weight(a, weight_size, b, stride=sigma, padding=tuple(pad))
    length = tuple(sigma * (size[d] - 1) + kd[d] for d in range(2))
    return torch.nn.grad.conv2d_weight(ap.window(dmin, length), weight_size, b, stride=sigma)


def _symmetric_full_correlation(x: torch.Tensor, dmax: tuple[int, int]) -> torch.Tensor:
    """``sum_r x(r) x(r + d)^T`` over the whole grid for ``|d| <= dmax``, from half the
    offsets: ``G[-d] = G[d]^T`` when both sides are the same zero-padded map.

    The rows ``d0 >= 0`` come from one weight-gradient whose output map is ``x`` with
    ``dmax0`` zero rows on top: with the conv's symmetric padding it reads ``x(r + d)``.
    """
    c, k0, k1 = x.shape[1], dmax[0], dmax[1]
    b = F.pad(x, (0, 0, k0, 0))
    # high[cb, ca, i, j] = sum_r x_cb(r) x_ca(r + (i, j - k1)), d0 = i in [0, k0]
    high = torch.nn.grad.conv2d_weight(x, (c, c, k0 + 1, 2 * k1 + 1), b, padding=(k0, k1))
    low = high[:, :, 1:].flip(2, 3).transpose(0, 1)  # G[-d] = G[d]^T for d0 in [-k0, -1]
    return torch.cat([low, high], 2)


def _membership(cells: _Cells, like: torch.Tensor) -> torch.Tensor:
    """(n_cells, size) 0/1 matrix: which positions each cell holds."""
    m = like.new_zeros(len(cells.cells), cells.size)
    for i, (start, count) in enumerate(cells.cells):
        m[i, start : start + cells.step * (count - 1) + 1 : cells.step] = 1
    return m


def _cell_sums(b: torch.Tensor, rows: _Cells, cols: _Cells) -> torch.Tensor:
    """``sum_n sum_{r in cell (i, j)} b(r)``: (n_rows, n_cols, channels)."""
    return torch.einsum("ir,crs,js->ijc", _membership(rows, b), b.sum(0), _membership(cols, b))


def _tensor(values, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, device=like.device)


@dataclass(frozen=True)
class _Patches:
    """``u(q) = sum_t A[o, t] X(S q + t - pad)`` (per dimension) on a grid of ``q_size``."""

    kernel: int
    taps: list[list[float]]  # (kernel, span)
    step: int  # S
    pad: int
    q_size: tuple[int, int]

    @property
    def span(self) -> int:
        return len(self.taps[0])


def _stage_patches(stage, x_size: tuple[int, int], pooled: bool) -> _Patches:
    """Patches of conv ``stage`` at its output grid (``pooled``: after its pooling)."""
    conv_size = (stage.conv_size(x_size[0]), stage.conv_size(x_size[1]))
    if not pooled or stage.pool is None:
        taps = _tap_matrix(stage.kernel_size, stage.stride, 1)
        return _Patches(stage.kernel_size, taps, stage.stride, stage.padding, conv_size)
    taps = _tap_matrix(stage.kernel_size, stage.stride, stage.pool_size)
    step = stage.stride * stage.pool_step
    q_size = (stage.out_size(x_size[0]), stage.out_size(x_size[1]))
    return _Patches(stage.kernel_size, taps, step, stage.padding, q_size)


def _selection(coef: torch.Tensor, idx: torch.Tensor, kd: int) -> torch.Tensor:
    """``R[..., i, delta] = coef[..., i] * [delta == idx[...]]``: cell weights times the
    one-hot choice of the correlation offset, for one dimension."""
    onehot = F.one_hot(idx, kd).to(coef.dtype)  # (..., kd)
    return coef.unsqueeze(-1) * onehot.unsqueeze(-2)


def _contract(rows: torch.Tensor, cols: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``sum_{i, dr, j, dc} rows[P, i, dr] cols[Q, j, dc] g[i, j, B, A, dr, dc]`` -> (P, Q, B, A).

    ``rows``/``cols`` carry any number of leading dims (flattened here); two dense products.
    """
    lead_r, lead_c = rows.shape[:-2], cols.shape[:-2]
    nr, kr = rows.shape[-2:]
    nc, kc = cols.shape[-2:]
    cb, ca = g.shape[2], g.shape[3]
    rr, cc = rows.reshape(-1, nr * kr), cols.reshape(-1, nc * kc)
    y = cc @ g.permute(1, 5, 0, 4, 2, 3).reshape(nc * kc, -1)  # (Q, nr * kr * cb * ca)
    y = y.reshape(-1, nr * kr, cb * ca).transpose(0, 1).reshape(nr * kr, -1)
    out = (rr @ y).reshape(*lead_r, *lead_c, cb, ca)
    return out


class _CovPlan:
    """``E[sum_q omega_m(q) u(q) u(q)^T]`` for several separable weights ``omega_m``."""

    def __init__(self, patches: _Patches, x_size, omegas, q_period: int, like) -> None:
        self.p = patches
        span = patches.span
        taps = _tensor(patches.taps, like)  # (k, T)
        t = torch.arange(span, device=like.device)
        idx = t.view(1, -1) - t.view(-1, 1) + span - 1  # [tau, tau'] -> offset index
        self.cells, self.sel, self.bias_sel = [], [], []
        for d in range(2):
            vectors = []
            for omega in omegas:
                vectors += _tap_weights(
                    x_size[d], span, patches.step, patches.pad, patches.q_size[d], omega[d]
                )
            cells, coef = _make_cells(vectors, x_size[d], patches.step * q_period)
            self.cells.append(cells)
            coef = _tensor(coef, like).reshape(len(omegas), span, -1)  # (m, T, n_cells)
            sel = _selection(coef.unsqueeze(2).expand(-1, -1, span, -1), idx, 2 * span - 1)
            # (m, T, T', n_cells, 2T-1) -> taps on both sides: (m, k, k', n_cells, 2T-1)
            self.sel.append(torch.einsum("xa,yb,mabir->mxyir", taps, taps, sel))
            self.bias_sel.append(torch.einsum("xa,mai->mxi", taps, coef))
        self.counts = [sum(om[0]) * sum(om[1]) for om in omegas]

    def accumulate(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        t = self.p.span - 1
        return {
            "g": _correlate(x, x, 1, (-t, -t), (t, t), *self.cells),
            "s": _cell_sums(x, *self.cells),
        }

    def assemble(self, sums: dict[str, torch.Tensor], n: int) -> torch.Tensor:
        """(m, D, D) in float64."""
        g = sums["g"].double()  # (nr, nc, Cb, Ca, 2T-1, 2T-1)
        covs = []
        for m in range(len(self.counts)):
            z = _contract(self.sel[0][m], self.sel[1][m], g)  # (k, k', k, k', Cb, Ca)
            cb = z.shape[-2]
            covs.append(z.permute(4, 0, 2, 5, 1, 3).reshape(cb * self.p.kernel**2, -1))
        cov = torch.stack(covs)
        s = sums["s"].double()
        bias = torch.einsum("mxi,myj,ijc->mcxy", *self.bias_sel, s).reshape(len(covs), -1)
        d = cov.shape[-1] + 1
        out = cov.new_zeros(len(covs), d, d)
        out[:, :-1, :-1] = cov
        out[:, :-1, -1] = bias
        out[:, -1, :-1] = bias
        out[:, -1, -1] = torch.tensor(self.counts, dtype=out.dtype) * n
        return out


class _CrossPlan:
    """``P`` and the cross term ``C`` of a conv -> conv site (module docstring)."""

    def __init__(self, patches: _Patches, nxt, o_size, kernel: str, like) -> None:
        self.p, self.k2 = patches, nxt.kernel_size
        s2, p2, h_size = nxt.stride, nxt.padding, patches.q_size
        self.offsets = list(range(self.k2)) if kernel == "full" else [self.k2 // 2]
        step, pad, span = patches.step, patches.pad, patches.span
        k2_range, t_range = range(self.k2), range(span)
        no, dev = len(self.offsets), like.device
        taps = _tensor(patches.taps, like)  # (k, T)
        # P: sum over output positions p of X(step*s2*p + step*(o - p2) + t - pad) v(p)
        self.p_sigma = step * s2
        dp = [[step * (o - p2) + t - pad for t in t_range] for o in self.offsets]
        self.p_d = (min(map(min, dp)), max(map(max, dp)))
        p_idx = torch.tensor(dp, device=dev) - self.p_d[0]  # (no, T)
        # C: sum over hidden positions r of X(step*r + step*(o - o2) + t - pad) H(r)
        dk = [
            [[step * (o - o2) + t - pad for t in t_range] for o2 in k2_range] for o in self.offsets
        ]
        flat = [d for a in dk for b in a for d in b]
        self.k_d = (min(flat), max(flat))
        k_idx = torch.tensor(dk, device=dev) - self.k_d[0]  # (no, k2, T)
        b_idx = torch.arange(span, device=dev)  # bias column: X(step*q + t - pad), t - pad - dmin
        self.p_cells, self.k_cells, self.b_cells = [], [], []
        self.p_sel, self.p_bias, self.k_sel, self.k_bias, self.b_sel, counts = (
            [],
            [],
            [],
            [],
            [],
            [],
        )
        kd_p, kd_k = self.p_d[1] - self.p_d[0] + 1, self.k_d[1] - self.k_d[0] + 1
        for d in range(2):
            hl, ol = h_size[d], o_size[d]
            v_p = [[float(0 <= s2 * q + o - p2 < hl) for q in range(ol)] for o in self.offsets]
            cells, coef = _make_cells(v_p, ol, 1)
            self.p_cells.append(cells)
            coef = _tensor(coef, like)  # (no, n_cells)
            sel = _selection(coef.unsqueeze(1).expand(-1, span, -1), p_idx, kd_p)
            self.p_sel.append(torch.einsum("xa,oair->oxir", taps, sel))  # (no, k, nc, kd)
            self.p_bias.append(coef)
            v_k = [
                [_lattice(r, o2 - p2, s2, ol) * float(0 <= r + o - o2 < hl) for r in range(hl)]
                for o in self.offsets
                for o2 in k2_range
            ]
            cells, coef = _make_cells(v_k, hl, s2)
            self.k_cells.append(cells)
            coef = _tensor(coef, like).reshape(no, self.k2, -1)  # (no, k2, n_cells)
            sel = _selection(coef.unsqueeze(2).expand(-1, -1, span, -1), k_idx, kd_k)
            self.k_sel.append(torch.einsum("xa,obair->oxbir", taps, sel))  # (no, k, k2, nc, kd)
            self.k_bias.append(coef)
            v_b = [[float(_lattice(q, o - p2, s2, ol)) for q in range(hl)] for o in self.offsets]
            cells, coef = _make_cells(v_b, hl, s2)
            self.b_cells.append(cells)
            coef = _tensor(coef, like)  # (no, n_cells)
            sel = _selection(coef.unsqueeze(1).expand(-1, span, -1), b_idx.expand(no, -1), span)
            self.b_sel.append(torch.einsum("xa,oair->oxir", taps, sel))  # (no, k, nc, T)
            counts.append(_tensor([sum(v) for v in v_p], like))
        self.counts = counts[0].view(-1, 1) * counts[1].view(1, -1)

    def accumulate(self, x: torch.Tensor, h: torch.Tensor, v: torch.Tensor) -> dict:
        pad, span = self.p.pad, self.p.span
        ones = x.new_ones(1, 1, *h.shape[-2:])
        return {
            **self.accumulate_p(x, v),
            "gk": _correlate(
                x, h, self.p.step, (self.k_d[0],) * 2, (self.k_d[1],) * 2, *self.k_cells
            ),
            "sh": _cell_sums(h, *self.k_cells),
            "gb": _correlate(
                x.sum(0, keepdim=True),
                ones,
                self.p.step,
                (-pad,) * 2,
                (span - 1 - pad,) * 2,
                *self.b_cells,
            ),  # fmt: skip
        }

    def accumulate_p(self, x: torch.Tensor, v: torch.Tensor) -> dict:
        """The ``P`` correlations of ``x`` with the gradient ``v`` (alone: with the residual
        gradient, for :meth:`ConvStatisticsAccumulator.project`)."""
        return {
            "gp": _correlate(
                x, v, self.p_sigma, (self.p_d[0],) * 2, (self.p_d[1],) * 2, *self.p_cells
            ),
            "sv": _cell_sums(v, *self.p_cells),
        }

    def assemble_p(self, sums: dict) -> torch.Tensor:
        """``P`` (D, out * n_offsets), float64, not normalised."""
        no, k = len(self.offsets), self.p.kernel
        # P[(c, o1), (cout, o)]: (o_r, o1r, o_c, o1c, cout, c)
        z = _contract(self.p_sel[0], self.p_sel[1], sums["gp"].double())
        cout, c = z.shape[-2:]
        pm = z.permute(5, 1, 3, 4, 0, 2).reshape(c * k * k, cout * no * no)
        pb = torch.einsum("ai,bj,ijq->qab", *self.p_bias, sums["sv"].double()).reshape(1, -1)
        return torch.cat([pm, pb], 0)

    def assemble(self, sums: dict, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``P`` (D, out * n_offsets) and ``C`` (n_offsets, D, E), float64, not normalised."""
        no, k2, k = len(self.offsets), self.k2, self.p.kernel
        p = self.assemble_p(sums)
        # C[o][(c, o1), (h, o2)]: (o_r, o1r, o2r, o_c, o1c, o2c, h, c)
        z = _contract(self.k_sel[0], self.k_sel[1], sums["gk"].double())
        hc, c = z.shape[-2:]
        kk = z.permute(0, 3, 7, 1, 4, 6, 2, 5).reshape(no * no, c * k * k, hc * k2 * k2)
        zb = _contract(self.b_sel[0], self.b_sel[1], sums["gb"].double())  # (o_r,o1r,o_c,o1c,1,c)
        kcol = zb[..., 0, :].permute(0, 2, 4, 1, 3).reshape(no * no, -1)
        krow = torch.einsum("abi,cdj,ijh->achbd", *self.k_bias, sums["sh"].double())
        out = kk.new_zeros(no * no, kk.shape[1] + 1, kk.shape[2] + 1)
        out[:, :-1, :-1] = kk
        out[:, :-1, -1] = kcol
        out[:, -1, :-1] = krow.reshape(no * no, -1)
        out[:, -1, -1] = self.counts.reshape(-1) * n
        return p, out


class _HeadPlan:
    """Position-averaged patches ``mean_q u(q)`` of the last stage, per sample."""

    def __init__(self, patches: _Patches, x_size, like) -> None:
        self.p = patches
        q, span, step, pad = patches.q_size, patches.span, patches.step, patches.pad
        self.pads = [max(0, step * (q[d] - 1) + span - 1 - pad - (x_size[d] - 1)) for d in range(2)]
        self.taps = torch.tensor(patches.taps, dtype=like.dtype, device=like.device)

    def mean_patches(self, x: torch.Tensor) -> torch.Tensor:
        p, (qh, qw) = self.p, self.p.q_size
        xp = F.pad(x, (p.pad, self.pads[1], p.pad, self.pads[0]))
        sums = [
            [
                xp[
                    :,
                    :,
                    r : r + p.step * (qh - 1) + 1 : p.step,
                    c : c + p.step * (qw - 1) + 1 : p.step,
                ].sum((-2, -1))
                for c in range(p.span)
            ]
            for r in range(p.span)
        ]
        ws = torch.stack([torch.stack(row, -1) for row in sums], -2)  # (n, C, T, T)
        u = torch.einsum("xa,yb,ncab->ncxy", self.taps, self.taps, ws).reshape(x.shape[0], -1)
        return torch.cat([u / (qh * qw), u.new_ones(x.shape[0], 1)], 1)


def _ones_omega(q_size) -> tuple[list[float], list[float]]:
    return ([1.0] * q_size[0], [1.0] * q_size[1])


class ConvStatisticsAccumulator:
    """Streams batches of stage inputs and pre-activation gradients into running sums.

    The per-batch work is the cell correlations (module docstring); :meth:`result` combines
    them with the geometry weights once. No host synchronisation happens in :meth:`add`.
    """

    def __init__(self, net, kernel: str = "full") -> None:
        if kernel not in KERNELS:
            raise ValueError(f"kernel: expected one of {KERNELS}, got {kernel!r}")
        self.net, self.kernel = net, kernel
        self._sums: dict | None = None
        self._loss: torch.Tensor | None = None
        self._sizes: list | None = None
        self._cross = True
        self._covs: dict[int, torch.Tensor] = {}  # assembled layer covariances (_layer_covs)
        self.num_samples = 0
        # (rtol, atol, dtype) of the best updates the cross terms were projected with
        self.projection: tuple[float, float, torch.dtype] | None = None
        self.layer_factors: dict[int, tiny.CovarianceFactors] | None = None

    def _build(self, inputs: list[torch.Tensor]) -> None:
        net, like = self.net, inputs[0]
        stages, num = net.stages, net.num_sites
        sizes = [tuple(t.shape[-2:]) for t in inputs[:num]]
        self._sizes = sizes
        self.layer_plans, self.growth_plans, self.cross_plans = [], [], []
        for l, stage in enumerate(stages):
            patches = _stage_patches(stage, sizes[l], pooled=False)
            omegas, period, shared = [_ones_omega(patches.q_size)], 1, False
            if l < num - 1:
                nxt, h_size = stages[l + 1], sizes[l + 1]
                o_size = (nxt.conv_size(h_size[0]), nxt.conv_size(h_size[1]))
                offsets = (
                    range(nxt.kernel_size) if self.kernel == "full" else [nxt.kernel_size // 2]
                )
                w = tuple(
                    _growth_weights(
                        h_size[d], nxt.kernel_size, nxt.stride, nxt.padding, o_size[d], offsets
                    )
                    for d in range(2)
                )
                pooled = _stage_patches(stage, sizes[l], pooled=True)
                if stage.pool is None:
                    omegas, period, shared = [*omegas, w], nxt.stride, True
                else:
                    self.growth_plans.append(_CovPlan(pooled, sizes[l], [w], nxt.stride, like))
                if shared:
                    self.growth_plans.append(None)
                self.cross_plans.append(_CrossPlan(pooled, nxt, o_size, self.kernel, like))
            self.layer_plans.append(_CovPlan(patches, sizes[l], omegas, period, like))
        last = stages[-1]
        self.head_plan = _HeadPlan(_stage_patches(last, sizes[-1], pooled=True), sizes[-1], like)

    def _batch(self, inputs, grads, weight_grads, cross: bool) -> dict:
        net, num = self.net, self.net.num_sites
        out: dict = {"layers": [], "growth": [], "cross": []}
        for l in range(len(net.stages)):
            y, g = inputs[l], grads[l]
            stats = self.layer_plans[l].accumulate(y)
            stats["m"] = torch.cat([weight_grads[l].flatten(1).T, g.sum((0, 2, 3)).unsqueeze(0)], 0)
            stats["vv"] = g.square().sum()
            out["layers"].append(stats)
            if l < num - 1:
                plan = self.growth_plans[l]
                out["growth"].append(plan.accumulate(y) if plan is not None else {})
                cross_plan = self.cross_plans[l]
                terms = cross_plan.accumulate(y, inputs[l + 1], grads[l + 1]) if cross else {}
                out["cross"].append(terms)
        f, g = inputs[-1], grads[-1]
        b = torch.cat([f, f.new_ones(f.shape[0], 1)], 1)
        u = self.head_plan.mean_patches(inputs[num - 1])
        out["head"] = {"s": b.T @ b, "m": b.T @ g, "vv": g.square().sum()}
        out["head_site"] = {"s": u.T @ u, "p": u.T @ g, "c": u.T @ b}
        return out

    def add(
        self,
        inputs: list[torch.Tensor],
        grads: list[torch.Tensor],
        losses: torch.Tensor,
        weight_grads: list[torch.Tensor],
        cross: bool = True,
    ) -> None:
        """Add one batch: stage inputs (+ pooled features), gradients (+ head), losses and
        the conv weights' gradients (as :func:`conv_layer_inputs_and_grads` returns them).

        ``cross=False`` leaves out the conv -> conv cross terms, for :meth:`project`.
        """
        if self.projection is not None or (self._sums is not None and not self._cross):
            raise RuntimeError("the projected route takes exactly one batch")
        if self._sizes is None:
            self._build(inputs)
        elif [tuple(t.shape[-2:]) for t in inputs[:-1]] != self._sizes:
            raise ValueError("x: all batches must have the same image size")
        self._cross = cross
        self._covs = {}  # the sums change: assemble anew
        batch = self._batch(inputs, grads, weight_grads, cross)
        if self._sums is None:
            self._sums, self._loss = batch, losses.sum()
        else:
            torch._foreach_add_(_leaves(self._sums), _leaves(batch))
            self._loss = self._loss + losses.sum()
        self.num_samples += losses.shape[0]

    def _layer_covs(self, l: int) -> torch.Tensor:
        """The assembled covariances of conv ``l``'s plan (its ``S``, then a shared site's
        ``S_growth``), float64 sums; assembled once, for :meth:`project` and :meth:`result`."""
        if l not in self._covs:
            self._covs[l] = self.layer_plans[l].assemble(self._sums["layers"][l], self.num_samples)
        return self._covs[l]

    def _layer_mean(self, l: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``S`` and ``M`` of conv ``l`` as :meth:`result` gives them (net dtype)."""
        layer, n = self._sums["layers"][l], self.num_samples
        s = self._layer_covs(l)[0] / n
        return s.to(self.net.dtype), (-layer["m"].double() / n).to(self.net.dtype)

    def project(
        self,
        inputs: list[torch.Tensor],
        grads: list[torch.Tensor],
        rtol: float,
        atol: float,
        dtype: torch.dtype,
    ) -> None:
        """Cross terms of the conv -> conv sites from the residual gradient (one batch only).

        After :meth:`add` with ``cross=False`` of the only batch: the best update ``dW`` of
        conv ``j + 1`` is solved from its ``S`` and ``M`` (as the solver will, with ``rtol``,
        ``atol`` in ``dtype``), and ``P`` is correlated with the residual gradient
        ``g + conv(H, dW)`` (the sign: ``v = -g``), which gives ``N = P - C dW^T`` directly:
        one convolution replaces the ``(2S(k'-1) + T)^2``-offset cross term ``C``.
        """
        if self._sums is None or self._cross or self.projection is not None:
            raise RuntimeError("project() follows exactly one add(..., cross=False)")
        net = self.net
        self.layer_factors = {}
        for j in range(net.num_sites - 1):
            s, m = self._layer_mean(j + 1)
            with single_threaded(s.device):
                factors = tiny.covariance_factors(s.to(dtype), rtol=rtol, atol=atol)
            self.layer_factors[j + 1] = factors
            dw, _ = tiny.best_update(factors.pinv, m.to(dtype))
            g = grads[j + 1]
            weight = dw[:, :-1].reshape(net.weights[j + 1].shape).to(g.dtype)
            stage = net.stages[j + 1]
            residual = F.conv2d(
                inputs[j + 1], weight, dw[:, -1].to(g.dtype), stage.stride, stage.padding
            ).add_(g)
            self._sums["cross"][j] = self.cross_plans[j].accumulate_p(inputs[j], residual)
        self.projection = (rtol, atol, dtype)

    def all_finite(self) -> torch.Tensor:
        """0-d bool tensor: the sums hold no NaN/inf (so neither did the data)."""
        if self._sums is None:
            return torch.tensor(True)
        first = self._sums["layers"][0]["s"]
        return torch.isfinite(self._loss) & torch.isfinite(first).all()

    def result(self) -> ConvGrowthStatistics:
        if self._sums is None or self.num_samples == 0:
            raise ValueError("data: no samples were given to the statistics pass")
        n, sums, num = self.num_samples, self._sums, self.net.num_sites
        dtype = self.net.dtype
        s_list, m_list, vv, sg, p_list, c_list, kinds = [], [], [], [], [], [], []
        if not self._cross and self.projection is None:
            raise RuntimeError("result(): the cross terms were left out and not projected")
        for l, layer in enumerate(sums["layers"]):
            covs = self._layer_covs(l)
            s_list.append(covs[0])
            m_list.append(-layer["m"].double())
            vv.append(layer["vv"].double())
            if l < num - 1:
                plan = self.growth_plans[l]
                sg.append(covs[1] if plan is None else plan.assemble(sums["growth"][l], n)[0])
                kinds.append(self.kernel)
                if self.projection is not None:
                    p_list.append(-self.cross_plans[l].assemble_p(sums["cross"][l]))
                    c_list.append(None)
                    continue
                p, c = self.cross_plans[l].assemble(sums["cross"][l], n)
                p_list.append(-p)
                c_list.append(c if self.kernel == "full" else c[0])
        head, site = sums["head"], sums["head_site"]
        s_list.append(head["s"].double())
        m_list.append(-head["m"].double())
        vv.append(head["vv"].double())
        sg.append(site["s"].double())
        p_list.append(-site["p"].double())
        c_list.append(site["c"].double())
        kinds.append("linear")

        def mean(ts: list[torch.Tensor | None]) -> list:
            return [None if t is None else (t / n).to(dtype) for t in ts]

        return ConvGrowthStatistics(
            S=mean(s_list),
            M=mean(m_list),
            vv=mean(vv),
            C=mean(c_list),
            P=mean(p_list),
            loss=self._loss / n,
            num_samples=n,
            S_growth=mean(sg),
            site_kernels=kinds,
            projection=self.projection,
            layer_factors=self.layer_factors,
        )


def _leaves(tree) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    values = tree.values() if isinstance(tree, dict) else tree
    return [leaf for value in values for leaf in _leaves(value)]


def conv_layer_inputs_and_grads(
    net, x: torch.Tensor, y: torch.Tensor, loss_fn: PerSampleLoss
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
    """Forward ``x``, backpropagate the summed per-sample loss to every pre-activation.

    Returns the stage inputs (then the pooled features), the gradients ``dl_i/da`` of every
    conv and of the head, the per-sample losses, and the gradients of the conv weights
    (``sum_i dl_i/dW``: ``M`` without its bias row). Autograd computes those with the input
    gradients (one fused kernel per conv), cheaper than separate weight-gradient calls.
    """
    inputs: list[torch.Tensor] = []
    pre: list[torch.Tensor] = []
    weights = [w.detach().requires_grad_(True) for w in net.weights[:-1]]
    with torch.enable_grad():
        h = x.detach()
        for l, stage in enumerate(net.stages):
            inputs.append(h)
            a = F.conv2d(h, weights[l], net.biases[l].detach(), stage.stride, stage.padding)
            pre.append(a)
            h = net.stage_output(a, l)
        f = h.mean((-2, -1))
        inputs.append(f)
        out = F.linear(f, net.weights[-1].detach(), net.biases[-1].detach())
        pre.append(out)
        losses = loss_fn(out, y)
        grads = torch.autograd.grad(losses.sum(), pre + weights)
    num = len(pre)
    return [t.detach() for t in inputs], list(grads[:num]), losses.detach(), list(grads[num:])


def compute_conv_statistics(
    net,
    x: torch.Tensor | Iterable,
    y: torch.Tensor | None = None,
    loss: str | PerSampleLoss = "mse",
    kernel: str = "full",
    batch_size: int | None = None,
    check_finite: bool = True,
    *,
    raw_correlation: bool = False,
    rtol: float | None = None,
    atol: float = tiny.DEFAULT_ATOL,
    solve_dtype: torch.dtype = torch.float64,
) -> ConvGrowthStatistics:
    """One forward+backward pass of a :class:`~growenv.conv.GrowingConvNet` -> statistics.

    Parameters
    ----------
    net
        The network.
    x, y
        Image tensors (split into ``batch_size`` chunks), or ``x`` an iterable of ``(x, y)``
        batches and ``y=None``. All batches must have the same image size.
    loss
        ``"mse"``, ``"cross_entropy"`` or a callable returning per-sample losses.
    kernel
        ``"full"`` (a new channel has a full k x k kernel in the next conv, as gromo's
        ``FullConv2dGrowingModule``) or ``"restricted"`` (its centre tap only, as gromo's
        ``RestrictedConv2dGrowingModule``). The last site (feeding the head) is linear.
    check_finite
        Raise ``ValueError`` if the data hold NaN or inf (one host check after the loop).
    raw_correlation
        Keep the raw ``P`` and the cross term ``C`` of every conv -> conv site (needed by
        GradMax neurons and ``SiteReport.linear_gain``). By default, when the data are one
        batch, those sites get ``N = P - C dW^T`` directly (:meth:`ConvStatisticsAccumulator.
        project`: one convolution instead of the widest correlation, the same numbers);
        streamed batches always keep ``P`` and ``C``.
    rtol, atol, solve_dtype
        Settings of the best updates used in that projection (as the solve's; ``rtol=None``
        picks :func:`growenv.tiny.default_rtol` of the net's dtype).
    """
    if not isinstance(net, GrowingConvNet):
        raise TypeError(f"net: expected a GrowingConvNet, got {type(net).__name__}")
    if kernel not in KERNELS:
        raise ValueError(f"kernel: expected one of {KERNELS}, got {kernel!r}")
    loss_fn = resolve_loss(loss)
    acc = ConvStatisticsAccumulator(net, kernel)
    batches = iter(iterate_batches(x, y, batch_size))
    first = next(batches, None)
    second = next(batches, None) if first is not None else None
    project = not raw_correlation and first is not None and second is None
    done = [] if first is None else [first] if second is None else [first, second]
    for xb, yb in itertools.chain(done, batches):
        net.check_input(xb)
        xb = xb.to(device=net.device, dtype=net.dtype)
        yb = prepare_target(loss, yb.to(net.device), xb.shape[0], net.out_features)
        inputs, grads, losses, weight_grads = conv_layer_inputs_and_grads(net, xb, yb, loss_fn)
        acc.add(inputs, grads, losses, weight_grads, cross=not project)
    if check_finite and not bool(acc.all_finite()):
        raise ValueError("x/y: the data contain NaN or inf values")
    if project:
        rtol = tiny.default_rtol(net.dtype) if rtol is None else rtol
        acc.project(inputs, grads, rtol, atol, solve_dtype)
    return acc.result()


def conv_statistics_macs(net, samples: int, kernel: str = "full", projected: bool = False) -> int:
    """Multiply-adds of one statistics pass over ``samples`` images (as implemented).

    Forward, backward to the pre-activations, the layers' weight-gradients (``M``), and the
    correlations: ``C_in^2 (2T - 1)^2`` per input position for each layer's covariance, and
    per conv -> conv site ``C_in C_out (S(k'-1) + T)^2`` per output position for ``P`` and
    ``C_in C_hidden (2S(k'-1) + T)^2`` per hidden position for the cross term (``k' = 1``
    offsets for the restricted kernel), or, ``projected`` (one batch, the default of
    :func:`compute_conv_statistics`), a forward pass of the next conv instead of the cross
    term. Border cells add ~10-25% on small maps. The environment books the streamed
    (``projected=False``) figure: its compute budget is part of the task's definition.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel: expected one of {KERNELS}, got {kernel!r}")
    sizes = net.grid_sizes()
    fwd = net.flops()
    total = 2 * fwd + fwd - net.weights[-1].numel()  # forward, input grads, weight grads
    for l, stage in enumerate(net.stages):
        c_in = net.weights[l].shape[1]
        area = sizes[l][0] * sizes[l][1]
        patches = _stage_patches(stage, sizes[l], pooled=True)
        total += c_in * c_in * (2 * stage.kernel_size - 1) ** 2 * area
        if stage.pool is not None and l < net.num_sites - 1:
            total += c_in * c_in * (2 * patches.span - 1) ** 2 * area
        if l < net.num_sites - 1:
            nxt, h = net.stages[l + 1], sizes[l + 1]
            k2 = nxt.kernel_size if kernel == "full" else 1
            out_area = nxt.conv_size(h[0]) * nxt.conv_size(h[1])
            c_hidden, c_out = net.weights[l].shape[0], net.weights[l + 1].shape[0]
            total += c_in * c_out * (patches.step * (k2 - 1) + patches.span) ** 2 * out_area
            if projected:
                total += c_hidden * c_out * nxt.kernel_size**2 * out_area
                continue
            span_k = patches.step * (nxt.kernel_size - 1 + k2 - 1) + patches.span
            total += c_in * c_hidden * span_k**2 * h[0] * h[1]
    return int(total) * samples
