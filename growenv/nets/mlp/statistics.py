"""One forward+backward pass -> the TINY statistics of every layer and hidden site.

Notation (docs/math.md). Linear layer ``l`` has input ``b_l = [h_l; 1]`` (the bias as a
ones column; ``h_0 = x``) and pre-activation ``a_l``. For sample ``i``,
``v_l(x_i) = -d l_i / d a_l`` with ``l_i`` the sample's own loss. Expectations are sample
means. Per layer ``l`` this module accumulates

* ``S_l = E[b_l b_l^T]``  (covariance of the layer input, bias included),
* ``M_l = E[b_l v_l^T]``  (input / desired-update correlation),
* ``vv_l = E[||v_l||^2]``,

and for every hidden site ``j`` (hidden state ``j + 1``-th input, i.e. the state between
layers ``j`` and ``j + 1``)

* ``C_j = E[b_j b_{j+1}^T]`` and ``P_j = E[b_j v_{j+1}^T]``

from which the solver forms ``N_j = P_j - C_j dW_{j+1}^T``. Everything is computed from the
inputs and pre-activation gradients alone, so it works on tensors with leading batch
dimensions (e.g. a stack of environments) unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from growenv.losses import PerSampleLoss, prepare_target, resolve_loss
from growenv.nets.statistics import GrowthStatistics, iterate_batches, non_finite_error


def with_ones(h: torch.Tensor) -> torch.Tensor:
    """Append the bias column: ``[h, 1]`` along the last dimension."""
    return torch.cat([h, h.new_ones((*h.shape[:-1], 1))], dim=-1)


def _t(a: torch.Tensor) -> torch.Tensor:
    return a.transpose(-1, -2)


class StatisticsAccumulator:
    """Streams batches of layer inputs and pre-activation gradients into running sums.

    No host synchronisation happens in :meth:`add`; :meth:`result` divides by the count.
    """

    def __init__(self) -> None:
        self._sums: dict[str, list[torch.Tensor]] | None = None
        self._loss: torch.Tensor | None = None
        self.num_samples = 0

    def add(
        self,
        inputs: Sequence[torch.Tensor],
        grads: Sequence[torch.Tensor],
        losses: torch.Tensor,
    ) -> None:
        """Add one batch.

        Parameters
        ----------
        inputs
            ``h_l`` for every layer ``l`` (without the ones column), each ``(..., n, d_l)``.
        grads
            ``d l_i / d a_l`` for every layer, each ``(..., n, out_l)`` (the statistics use
            ``v = -grad``; the sign is applied to the averaged products).
        losses
            Per-sample losses ``(..., n)``.
        """
        # products with the raw gradients g = dl/da; the sign of v = -g is applied to the
        # small (d, out) results in result(), not to the (n, out) gradients
        b = [with_ones(h) for h in inputs]
        num_layers = len(b)
        sums = {
            "S": [_t(b[l]) @ b[l] for l in range(num_layers)],
            "M": [_t(b[l]) @ grads[l] for l in range(num_layers)],
            "vv": [torch.linalg.vector_norm(g, dim=(-2, -1)).square() for g in grads],
            "C": [_t(b[l]) @ b[l + 1] for l in range(num_layers - 1)],
            "P": [_t(b[l]) @ grads[l + 1] for l in range(num_layers - 1)],
        }
        loss_sum = losses.sum(-1)
        if self._sums is None:
            self._sums = sums
            self._loss = loss_sum
        else:
            for key, values in sums.items():
                for acc, value in zip(self._sums[key], values, strict=True):
                    acc.add_(value)
            self._loss = self._loss + loss_sum
        self.num_samples += losses.shape[-1]

    def result(self) -> GrowthStatistics:
        if self._sums is None or self.num_samples == 0:
            raise ValueError("data: no samples were given to the statistics pass")
        n = self.num_samples
        sign = {"M": -1.0, "P": -1.0}  # v = -g
        means = {
            key: [t * (sign.get(key, 1.0) / n) for t in values]
            for key, values in self._sums.items()
        }
        return GrowthStatistics(loss=self._loss / n, num_samples=n, **means)

    def all_finite(self) -> torch.Tensor:
        """0-d bool tensor: the sums hold no NaN/inf (so neither did the data)."""
        if self._sums is None:
            return torch.tensor(True)
        return torch.isfinite(self._loss).all() & torch.isfinite(self._sums["S"][0]).all()


def compute_statistics(
    net,
    x: torch.Tensor | Iterable,
    y: torch.Tensor | None = None,
    loss: str | PerSampleLoss = "mse",
    batch_size: int | None = None,
    check_finite: bool = True,
) -> GrowthStatistics:
    """Run one forward+backward pass of ``net`` over the data and return the statistics.

    Parameters
    ----------
    net
        A :class:`~growenv.nets.mlp.net.GrowingMLP`.
    x, y
        Tensors (split into ``batch_size`` chunks), or ``x`` an iterable of ``(x, y)``
        batches such as a ``DataLoader`` and ``y=None``. Batches are moved to the net's device.
    loss
        ``"mse"``, ``"cross_entropy"`` or a callable returning per-sample losses.
    check_finite
        Raise ``ValueError`` if the data or the net give NaN or inf: one host check after the
        loop, on the accumulated input covariance and loss, so the loop itself never
        synchronises; the error names the cause (:func:`~growenv.nets.statistics.
        non_finite_error`: the net's weights, the data's first bad entry, or an overflow).
    """
    loss_fn = resolve_loss(loss)
    acc = StatisticsAccumulator()
    device = net.device
    for xb, yb in iterate_batches(x, y, batch_size):
        net.check_input(xb)
        xb = xb.to(device=device, dtype=net.dtype)
        yb = prepare_target(loss, yb.to(device), xb.shape[0], net.out_features)
        inputs, grads, losses = layer_inputs_and_grads(net, xb, yb, loss_fn)
        acc.add(inputs, grads, losses)
    if check_finite and not bool(acc.all_finite()):
        raise non_finite_error(net, x, y)
    return acc.result()


def layer_inputs_and_grads(
    net, x: torch.Tensor, y: torch.Tensor, loss_fn: PerSampleLoss
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """Forward ``x``, backpropagate the summed per-sample loss to every pre-activation.

    Only gradients with respect to pre-activations are computed (no weight gradients).
    Returns the layer inputs ``h_l``, the gradients ``d l_i / d a_l`` and the losses.
    """
    inputs: list[torch.Tensor] = []
    pre: list[torch.Tensor] = []
    with torch.enable_grad():
        h = x.detach()
        last = net.num_layers - 1
        for layer, (w, b) in enumerate(zip(net.weights, net.biases, strict=True)):
            inputs.append(h)
            a = torch.nn.functional.linear(h, w.detach(), b.detach())
            if layer == 0:
                a.requires_grad_(True)
            pre.append(a)
            h = net.activation(a) if layer < last else a
        losses = loss_fn(h, y)
        grads = torch.autograd.grad(losses.sum(), pre)
    return [t.detach() for t in inputs], list(grads), losses.detach()
