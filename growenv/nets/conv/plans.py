"""Geometry of a conv net's TINY statistics: which correlations each statistic needs.

A plan holds, for one statistic, the cells of positions
(:class:`~growenv.nets.conv.cell_correlation.
Cells`), the correlation offsets and the per-cell weights (border effects of padding and
stride, the growth weights ``w(q)``, pooling taps); it runs the per-batch correlations
(``accumulate``) and assembles them into the statistic (``assemble``). Plans depend on the
geometry only (kernel sizes, strides, padding, pooling, image size), not on channel counts.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from growenv.nets.conv.cell_correlation import (
    MAX_RELATIVE_PERIOD,
    cell_sums,
    contract,
    contract_each,
    correlate,
    make_cells,
    relative_form,
    selection,
)


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


def growth_weights(h_len: int, k: int, stride: int, pad: int, o_len: int, offsets) -> list[float]:
    """``w(q)``: number of (output position, kernel offset) pairs of the next conv reading q."""
    return [float(sum(_lattice(q, o - pad, stride, o_len) for o in offsets)) for q in range(h_len)]


def _tensor(values, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, device=like.device)


@dataclass(frozen=True)
class Patches:
    """``u(q) = sum_t A[o, t] X(S q + t - pad)`` (per dimension) on a grid of ``q_size``."""

    kernel: int
    taps: list[list[float]]  # (kernel, span)
    step: int  # S
    pad: int
    q_size: tuple[int, int]

    @property
    def span(self) -> int:
        return len(self.taps[0])


def stage_patches(stage, x_size: tuple[int, int], pooled: bool) -> Patches:
    """Patches of conv ``stage`` at its output grid (``pooled``: after its pooling)."""
    conv_size = (stage.conv_size(x_size[0]), stage.conv_size(x_size[1]))
    if not pooled or stage.pool is None:
        taps = _tap_matrix(stage.kernel_size, stage.stride, 1)
        return Patches(stage.kernel_size, taps, stage.stride, stage.padding, conv_size)
    taps = _tap_matrix(stage.kernel_size, stage.stride, stage.pool_size)
    step = stage.stride * stage.pool_step
    q_size = (stage.out_size(x_size[0]), stage.out_size(x_size[1]))
    return Patches(stage.kernel_size, taps, step, stage.padding, q_size)


def _with_bias(cov: torch.Tensor, bias: torch.Tensor, counts: list[float], n: int) -> torch.Tensor:
    """(m, D + 1, D + 1) covariances of ``[u; 1]`` from those of ``u`` (m, D, D), the
    weighted sums of ``u`` (m, D) and the weights' totals per sample (``counts``)."""
    d = cov.shape[-1] + 1
    out = cov.new_zeros(cov.shape[0], d, d)
    out[:, :-1, :-1] = cov
    out[:, :-1, -1] = bias
    out[:, -1, :-1] = bias
    out[:, -1, -1] = torch.tensor(counts, dtype=out.dtype) * n
    return out


class CovPlan:
    """``E[sum_q omega_m(q) u(q) u(q)^T]`` for several separable weights ``omega_m``."""

    def __init__(self, patches: Patches, x_size, omegas, q_period: int, like) -> None:
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
            cells, coef = make_cells(vectors, x_size[d], patches.step * q_period)
            self.cells.append(cells)
            coef = _tensor(coef, like).reshape(len(omegas), span, -1)  # (m, T, n_cells)
            sel = selection(coef.unsqueeze(2).expand(-1, -1, span, -1), idx, 2 * span - 1)
            # (m, T, T', n_cells, 2T-1) -> taps on both sides: (m, k, k', n_cells, 2T-1)
            self.sel.append(torch.einsum("xa,yb,mabir->mxyir", taps, taps, sel))
            self.bias_sel.append(torch.einsum("xa,mai->mxi", taps, coef))
        self.sel, self.support = relative_form(self.sel, self.cells)
        self.counts = [sum(om[0]) * sum(om[1]) for om in omegas]

    def accumulate(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        t = self.p.span - 1
        return {
            "g": correlate(x, x, 1, (-t, -t), (t, t), *self.cells, self.support),
            "s": cell_sums(x, *self.cells),
        }

    def assemble(self, sums: dict[str, torch.Tensor], n: int) -> torch.Tensor:
        """(m, D, D) in float64."""
        g = sums["g"].double()  # (nr, nc, Cb, Ca, 2T-1, 2T-1)
        pairs = [(self.sel[0][m], self.sel[1][m]) for m in range(len(self.counts))]
        covs = []
        for z in contract_each(pairs, g):  # (k, k', k, k', Cb, Ca) per weight
            cb = z.shape[-2]
            covs.append(z.permute(4, 0, 2, 5, 1, 3).reshape(cb * self.p.kernel**2, -1))
        cov = torch.stack(covs)
        s = sums["s"].double()
        bias = torch.einsum("mxi,myj,ijc->mcxy", *self.bias_sel, s).reshape(len(covs), -1)
        return _with_bias(cov, bias, self.counts, n)


def _progressions(positions: list[int]) -> list[slice]:
    """Sorted ``positions`` as a few slices (greedy runs of constant step)."""
    out, run = [], [positions[0]]
    for q in positions[1:]:
        if len(run) == 1 or q - run[-1] == run[1] - run[0]:
            run.append(q)
        else:
            out.append(run)
            run = [q]
    out.append(run)
    return [slice(r[0], r[-1] + 1, r[1] - r[0] if len(r) > 1 else 1) for r in out]


class UnfoldCovPlan:
    """:class:`CovPlan`'s covariances from the patches themselves: for a strided conv whose
    position weights repeat with a period above
    :data:`~growenv.nets.conv.cell_correlation.MAX_RELATIVE_PERIOD` (a stride-2 conv followed by
    another), where the correlations would need many small strided weight-gradients. Its
    patches have no pooling. The batch is taken ``CHUNK`` images at a time.

    The positions are grouped by their weights (rows by the row factors of every weight,
    split into arithmetic progressions; columns likewise): every weight is constant on a
    group, so one Gram matrix per group gives all the weighted covariances (each patch
    enters one product, whatever the number of weights). A group's patches are copied
    once, from a strided view of the padded chunk, as rows ordered ``(kernel row, kernel
    column, channel)``; :meth:`assemble` reorders them as ``F.unfold`` orders patches.
    """

    CHUNK = 64

    def __init__(self, patches: Patches, omegas, like) -> None:
        if patches.span != patches.kernel:
            raise ValueError("UnfoldCovPlan: patches with pooling are not supported")
        self.p = patches
        groups = []  # per dimension: (weights of every omega, a slice of positions)
        for d in range(2):
            by_value: dict[tuple[float, ...], list[int]] = {}
            for q in range(patches.q_size[d]):
                by_value.setdefault(tuple(om[d][q] for om in omegas), []).append(q)
            groups.append([(w, sl) for w, qs in by_value.items() for sl in _progressions(qs)])
        self.slices, coef = [], []
        for (wr, rows), (wc, cols) in itertools.product(*groups):
            self.slices.append((rows, cols))
            coef.append([a * b for a, b in zip(wr, wc, strict=True)])
        self.coef = _tensor(coef, like).T  # (m, n_groups)
        self.counts = [sum(om[0]) * sum(om[1]) for om in omegas]

    def accumulate(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        p, groups, (q0, q1) = self.p, len(self.slices), self.p.q_size
        k, c = p.kernel, x.shape[1]
        d = c * k * k
        g = x.new_zeros(groups, d, d)
        s = x.new_zeros(groups, d)
        for xb in x.split(self.CHUNK):
            # (H, W, n, C) padded: patches are a strided view (q0, q1, n, k, k, C)
            xt = F.pad(xb, (p.pad,) * 4).permute(2, 3, 0, 1).contiguous()
            sh, sw, sn, sc = xt.stride()
            view = xt.as_strided(
                (q0, q1, xb.shape[0], k, k, c), (p.step * sh, p.step * sw, sn, sh, sw, sc)
            )
            for i, (rows, cols) in enumerate(self.slices):
                block = view[rows, cols].reshape(-1, d)  # the group's patches, one copy
                g[i].addmm_(block.T, block)
                s[i] += block.sum(0)
        return {"g": g, "s": s}

    def assemble(self, sums: dict[str, torch.Tensor], n: int) -> torch.Tensor:
        """(m, D, D) in float64, as :meth:`CovPlan.assemble`."""
        k, d = self.p.kernel, sums["s"].shape[-1]
        order = torch.arange(d, device=self.coef.device).reshape(k, k, -1).permute(2, 0, 1)
        order = order.reshape(-1)  # unfold's (channel, row, column) in ours (row, column, ch.)
        g = sums["g"].double()[:, order][:, :, order]
        g = torch.einsum("mk,kde->mde", self.coef, g)
        s = self.coef @ sums["s"].double()[:, order]
        return _with_bias(g, s, self.counts, n)


def cov_plan(patches: Patches, x_size, omegas, q_period: int, like) -> CovPlan | UnfoldCovPlan:
    """The covariance plan for these patches and weights: correlations by cells, or, for a
    long period without pooling, the unfolded patches (:class:`UnfoldCovPlan`)."""
    if patches.step * q_period > MAX_RELATIVE_PERIOD and patches.span == patches.kernel:
        return UnfoldCovPlan(patches, omegas, like)
    return CovPlan(patches, x_size, omegas, q_period, like)


class CrossPlan:
    """``P`` and the cross term ``C`` of a conv -> conv site (module docstring)."""

    def __init__(self, patches: Patches, nxt, o_size, kernel: str, like) -> None:
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
            cells, coef = make_cells(v_p, ol, 1)
            self.p_cells.append(cells)
            coef = _tensor(coef, like)  # (no, n_cells)
            sel = selection(coef.unsqueeze(1).expand(-1, span, -1), p_idx, kd_p)
            self.p_sel.append(torch.einsum("xa,oair->oxir", taps, sel))  # (no, k, nc, kd)
            self.p_bias.append(coef)
            v_k = [
                [_lattice(r, o2 - p2, s2, ol) * float(0 <= r + o - o2 < hl) for r in range(hl)]
                for o in self.offsets
                for o2 in k2_range
            ]
            cells, coef = make_cells(v_k, hl, s2)
            self.k_cells.append(cells)
            coef = _tensor(coef, like).reshape(no, self.k2, -1)  # (no, k2, n_cells)
            sel = selection(coef.unsqueeze(2).expand(-1, -1, span, -1), k_idx, kd_k)
            self.k_sel.append(torch.einsum("xa,obair->oxbir", taps, sel))  # (no, k, k2, nc, kd)
            self.k_bias.append(coef)
            v_b = [[float(_lattice(q, o - p2, s2, ol)) for q in range(hl)] for o in self.offsets]
            cells, coef = make_cells(v_b, hl, s2)
            self.b_cells.append(cells)
            coef = _tensor(coef, like)  # (no, n_cells)
            sel = selection(coef.unsqueeze(1).expand(-1, span, -1), b_idx.expand(no, -1), span)
            self.b_sel.append(torch.einsum("xa,oair->oxir", taps, sel))  # (no, k, nc, T)
            counts.append(_tensor([sum(v) for v in v_p], like))
        self.counts = counts[0].view(-1, 1) * counts[1].view(1, -1)
        self.p_sel, self.p_support = relative_form(self.p_sel, self.p_cells)
        self.k_sel, self.k_support = relative_form(self.k_sel, self.k_cells)
        self.b_sel, self.b_support = relative_form(self.b_sel, self.b_cells)

    def accumulate(self, x: torch.Tensor, h: torch.Tensor, v: torch.Tensor) -> dict:
        pad, span = self.p.pad, self.p.span
        ones = x.new_ones(1, 1, *h.shape[-2:])
        return {
            **self.accumulate_p(x, v),
            "gk": correlate(
                x,
                h,
                self.p.step,
                (self.k_d[0],) * 2,
                (self.k_d[1],) * 2,
                *self.k_cells,
                self.k_support,
            ),
            "sh": cell_sums(h, *self.k_cells),
            "gb": correlate(
                x.sum(0, keepdim=True),
                ones,
                self.p.step,
                (-pad,) * 2,
                (span - 1 - pad,) * 2,
                *self.b_cells,
                self.b_support,
            ),  # fmt: skip
        }

    def accumulate_p(self, x: torch.Tensor, v: torch.Tensor) -> dict:
        """The ``P`` correlations of ``x`` with the gradient ``v`` (alone: with the residual
        gradient, for :meth:`ConvStatisticsAccumulator.project`)."""
        return {
            "gp": correlate(
                x,
                v,
                self.p_sigma,
                (self.p_d[0],) * 2,
                (self.p_d[1],) * 2,
                *self.p_cells,
                self.p_support,
            ),
            "sv": cell_sums(v, *self.p_cells),
        }

    def assemble_p(self, sums: dict) -> torch.Tensor:
        """``P`` (D, out * n_offsets), float64, not normalised."""
        no, k = len(self.offsets), self.p.kernel
        # P[(c, o1), (cout, o)]: (o_r, o1r, o_c, o1c, cout, c)
        z = contract(self.p_sel[0], self.p_sel[1], sums["gp"].double())
        cout, c = z.shape[-2:]
        pm = z.permute(5, 1, 3, 4, 0, 2).reshape(c * k * k, cout * no * no)
        pb = torch.einsum("ai,bj,ijq->qab", *self.p_bias, sums["sv"].double()).reshape(1, -1)
        return torch.cat([pm, pb], 0)

    def assemble(self, sums: dict, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``P`` (D, out * n_offsets) and ``C`` (n_offsets, D, E), float64, not normalised."""
        no, k2, k = len(self.offsets), self.k2, self.p.kernel
        p = self.assemble_p(sums)
        # C[o][(c, o1), (h, o2)]: (o_r, o1r, o2r, o_c, o1c, o2c, h, c)
        z = contract(self.k_sel[0], self.k_sel[1], sums["gk"].double())
        hc, c = z.shape[-2:]
        kk = z.permute(0, 3, 7, 1, 4, 6, 2, 5).reshape(no * no, c * k * k, hc * k2 * k2)
        zb = contract(self.b_sel[0], self.b_sel[1], sums["gb"].double())  # (o_r,o1r,o_c,o1c,1,c)
        kcol = zb[..., 0, :].permute(0, 2, 4, 1, 3).reshape(no * no, -1)
        krow = torch.einsum("abi,cdj,ijh->achbd", *self.k_bias, sums["sh"].double())
        out = kk.new_zeros(no * no, kk.shape[1] + 1, kk.shape[2] + 1)
        out[:, :-1, :-1] = kk
        out[:, :-1, -1] = kcol
        out[:, -1, :-1] = krow.reshape(no * no, -1)
        out[:, -1, -1] = self.counts.reshape(-1) * n
        return p, out


class HeadPlan:
    """Position-averaged patches ``mean_q u(q)`` of the last stage, per sample.

    Separable: ``u[x, y] = sum_{r, s} W0[x, r] X(r, s) W1[y, s]`` with ``W_d`` the taps times
    the 0/1 reading pattern of each tap (padding, stride) over the positions, divided by the
    number of positions: two small matrix products, no padded copy of ``X``.
    """

    def __init__(self, patches: Patches, x_size, like) -> None:
        self.p = patches
        taps = _tensor(patches.taps, like)  # (k, T)
        self.w = []
        for d in range(2):
            q_len = patches.q_size[d]
            reads = _tap_weights(
                x_size[d], patches.span, patches.step, patches.pad, q_len, [1.0] * q_len
            )  # fmt: skip
            w = taps @ _tensor(reads, like) / max(q_len, 1)  # (k, X_d)
            self.w.append(w.to(like.dtype))

    def mean_patches(self, x: torch.Tensor) -> torch.Tensor:
        u = self.w[0] @ (x @ self.w[1].T)  # (n, C, k, k)
        u = u.reshape(x.shape[0], -1)
        return torch.cat([u, u.new_ones(x.shape[0], 1)], 1)


def ones_omega(q_size) -> tuple[list[float], list[float]]:
    return ([1.0] * q_size[0], [1.0] * q_size[1])


@functools.lru_cache(maxsize=32)
def net_plans(stages: tuple, sizes: tuple, kernel: str, device: torch.device, dtype: torch.dtype):
    """The plans of a net's statistics: per conv its covariance plan, per conv -> conv site
    its growth covariance plan (``None`` when it shares the conv's) and its cross plan, and
    the head site's plan. Cached: they depend on the geometry only (``stages``: the nets'
    :class:`~growenv.nets.conv.net.ConvStage` tuple; ``sizes``: every stage's input size), not on
    channel counts, so a growing net reuses them. Read-only.
    """
    like = torch.empty(0, device=device, dtype=dtype)
    num = len(stages)
    layer_plans, growth_plans, cross_plans = [], [], []
    for l, stage in enumerate(stages):
        patches = stage_patches(stage, sizes[l], pooled=False)
        omegas, period, shared = [ones_omega(patches.q_size)], 1, False
        if l < num - 1:
            nxt, h_size = stages[l + 1], sizes[l + 1]
            o_size = (nxt.conv_size(h_size[0]), nxt.conv_size(h_size[1]))
            offsets = range(nxt.kernel_size) if kernel == "full" else [nxt.kernel_size // 2]
            w = tuple(
                growth_weights(
                    h_size[d], nxt.kernel_size, nxt.stride, nxt.padding, o_size[d], offsets
                )
                for d in range(2)
            )
            pooled = stage_patches(stage, sizes[l], pooled=True)
            if stage.pool is None:
                omegas, period, shared = [*omegas, w], nxt.stride, True
            else:
                growth_plans.append(cov_plan(pooled, sizes[l], [w], nxt.stride, like))
            if shared:
                growth_plans.append(None)
            cross_plans.append(CrossPlan(pooled, nxt, o_size, kernel, like))
        layer_plans.append(cov_plan(patches, sizes[l], omegas, period, like))
    head_plan = HeadPlan(stage_patches(stages[-1], sizes[-1], pooled=True), sizes[-1], like)
    return layer_plans, growth_plans, cross_plans, head_plan
