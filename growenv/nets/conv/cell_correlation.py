"""Correlations of feature maps at many offsets, summed over cells of positions.

The engine behind :mod:`~growenv.nets.conv.statistics`: a statistic that is a weighted sum over
positions ``r`` of products ``b(r) a(sigma r + delta)`` with a *separable* weight (a row
factor times a column factor) is split into cells on which both factors are constant
(:func:`make_cells`); :func:`correlate` gives every cell's correlations at all offsets
``delta`` from a few ``conv2d`` weight-gradients, and :func:`contract` combines them with
the per-cell weights (:func:`selection`) in two dense products.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Cells:
    """Partition of ``range(size)``: cell ``i`` holds ``start + step * m`` for ``m < count``."""

    size: int
    step: int
    cells: tuple[tuple[int, int], ...]


def make_cells(vectors: list[list[float]], size: int, period: int) -> tuple[Cells, list]:
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
    return Cells(size, period, tuple(cells)), coef


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


def _position_runs(cells: Cells, keys) -> list[list[int]]:
    """The one-position cells ``keys`` in runs of adjacent positions (position order)."""
    runs: list[list[int]] = []
    for i in sorted(keys, key=lambda i: cells.cells[i][0]):
        if runs and cells.cells[i][0] == cells.cells[runs[-1][-1]][0] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _bands(
    a: _Padded, b, ca: int, sigma, dmin, kd, rows: Cells, cols: Cells, out: torch.Tensor
) -> None:
    """Cells one row high and several columns wide: each run of consecutive border rows
    against one column cell is one weight-gradient (the rows stacked as channels, the
    kernel taller by ``sigma`` per extra row)."""
    n, cb = b.shape[0], b.shape[1]
    runs = _position_runs(rows, [i for i, (_, count) in enumerate(rows.cells) if count == 1])
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


# Largest period the relative form takes: its whole-grid phase correlations are strided
# weight-gradients, efficient at stride 2 but several times slower per multiply-add at
# stride 4 (on 8x8 phase grids) than the cell-wise path's interior windows.
MAX_RELATIVE_PERIOD = 2


def _phases(cells: Cells) -> dict[int, int] | None:
    """``{phase: cell index}`` of the interior cells (one per stride phase, ``start % step``),
    when every phase has an interior cell wider than one position, every other cell is a
    single border position and the period is at most ``MAX_RELATIVE_PERIOD``; else ``None``."""
    if cells.step > MAX_RELATIVE_PERIOD:
        return None
    wide = [i for i, (_, count) in enumerate(cells.cells) if count > 1]
    phases = {cells.cells[i][0] % cells.step: i for i in wide}
    singles = all(count == 1 for i, (_, count) in enumerate(cells.cells) if i not in wide)
    return phases if len(phases) == len(wide) == cells.step and singles else None


Support = tuple[dict[int, tuple[int, int] | None], dict[int, tuple[int, int] | None]]


def relative_form(
    sels: list[torch.Tensor], cells: list[Cells]
) -> tuple[list[torch.Tensor], Support | None]:
    """Cell weights relative to the interior's (periodic with the stride phases).

    ``sels[d]`` (..., n_cells, kd): per cell, the weight of each correlation offset, as
    :func:`contract` takes them. Extend the interior weights periodically to the borders
    (``R_ext(r) = R_phase(r)``): ``sum_{i,j} R_i C_j G[i, j]`` equals ``sum_{i,j} R'_i C'_j
    G'[i, j]`` for ``R'_phase = R_phase`` and, at a border position, ``R'_i = R_i -
    R_phase(r_i)`` (and so for ``C``), where ``G'`` takes each interior cell as its whole
    phase of the grid: ``G'[I, J]`` is a phase's whole-grid correlation, ``G'[i, J]`` one
    border row against all the columns of phase ``J``, and the corners stay single positions.
    ``R'_i`` is non-zero at few offsets (the border effects), and ``G'`` is only needed there:
    ``support[d][i] = (lo, hi)``, the range of offsets where ``R'_i`` is non-zero (``None``:
    nowhere). Pass ``support`` to :func:`correlate`.

    Returns ``sels`` unchanged and ``None`` unless each dimension has an interior cell per
    phase (:func:`_phases`; not on tiny maps).
    """
    phases = [_phases(c) for c in cells]
    if None in phases:
        return sels, None
    out, support = [], []
    for sel, c, ph in zip(sels, cells, phases, strict=True):
        border = [i for i in range(len(c.cells)) if i not in ph.values()]
        ref = [ph[c.cells[i][0] % c.step] for i in border]
        rel = sel.clone()
        rel[..., border, :] -= sel[..., ref, :]
        nonzero = rel.reshape(-1, *rel.shape[-2:]).abs().amax(0) > 0  # (n_cells, kd)
        sup: dict[int, tuple[int, int] | None] = {}
        for i in border:
            idx = nonzero[i].nonzero().flatten().tolist()
            sup[i] = (idx[0], idx[-1]) if idx else None
        out.append(rel)
        support.append(sup)
    return out, (support[0], support[1])


def _clip(support: dict, cells: Cells, sigma: int, dmin: int, a_len: int) -> dict[int, tuple]:
    """Per border cell (one position ``r``): its offsets ``(lo, hi)`` where ``a``'s position
    ``sigma r + dmin + d`` is in the grid (``a`` is zero elsewhere); empty ones left out."""
    out = {}
    for i, s in support.items():
        if s is None:
            continue
        r = sigma * cells.cells[i][0] + dmin
        lo, hi = max(s[0], -r), min(s[1], a_len - 1 - r)
        if lo <= hi:
            out[i] = (lo, hi)
    return out


def _band(
    cells: Cells, support: dict, run: list[int], sigma: int, dmin: int
) -> tuple[list[int], int, int]:
    """Per cell of ``run``: the position of ``a`` its first supported offset reads; and the
    first and last positions of ``a`` the whole run reads."""
    reads = [sigma * cells.cells[i][0] + dmin + support[i][0] for i in run]
    last = max(r + support[i][1] - support[i][0] for r, i in zip(reads, run, strict=True))
    return reads, min(reads), last


def _strips(a: torch.Tensor, b, sigma, dmin, kd, rows: Cells, support: dict, cols, out) -> None:
    """Border rows of ``b`` (one-row cells), each against all the columns of each column
    phase: ``out[i, J][cb, ca, d0, d1] = sum_n sum_{c in phase J} b(r_i, c) a(sigma r_i +
    dmin0 + d0, sigma c + dmin1 + d1)`` for ``d0`` in ``support[i]`` (clipped to ``a``'s grid,
    :func:`_clip`). Per run of adjacent border rows and column phase, one weight-gradient:
    the run's rows of ``b`` stacked as channels against the band of ``a``'s rows they read
    (a slice, no gather)."""
    if not support:
        return
    n, cb = b.shape[:2]
    ca, a_cols = a.shape[1], a.shape[-1]
    step = cols.step
    out_v = out.permute(0, 1, 4, 2, 3, 5)  # (rows, cols, d0, cb, ca, d1), a view
    plan = _strip_plan(rows, sigma, dmin[0], tuple(sorted(support.items())), out.device)
    phases = _phases(cols).items()
    for (r0, m, lo, hi), (k, i, d0, band_row) in plan:
        band = a[:, :, lo : hi + 1]  # the rows of a the run reads (clipped: in the grid)
        b_run = b[:, :, r0 : r0 + m].transpose(1, 2)  # (n, m, cb, W)
        for phase, j in phases:
            b_sub = b_run[..., phase::step]  # the phase's columns
            width = b_sub.shape[-1]
            first = sigma * phase + dmin[1]  # a's column for b's first column of the phase
            right = sigma * step * (width - 1) + first + kd[1] - a_cols
            win = band
            if first != 0 or right != 0:
                win = F.pad(band, (-first, right))  # (the columns' range, zero outside the grid)
            g = torch.nn.grad.conv2d_weight(
                win,
                (m * cb, ca, hi - lo + 1, kd[1]),
                b_sub.reshape(n, m * cb, 1, width),
                stride=(1, sigma * step),
            )
            g = g.reshape(m, cb, ca, hi - lo + 1, kd[1]).permute(0, 3, 1, 2, 4)
            out_v[i, j, d0] = g[k, band_row]


@functools.lru_cache(maxsize=256)
def _strip_plan(rows: Cells, sigma: int, dmin: int, support: tuple, device) -> list:
    """Per run of adjacent border rows (:func:`_strips`): its first row, length and the band
    of ``a``'s rows it reads, and the index tensors that place the band's rows in ``out``:
    ``(k, i, d0, band_row)`` for every row ``k`` of the run (cell ``i``) and offset ``d0``."""
    sup = dict(support)
    plan = []
    for run in _position_runs(rows, sup):
        first_reads, lo, hi = _band(rows, sup, run, sigma, dmin)
        entries = [
            (k, i, d0, read - lo + d0 - sup[i][0])
            for k, (i, read) in enumerate(zip(run, first_reads, strict=True))
            for d0 in range(sup[i][0], sup[i][1] + 1)
        ]
        index = torch.tensor(entries, device=device).unbind(1)
        plan.append(((rows.cells[run[0]][0], len(run), lo, hi), index))
    return plan


def _corners(a, b, sigma, dmin, rows: Cells, cols: Cells, sup_r, sup_c, out) -> None:
    """Single-position cells (a one-row cell of ``rows`` by one of ``cols``), at their
    (clipped, :func:`_clip`) offsets ``sup_r[i]`` x ``sup_c[j]`` only. Per block of adjacent
    corner positions, one product of ``b`` there with the block of ``a`` they read."""
    if not sup_r or not sup_c:
        return
    n = b.shape[0]
    out_v = out.permute(0, 1, 4, 5, 2, 3)  # (rows, cols, d0, d1, cb, ca), a view
    key = (tuple(sorted(sup_r.items())), tuple(sorted(sup_c.items())))
    for a_block, b_block, dst, src in _corner_plan(rows, cols, sigma, dmin, *key, out.device):
        block = a[(..., *a_block)]  # (n, ca, hr, hc)
        bb = b[(..., *b_block)]  # (n, cb, mr, mc)
        res = (bb.reshape(n, -1).T @ block.reshape(n, -1)).reshape(*bb.shape[1:], *block.shape[1:])
        out_v[dst] = res.permute(1, 2, 4, 5, 0, 3)[src]  # (mr, mc, hr, hc, cb, ca)


@functools.lru_cache(maxsize=256)
def _corner_plan(rows: Cells, cols: Cells, sigma, dmin, sup_r: tuple, sup_c: tuple, device):
    """Per block of adjacent corner positions (:func:`_corners`): the slices of ``a`` it
    reads and of ``b`` it holds, and the index tensors ``(i, j, d0, d1)`` in ``out`` and
    ``(k, m, row, column)`` in the block's product, for every corner and offset."""
    sup_r, sup_c = dict(sup_r), dict(sup_c)
    plan = []
    for run_r, run_c in itertools.product(_position_runs(rows, sup_r), _position_runs(cols, sup_c)):
        reads_r, r_lo, r_hi = _band(rows, sup_r, run_r, sigma, dmin[0])
        reads_c, c_lo, c_hi = _band(cols, sup_c, run_c, sigma, dmin[1])
        p0, p1 = rows.cells[run_r[0]][0], cols.cells[run_c[0]][0]
        dst, src = [], []
        for (k, i), (m, j) in itertools.product(enumerate(run_r), enumerate(run_c)):
            (s0, s1), (t0, t1) = sup_r[i], sup_c[j]
            for d0, d1 in itertools.product(range(s0, s1 + 1), range(t0, t1 + 1)):
                dst.append((i, j, d0, d1))
                src.append((k, m, reads_r[k] - r_lo + d0 - s0, reads_c[m] - c_lo + d1 - t0))
        plan.append(
            (
                (slice(r_lo, r_hi + 1), slice(c_lo, c_hi + 1)),
                (slice(p0, p0 + len(run_r)), slice(p1, p1 + len(run_c))),
                tuple(torch.tensor(dst, device=device).unbind(1)),
                tuple(torch.tensor(src, device=device).unbind(1)),
            )
        )
    return plan


def _correlate_relative(a, b, sigma, dmin, dmax, rows, cols, support: Support) -> torch.Tensor:
    """``G'`` of :func:`relative_form`: each phase pair's whole grid, border strips against
    each phase of the other dimension, corners."""
    kd = (dmax[0] - dmin[0] + 1, dmax[1] - dmin[1] + 1)
    ca, ap = a.shape[1], _Padded(a)
    phases_r, phases_c = _phases(rows), _phases(cols)
    if phases_r is None or phases_c is None:
        raise ValueError("support: given for cells without an interior cell per phase")
    out = a.new_zeros(len(rows.cells), len(cols.cells), b.shape[1], ca, *kd)
    step = (rows.step, cols.step)
    # a covariance: G_p[d] = G_{p + d}[-d]^T (_mirror_phases): only offsets d0 >= 0 computed
    symmetric = a is b and sigma == 1 and dmin == (-dmax[0], -dmax[1]) and dmax[0] > 0
    low = dmax[0] if symmetric else 0  # offsets d0 < 0 left to the symmetry
    weight_size = (b.shape[1], ca, kd[0] - low, kd[1])
    for (pr, i), (pc, j) in itertools.product(phases_r.items(), phases_c.items()):
        if symmetric and step == (1, 1):
            out[i, j] = _symmetric_full_correlation(a, dmax)
            continue
        first = (sigma * pr + dmin[0] + low, sigma * pc + dmin[1])
        last = (sigma * pr + dmax[0], sigma * pc + dmax[1])
        b_sub = b[..., pr :: step[0], pc :: step[1]]
        stride = (sigma * step[0], sigma * step[1])
        out[i, j, ..., low:, :] = _full_correlation(ap, b_sub, stride, first, last, weight_size)
    if symmetric and step != (1, 1):
        _mirror_phases(out, phases_r, phases_c, step, dmax)
    sup_r = _clip(support[0], rows, sigma, dmin[0], a.shape[-2])
    sup_c = _clip(support[1], cols, sigma, dmin[1], a.shape[-1])
    _strips(a, b, sigma, dmin, kd, rows, sup_r, cols, out)
    flipped = out.transpose(0, 1).transpose(-1, -2)  # a view: columns become rows
    at, bt = a.transpose(-1, -2), b.transpose(-1, -2)
    _strips(at, bt, sigma, dmin[::-1], kd[::-1], cols, sup_c, rows, flipped)
    _corners(a, b, sigma, dmin, rows, cols, sup_r, sup_c, out)
    return out


def _mirror_phases(out: torch.Tensor, phases_r, phases_c, step, dmax) -> None:
    """Fill a periodic covariance's offsets ``d0 < 0``: ``G_p[d] = G_{(p + d) mod step}[-d]^T``
    (``x(r) x(r + d)^T`` summed over phase ``p`` is ``x(s - d) x(s)^T`` summed over the
    phase of ``s = r + d``; the maps are zero outside the grid, so no term is lost)."""
    key = (tuple(phases_r.items()), tuple(phases_c.items()), step, dmax)
    di, si = _mirror_plan(*key, out.device)
    # advanced indices around the channel slices: the indexed dimension comes first
    out[di[0], di[1], :, :, di[2], di[3]] = out[si[0], si[1], :, :, si[2], si[3]].transpose(-1, -2)


@functools.lru_cache(maxsize=256)
def _mirror_plan(phases_r: tuple, phases_c: tuple, step, dmax, device) -> tuple:
    """Index tensors of :func:`_mirror_phases`: ``(i, j, d0, d1)`` filled from ``(i', j',
    -d0, -d1)`` (offset indices), for every phase pair and offset ``d0 < 0``."""
    phases_r, phases_c = dict(phases_r), dict(phases_c)
    k0, k1 = dmax
    dst, src = [], []
    for (pr, i), (pc, j) in itertools.product(phases_r.items(), phases_c.items()):
        for d0 in range(-k0, 0):
            for d1 in range(-k1, k1 + 1):
                i2, j2 = phases_r[(pr + d0) % step[0]], phases_c[(pc + d1) % step[1]]
                dst.append((i, j, d0 + k0, d1 + k1))
                src.append((i2, j2, k0 - d0, k1 - d1))
    return (
        torch.tensor(dst, device=device).unbind(1),
        torch.tensor(src, device=device).unbind(1),
    )


def correlate(
    a: torch.Tensor,
    b: torch.Tensor,
    sigma: int,
    dmin: tuple[int, int],
    dmax: tuple[int, int],
    rows: Cells,
    cols: Cells,
    support: Support | None = None,
) -> torch.Tensor:
    """``G[i, j, cb, ca, d0, d1] = sum_n sum_{r in cell (i, j)} b(r) a(sigma r + dmin + d)``.

    With ``support`` (from :func:`relative_form`), the relative ``G'`` instead, computed at
    the supported offsets only (zero elsewhere).

    ``a`` (n, ca, ., .) is zero outside its grid; ``b`` (n, cb, R0, R1). Single-position
    cells (corners) are one product per block of adjacent ones (:func:`_corners`); adjacent
    border rows (columns) of one side are one
    conv2d weight-gradient per interior column (row) cell; each interior cell takes its own
    (strided) weight-gradient. The plans use this form only where :func:`relative_form`
    does not apply (long periods with pooling, maps too small for an interior).
    """
    if support is not None:
        return _correlate_relative(a, b, sigma, dmin, dmax, rows, cols, support)
    kd = (dmax[0] - dmin[0] + 1, dmax[1] - dmin[1] + 1)
    ca = a.shape[1]
    ap = _Padded(a)
    out = a.new_zeros(len(rows.cells), len(cols.cells), b.shape[1], ca, *kd)
    singles = [
        _clip(
            {i: (0, kd[d] - 1) for i, (_, n) in enumerate(cells.cells) if n == 1},
            cells,
            sigma,
            dmin[d],
            a.shape[-2 + d],
        )
        for d, cells in enumerate((rows, cols))
    ]
    _corners(a, b, sigma, dmin, rows, cols, *singles, out)
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
    """Correlation over the whole grid of ``b`` (``sigma``: an int or one per dimension);
    uses the conv's own zero padding when it fits (no copy of ``a``)."""
    a, size, kd = ap.t, b.shape[-2:], weight_size[-2:]
    stride = (sigma, sigma) if isinstance(sigma, int) else tuple(sigma)
    pad = [-dmin[d] for d in range(2)]
    fits = all(
        pad[d] >= 0
        and (a.shape[-2 + d] + 2 * pad[d] - kd[d]) // stride[d] + 1 == size[d]
        and stride[d] * (size[d] - 1) + dmax[d] <= a.shape[-2 + d] - 1 + pad[d]
        for d in range(2)
    )
    if fits:
        return torch.nn.grad.conv2d_weight(a, weight_size, b, stride=stride, padding=tuple(pad))
    length = tuple(stride[d] * (size[d] - 1) + kd[d] for d in range(2))
    return torch.nn.grad.conv2d_weight(ap.window(dmin, length), weight_size, b, stride=stride)


def _symmetric_full_correlation(x: torch.Tensor, dmax: tuple[int, int]) -> torch.Tensor:
    """``sum_r x(r) x(r + d)^T`` over the whole grid for ``|d| <= dmax``, from half the
    offsets: ``G[-d] = G[d]^T`` when both sides are the same zero-padded map.

    The rows ``d0 >= 0`` come from one weight-gradient whose input is ``x`` with ``dmax0``
    zero rows below (padded by the conv only along the columns): it reads ``x(r + d)``.
    That shape runs ~20% faster in oneDNN than zero rows on top of the output map with a
    symmetric padding (same sums).
    """
    c, k0, k1 = x.shape[1], dmax[0], dmax[1]
    a = x.new_empty(*x.shape[:-2], x.shape[-2] + k0, x.shape[-1])  # F.pad, without filling
    a[..., x.shape[-2] :, :].zero_()  # all of it first
    a[..., : x.shape[-2], :].copy_(x)
    # high[cb, ca, i, j] = sum_r x_cb(r) x_ca(r + (i, j - k1)), d0 = i in [0, k0]
    high = torch.nn.grad.conv2d_weight(a, (c, c, k0 + 1, 2 * k1 + 1), x, padding=(0, k1))
    low = high[:, :, 1:].flip(2, 3).transpose(0, 1)  # G[-d] = G[d]^T for d0 in [-k0, -1]
    return torch.cat([low, high], 2)


@functools.lru_cache(maxsize=256)
def _membership(cells: Cells, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(n_cells, size) 0/1 matrix: which positions each cell holds (cached; read-only)."""
    m = torch.zeros(len(cells.cells), cells.size, dtype=dtype, device=device)
    for i, (start, count) in enumerate(cells.cells):
        m[i, start : start + cells.step * (count - 1) + 1 : cells.step] = 1
    return m


def cell_sums(b: torch.Tensor, rows: Cells, cols: Cells) -> torch.Tensor:
    """``sum_n sum_{r in cell (i, j)} b(r)``: (n_rows, n_cols, channels)."""
    m_r, m_c = (_membership(c, b.dtype, b.device) for c in (rows, cols))
    return torch.einsum("ir,crs,js->ijc", m_r, b.sum(0), m_c)


def selection(coef: torch.Tensor, idx: torch.Tensor, kd: int) -> torch.Tensor:
    """``R[..., i, delta] = coef[..., i] * [delta == idx[...]]``: cell weights times the
    one-hot choice of the correlation offset, for one dimension."""
    onehot = F.one_hot(idx, kd).to(coef.dtype)  # (..., kd)
    return coef.unsqueeze(-1) * onehot.unsqueeze(-2)


def contract(rows: torch.Tensor, cols: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``sum_{i, dr, j, dc} rows[P, i, dr] cols[Q, j, dc] g[i, j, B, A, dr, dc]`` -> (P, Q, B, A).

    ``rows``/``cols`` carry any number of leading dims (flattened here); two dense products.
    """
    return contract_each([(rows, cols)], g)[0]


def contract_each(pairs: list[tuple[torch.Tensor, torch.Tensor]], g: torch.Tensor) -> list:
    """:func:`contract` of ``g`` with each ``(rows, cols)`` pair; ``g`` is rearranged once."""
    nr, nc, cb, ca, kr, kc = g.shape
    g_cols = g.permute(1, 5, 0, 4, 2, 3).reshape(nc * kc, -1)  # (nc * kc, nr * kr * cb * ca)
    out = []
    for rows, cols in pairs:
        lead_r, lead_c = rows.shape[:-2], cols.shape[:-2]
        rr, cc = rows.reshape(-1, nr * kr), cols.reshape(-1, nc * kc)
        y = cc @ g_cols  # (Q, nr * kr * cb * ca)
        y = y.reshape(-1, nr * kr, cb * ca).transpose(0, 1).reshape(nr * kr, -1)
        out.append((rr @ y).reshape(*lead_r, *lead_c, cb, ca))
    return out
