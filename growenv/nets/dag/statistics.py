"""One forward+backward pass of a GrowingDAG -> one covariance of all node activations.

Notation (docs/math.md, DAG paragraph). Nodes other than ``out`` have a
post-activation ``b_u`` (``b_in = x``); nodes other than ``in`` a pre-activation ``a_v`` and,
per sample ``i``, the desired move ``v_v(x_i) = -d l_i / d a_v`` (sum-reduced loss, through
every path). With ``X = [b_in; b_h1; ...; b_hk; 1]`` (all activations, topological order,
the constant last) and ``V = [v_h1; ...; v_out]`` this module accumulates

* ``covariance = E[X X^T]``  ((..., D + 1, D + 1)),
* ``cross = E[X V^T]``        ((..., D + 1, O)),
* ``vv[v] = E||v_v||^2``      ((..., num nodes other than in)),

and every candidate's ``S``, ``M`` and ``N`` is a block of them (:mod:`.expansions`). The
pure functions below take tensors with arbitrary leading dimensions (environments, ...).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch

from growenv.losses import PerSampleLoss, prepare_target, resolve_loss
from growenv.nets.dag.net import IN, OUT, GrowingDAG
from growenv.nets.statistics import non_finite_error


@dataclass(frozen=True)
class DagLayout:
    """Where each node's rows sit in ``X`` (``act``) and its columns in ``V`` (``grad``).

    ``act[u] = (start, stop)`` for every node but ``out``; ``ones`` is the row of the
    constant; ``grad[v] = (start, stop)`` for every node but ``in``.
    """

    order: tuple[str, ...]
    act: dict[str, tuple[int, int]]
    grad: dict[str, tuple[int, int]]
    ones: int

    @classmethod
    def of(cls, widths: dict[str, int]) -> DagLayout:
        """Layout of nodes ``widths`` (name -> width, topological order)."""
        act: dict[str, tuple[int, int]] = {}
        grad: dict[str, tuple[int, int]] = {}
        i = j = 0
        for v, w in widths.items():
            if v != OUT:
                act[v] = (i, i + w)
                i += w
            if v != IN:
                grad[v] = (j, j + w)
                j += w
        return cls(tuple(widths), act, grad, i)

    def rows(self, sources: Iterable[str], ones: bool = True) -> list[int]:
        """Row indices of ``X`` for ``sources`` (in the given order), the constant last."""
        idx = [r for s in sources for r in range(*self.act[s])]
        return [*idx, self.ones] if ones else idx

    def cols(self, targets: Iterable[str]) -> list[int]:
        """Column indices of ``V`` for ``targets`` (in the given order)."""
        return [c for t in targets for c in range(*self.grad[t])]


@dataclass
class DagStatistics:
    """Sample means of one pass (see module docstring) and the graph they were taken on."""

    layout: DagLayout
    covariance: torch.Tensor
    cross: torch.Tensor
    vv: dict[str, torch.Tensor]
    loss: torch.Tensor
    num_samples: int
    edges: tuple[tuple[str, str], ...] = field(default=())
    samples: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)
    """``(X, V)`` per sample (``(..., n, D + 1)``, ``(..., n, O)``) when kept
    (``keep_samples``): what the nonlinear neuron fit reads."""


# ------------------------------------------------------------------------- pure maths
def activation_matrix(acts: list[torch.Tensor]) -> torch.Tensor:
    """``X = [b_1, ..., b_k, 1]`` along the last dimension (each ``(..., n, w)``)."""
    ref = acts[0]
    return torch.cat([*acts, ref.new_ones((*ref.shape[:-1], 1))], -1)


def second_moments(
    x: torch.Tensor, g: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sums over samples: ``X^T X``, ``X^T G`` and the squared norm of each column of ``G``.

    ``x`` (..., n, D + 1), ``g`` (..., n, O) the raw gradients ``dl/da`` (``v = -g``: the
    sign is the caller's).
    """
    xt = x.transpose(-1, -2)
    return xt @ x, xt @ g, g.square().sum(-2)


def residual_correlation(
    covariance: torch.Tensor, cross: torch.Tensor, update: torch.Tensor
) -> torch.Tensor:
    """``E[X v_perp^T] = E[X V^T] - E[X X^T] dW^T``.

    ``update`` (..., O, D + 1) holds every node's best update as rows of the full
    activation vector (zero outside the node's inputs), so column block ``v`` of the result
    is ``E[X v_perp_v^T]``: the correlation of every activation with ``v``'s residual.
    """
    return cross - covariance @ update.transpose(-1, -2)


def block(t: torch.Tensor, rows: list[int], cols: list[int]) -> torch.Tensor:
    """``t[..., rows, cols]`` (a copy)."""
    r = torch.as_tensor(rows, dtype=torch.long, device=t.device)
    c = torch.as_tensor(cols, dtype=torch.long, device=t.device)
    return t.index_select(-2, r).index_select(-1, c)


# ------------------------------------------------------------------------------ pass
def _batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if batch_size is None:
        yield x, y
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int or None, got {batch_size!r}")
    for start in range(0, x.shape[0], batch_size):
        yield x[start : start + batch_size], y[start : start + batch_size]


def activations_and_grads(
    net: GrowingDAG, x: torch.Tensor, y: torch.Tensor, loss_fn: PerSampleLoss
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """Forward ``x`` and backpropagate the summed per-sample loss to every pre-activation.

    Returns the post-activations of every node but ``out``, the gradients ``dl_i/da_v`` of
    every node but ``in`` (zero for a node with no path to ``out``) and the losses.
    """
    post: dict[str, torch.Tensor] = {IN: x.detach()}
    pre: dict[str, torch.Tensor] = {}
    with torch.enable_grad():
        for v in net.nodes:
            if v == IN:
                continue
            a = None
            for u in net.in_edges(v):
                term = torch.nn.functional.linear(post[u], net.weight(u, v).detach())
                a = term if a is None else a + term
            bias = net.bias(v).detach()
            a = bias.expand(*x.shape[:-1], bias.shape[0]).clone() if a is None else a + bias
            if not a.requires_grad:
                a.requires_grad_(True)
            pre[v] = a
            post[v] = a if v == OUT else net.activation(a)
        losses = loss_fn(post[OUT], y)
        names = list(pre)
        grads = torch.autograd.grad(losses.sum(), [pre[v] for v in names], allow_unused=True)
    g = {v: torch.zeros_like(pre[v]) if d is None else d for v, d in zip(names, grads, strict=True)}
    acts = {v: t.detach() for v, t in post.items() if v != OUT}
    return acts, g, losses.detach()


def dag_statistics(
    net: GrowingDAG,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str | PerSampleLoss = "mse",
    batch_size: int | None = None,
    check_finite: bool = True,
    keep_samples: bool = False,
) -> DagStatistics:
    """One forward+backward pass over ``(x, y)`` (in ``batch_size`` chunks) -> statistics.

    Parameters
    ----------
    net
        A :class:`~growenv.nets.dag.net.GrowingDAG`.
    x, y
        Inputs ``(n, in_features)`` and targets.
    loss
        ``"mse"``, ``"cross_entropy"`` or a callable returning per-sample losses.
    check_finite
        Raise ``ValueError`` if the data or the net give NaN or inf (one host check at the
        end; the error names the cause, :func:`~growenv.nets.statistics.non_finite_error`).
    keep_samples
        Also keep the per-sample ``X`` and ``V`` (:attr:`DagStatistics.samples`).
    """
    net.check_input(x)
    loss_fn = resolve_loss(loss)
    y = prepare_target(loss, y.to(net.device), x.shape[0], net.out_features)
    layout = DagLayout.of(net.nodes)
    sums: list[torch.Tensor] | None = None
    loss_sum = None
    n = 0
    kept: list[tuple[torch.Tensor, torch.Tensor]] = []
    for xb, yb in _batches(x.to(device=net.device, dtype=net.dtype), y, batch_size):
        acts, grads, losses = activations_and_grads(net, xb, yb, loss_fn)
        xm = activation_matrix([acts[u] for u in layout.act])
        gm = torch.cat([grads[v] for v in layout.grad], -1)
        if keep_samples:
            kept.append((xm, -gm))
        part = second_moments(xm, gm)
        if sums is None:
            sums, loss_sum = list(part), losses.sum(-1)
        else:
            sums = [a + b for a, b in zip(sums, part, strict=True)]
            loss_sum = loss_sum + losses.sum(-1)
        n += losses.shape[-1]
    if sums is None or n == 0:
        raise ValueError("x: no samples were given to the statistics pass")
    if check_finite and not bool(torch.isfinite(sums[0]).all() & torch.isfinite(loss_sum).all()):
        raise non_finite_error(net, x, y)
    cov, cross, gg = (s / n for s in sums)
    vv = {v: gg[..., a:b].sum(-1) for v, (a, b) in layout.grad.items()}
    samples = None
    if keep_samples:
        samples = (torch.cat([a for a, _ in kept], -2), torch.cat([b for _, b in kept], -2))
    return DagStatistics(layout, cov, -cross, vv, loss_sum / n, n, tuple(net.edges), samples)
