"""TINY statistics of a :class:`~growenv.nets.conv.net.GrowingConvNet`, in one forward+backward
pass.

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
interior; ``conv2d`` weight-gradients give each cell's correlations at all offsets ``delta``
at once (:func:`~growenv.nets.conv.cell_correlation.correlate`; the plans of
:mod:`~growenv.nets.conv.plans`
say which). Where the interior has a cell per stride phase (periods up to 2), the weights
are taken relative to the interior's: one whole-grid correlation per phase (the conv's own
zero padding; for a covariance the offsets of one half-plane, the rest mirrored across
phases), plus border strips and corners at the few offsets where a border's weights differ
(:func:`~growenv.nets.conv.cell_correlation.relative_form`); longer periods without pooling use one
Gram matrix of the patches per group of positions of equal weights, 64 images at a time
(:class:`~growenv.nets.conv.plans.UnfoldCovPlan`). This is exact and never forms gromo's patch x
offset x position tensor; elsewhere no patches either: the products are over the ``C_in``
channels of ``X`` (not ``C_in k^2``) at ``(2k-1)^2`` to ``(3k-2)^2`` offsets, and the
per-batch work is these correlations alone; the cells are combined with the (small, fixed)
geometry weights once, after the last batch (two dense products per statistic). For a 16 ->
16 -> 16 3x3 pair and 128 32x32 images: ~2.3 GMAC on the projected route (below) besides the
forward+backward, against ~25 GMAC for the unfolded cross term alone.

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
from growenv.losses import PerSampleLoss, prepare_target, resolve_loss
from growenv.nets.conv.net import GrowingConvNet, global_average, validate_options
from growenv.nets.conv.plans import net_plans, stage_patches
from growenv.nets.statistics import GrowthStatistics, iterate_batches, non_finite_error
from growenv.threads import cpu_workers, single_threaded


@dataclass
class ConvGrowthStatistics(GrowthStatistics):
    """Sample means (sums over positions) of the TINY statistics of a conv net.

    ``S``, ``M``, ``vv``: per layer (convolutions, then the head). Per site: ``S_growth``
    ``(D, D)``, ``P`` ``(D, O')`` with ``O' = out * k^2`` (full kernel, columns ordered
    ``(channel, kernel row, kernel column)``), ``out`` (restricted kernel or the head site),
    and the cross term ``C``: ``(k^2, D, E)`` for a full-kernel site, ``(D, E)`` otherwise,
    so that ``N = P - C dW^T`` (per offset) with :func:`~growenv.tiny.projected_cross_correlation`.
    ``site_kernels[j]`` is ``"full"``, ``"restricted"`` or ``"linear"`` (the head site).
    """

    S_growth: list[torch.Tensor]
    site_kernels: list[str]
    # (rtol, atol, dtype) when the conv -> conv sites' P already holds N = P - C dW^T
    # (their C is None): computed in one pass from the residual gradient, see
    # ConvStatisticsAccumulator.project; the solve must use the same settings
    projection: tuple[float, float, torch.dtype] | None = None
    # factors of S (tiny.covariance_solver) computed for that projection, by index into
    # [*S, *S_growth], reused by the solve
    spectra: dict[int, tiny.CovarianceSolver] | None = None


class ConvStatisticsAccumulator:
    """Streams batches of stage inputs and pre-activation gradients into running sums.

    The per-batch work is the cell correlations (module docstring); :meth:`result` combines
    them with the geometry weights once. No host synchronisation happens in :meth:`add`.
    """

    def __init__(self, net, kernel: str = "full") -> None:
        validate_options(kernel=kernel)
        self.net, self.kernel = net, kernel
        self._sums: dict | None = None
        self._loss: torch.Tensor | None = None
        self._sizes: list | None = None
        self._cross = True
        self._cov_sums: tuple | None = None  # assembled covariances (_covariance_sums)
        self.num_samples = 0
        # (rtol, atol, dtype) of the best updates the cross terms were projected with
        self.projection: tuple[float, float, torch.dtype] | None = None
        self.spectra: dict[int, tiny.CovarianceSolver] | None = None

    def _build(self, inputs: list[torch.Tensor]) -> None:
        net, like = self.net, inputs[0]
        self._sizes = [tuple(t.shape[-2:]) for t in inputs[: net.num_sites]]
        plans = net_plans(
            tuple(net.stages), tuple(self._sizes), self.kernel, like.device, like.dtype
        )
        self.layer_plans, self.growth_plans, self.cross_plans, self.head_plan = plans

    def _batch(self, inputs, grads, weight_grads, cross: bool) -> dict:
        net, num = self.net, self.net.num_sites
        out: dict = {"layers": [], "growth": [], "cross": []}
        for l in range(len(net.stages)):
            y, g = inputs[l], grads[l]
            stats = self.layer_plans[l].accumulate(y)
            stats["m"] = torch.cat([weight_grads[l].flatten(1).T, g.sum((0, 2, 3)).unsqueeze(0)], 0)
            stats["vv"] = _squared_norm(g)
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
        out["head"] = {"s": b.T @ b, "m": b.T @ g, "vv": _squared_norm(g)}
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
        self._cov_sums = None  # the sums change: assemble anew
        batch = self._batch(inputs, grads, weight_grads, cross)
        if self._sums is None:
            self._sums, self._loss = batch, losses.sum()
        else:
            torch._foreach_add_(_leaves(self._sums), _leaves(batch))
            self._loss = self._loss + losses.sum()
        self.num_samples += losses.shape[0]

    def _covariance_sums(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every ``S`` (convs, then the head) and ``S_growth`` (sites), as float64 sums;
        assembled once, for :meth:`project` and :meth:`result`."""
        if self._cov_sums is None:
            sums, n, num = self._sums, self.num_samples, self.net.num_sites
            s_list, sg_list = [], []
            for l, layer in enumerate(sums["layers"]):
                covs = self.layer_plans[l].assemble(layer, n)
                s_list.append(covs[0])
                if l < num - 1:
                    plan = self.growth_plans[l]
                    sg = covs[1] if plan is None else plan.assemble(sums["growth"][l], n)[0]
                    sg_list.append(sg)
            s_list.append(sums["head"]["s"].double())
            sg_list.append(sums["head_site"]["s"].double())
            self._cov_sums = (s_list, sg_list)
        return self._cov_sums

    def _mean(self, t: torch.Tensor | None) -> torch.Tensor | None:
        """A sum as :meth:`result` gives it: divided by the samples, in the net's dtype."""
        return None if t is None else (t / self.num_samples).to(self.net.dtype)

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
        s_list, sg_list = self._covariance_sums()
        mats = [self._mean(s).to(dtype) for s in [*s_list, *sg_list]]
        workers = cpu_workers(mats[0].device)
        with single_threaded(mats[0].device):  # every matrix the solve factorises, at once
            self.spectra = dict(enumerate(tiny.covariance_solvers(mats, rtol, atol, workers)))
        for j in range(net.num_sites - 1):
            m = self._mean(-self._sums["layers"][j + 1]["m"].double())
            dw, _ = tiny.best_update_spectral(self.spectra[j + 1], m.to(dtype))
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
        m_list, vv, p_list, c_list, kinds = [], [], [], [], []
        if not self._cross and self.projection is None:
            raise RuntimeError("result(): the cross terms were left out and not projected")
        s_list, sg = self._covariance_sums()
        for l, layer in enumerate(sums["layers"]):
            m_list.append(-layer["m"].double())
            vv.append(layer["vv"].double())
            if l < num - 1:
                kinds.append(self.kernel)
                if self.projection is not None:
                    p_list.append(-self.cross_plans[l].assemble_p(sums["cross"][l]))
                    c_list.append(None)
                    continue
                p, c = self.cross_plans[l].assemble(sums["cross"][l], n)
                p_list.append(-p)
                c_list.append(c if self.kernel == "full" else c[0])
        head, site = sums["head"], sums["head_site"]
        m_list.append(-head["m"].double())
        vv.append(head["vv"].double())
        p_list.append(-site["p"].double())
        c_list.append(site["c"].double())
        kinds.append("linear")

        def mean(ts: list[torch.Tensor | None]) -> list:
            return [self._mean(t) for t in ts]

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
            spectra=self.spectra,
        )


def _squared_norm(g: torch.Tensor) -> torch.Tensor:
    """``sum g^2`` in one pass (no squared copy)."""
    flat = g.reshape(-1)
    return torch.dot(flat, flat)


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
        f = global_average(h)
        del h  # the last stage's map: the backward pass keeps only what it saved (smaller peak)
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
    """One forward+backward pass of a :class:`~growenv.nets.conv.net.GrowingConvNet` -> statistics.

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
        Raise ``ValueError`` if the data or the net give NaN or inf (one host check after the
        loop; the error names the cause, :func:`~growenv.nets.statistics.non_finite_error`).
    raw_correlation
        Keep the raw ``P`` and the cross term ``C`` of every conv -> conv site (needed by
        GradMax neurons and ``SiteReport.linear_gain``). By default, when the data are one
        batch, those sites get ``N = P - C dW^T`` directly (:meth:`ConvStatisticsAccumulator.
        project`: one convolution instead of the widest correlation, the same numbers);
        streamed batches always keep ``P`` and ``C``.
    rtol, atol, solve_dtype
        Settings of the best updates used in that projection (as the solve's; ``rtol=None``
        picks :func:`~growenv.tiny.default_rtol` of the net's dtype).
    """
    if not isinstance(net, GrowingConvNet):
        raise TypeError(f"net: expected a GrowingConvNet, got {type(net).__name__}")
    validate_options(kernel=kernel)
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
        raise non_finite_error(net, x, y)
    if project:
        rtol = tiny.default_rtol(net.dtype) if rtol is None else rtol
        acc.project(inputs, grads, rtol, atol, solve_dtype)
    return acc.result()


def conv_statistics_macs(net, samples: int, kernel: str = "full", projected: bool = False) -> int:
    """Multiply-adds of one statistics pass over ``samples`` images, as the cell-wise
    correlations need them: the cost model the environment books. The implementation
    differs in places: half the offsets for covariances, fewer border products, and
    unfolded Gram matrices for strided covariances with a long weight period.

    Forward, backward to the pre-activations, the layers' weight-gradients (``M``), and the
    correlations: ``C_in^2 (2T - 1)^2`` per input position for each layer's covariance, and
    per conv -> conv site ``C_in C_out (S(k'-1) + T)^2`` per output position for ``P`` and
    ``C_in C_hidden (2S(k'-1) + T)^2`` per hidden position for the cross term (``k' = 1``
    offsets for the restricted kernel), or, ``projected`` (one batch, the default of
    :func:`compute_conv_statistics`), a forward pass of the next conv instead of the cross
    term. Border cells add ~10-25% on small maps. The environment books the streamed
    (``projected=False``) figure: its compute budget is part of the task's definition.
    """
    validate_options(kernel=kernel)
    sizes = net.grid_sizes()
    fwd = net.flops()
    total = 2 * fwd + fwd - net.weights[-1].numel()  # forward, input grads, weight grads
    for l, stage in enumerate(net.stages):
        c_in = net.weights[l].shape[1]
        area = sizes[l][0] * sizes[l][1]
        patches = stage_patches(stage, sizes[l], pooled=True)
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
