"""E MLPs of equal depth stored as stacked, padded tensors, trained and measured together.

``weights[l]`` is ``(E, cap_{l+1}, cap_l)`` and ``biases[l]`` ``(E, cap_{l+1})``; env ``e``'s
hidden state ``h`` uses the first ``widths[e, h]`` of its ``cap`` units. Padded units are
exactly inert: their weights and biases are zero, their activations are masked to zero (so
``sigma(0) != 0`` does not leak), hence their gradients and Adam moments stay exactly zero.
Capacity grows geometrically when a site runs out of free slots.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from growenv.losses import PerSampleLoss
from growenv.nets.mlp import costs
from growenv.nets.mlp.net import GrowingMLP
from growenv.nets.mlp.statistics import StatisticsAccumulator


def _grow_dim(t: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    pad = [0, 0] * (t.ndim - dim - 1) + [0, size - t.shape[dim]]
    return F.pad(t, pad)


class StackedMLP:
    """A stack of ``num_envs`` growing MLPs with one batched forward, backward and Adam step.

    Adam follows ``torch.optim.Adam`` (defaults ``betas=(0.9, 0.999)``, ``eps=1e-8``) with a
    step count per env, so an env that restarts gets fresh moments and bias corrections.
    """

    def __init__(
        self,
        num_envs: int,
        in_features: int,
        hidden_layers: int,
        out_features: int,
        activation: torch.nn.Module,
        slope0: float,
        sigma0: float,
        capacity: int = 8,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.num_envs = num_envs
        self.activation, self.slope0, self.sigma0 = activation, slope0, sigma0
        self.device, self.dtype = torch.device(device), dtype
        self.caps = [in_features] + [capacity] * hidden_layers + [out_features]
        e = num_envs
        z = dict(device=self.device, dtype=dtype)
        pairs = zip(self.caps[:-1], self.caps[1:], strict=True)
        self.weights = [torch.zeros(e, o, i, **z) for i, o in pairs]
        self.biases = [torch.zeros(e, o, **z) for o in self.caps[1:]]
        self.exp_avg = [torch.zeros_like(p) for p in self.params()]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params()]
        self.steps = torch.zeros(e, dtype=torch.float64, device=self.device)
        self.widths = np.zeros((e, hidden_layers), dtype=np.int64)
        self.masks = [torch.zeros(e, c, **z) for c in self.caps[1:-1]]
        self.lr, self.betas, self.eps = lr, betas, eps

    # ----------------------------------------------------------------- layout
    def params(self) -> list[torch.Tensor]:
        return [*self.weights, *self.biases]

    @property
    def num_layers(self) -> int:
        return len(self.weights)

    def ensure_capacity(self, site: int, needed: int) -> None:
        """Make hidden state ``site`` hold at least ``needed`` units (doubling)."""
        cap = self.caps[site + 1]
        if needed <= cap:
            return
        new = max(needed, 2 * cap)
        self.caps[site + 1] = new
        w_in, w_out = site, site + 1
        n_w = self.num_layers
        self.weights[w_in] = _grow_dim(self.weights[w_in], 1, new)
        self.biases[w_in] = _grow_dim(self.biases[w_in], 1, new)
        self.weights[w_out] = _grow_dim(self.weights[w_out], 2, new)
        for state in (self.exp_avg, self.exp_avg_sq):
            state[w_in] = _grow_dim(state[w_in], 1, new)
            state[n_w + w_in] = _grow_dim(state[n_w + w_in], 1, new)
            state[w_out] = _grow_dim(state[w_out], 2, new)
        self.masks[site] = _grow_dim(self.masks[site], 1, new)

    @torch.no_grad()
    def load(self, env: int, net: GrowingMLP) -> None:
        """Put ``net`` into slot ``env`` with fresh optimizer state (zero moments, step 0)."""
        for site, width in enumerate(net.hidden_widths):
            self.ensure_capacity(site, width)
        for state in (self.weights, self.biases, self.exp_avg, self.exp_avg_sq):
            for t in state:
                t[env].zero_()
        for layer, (w, b) in enumerate(zip(net.weights, net.biases, strict=True)):
            self.weights[layer][env, : w.shape[0], : w.shape[1]] = w.detach()
            self.biases[layer][env, : b.shape[0]] = b.detach()
        self.steps[env] = 0
        self.widths[env] = net.hidden_widths
        for site, width in enumerate(net.hidden_widths):
            self.masks[site][env].zero_()
            self.masks[site][env, :width] = 1.0

    def layer_sizes(self, env: int) -> list[int]:
        return [self.caps[0], *self.widths[env].tolist(), self.caps[-1]]

    def to_net(self, env: int, activation: str | torch.nn.Module = "selu") -> GrowingMLP:
        """Env ``env``'s network as a stand-alone :class:`GrowingMLP` (a copy)."""
        sizes = self.layer_sizes(env)
        net = GrowingMLP(
            sizes[0],
            sizes[1:-1],
            sizes[-1],
            activation=activation,
            device=self.device,
            dtype=self.dtype,
        )
        with torch.no_grad():
            for layer, (w, b) in enumerate(zip(net.weights, net.biases, strict=True)):
                w.copy_(self.weights[layer][env, : w.shape[0], : w.shape[1]])
                b.copy_(self.biases[layer][env, : b.shape[0]])
        return net

    # ---------------------------------------------------------------- forward
    def _select(self, tensors: list[torch.Tensor], idx: torch.Tensor | None) -> list[torch.Tensor]:
        return tensors if idx is None else [t[idx] for t in tensors]

    def forward(
        self,
        x: torch.Tensor,
        idx: torch.Tensor | None = None,
        weights: list[torch.Tensor] | None = None,
        biases: list[torch.Tensor] | None = None,
        track: bool = False,
    ):
        """Outputs ``(E', n, out)`` of the envs ``idx`` (all if None) for inputs ``(E', n, d)``.

        With ``track`` the first pre-activation requires grad and the result is
        ``(output, layer inputs, pre-activations)`` (for the statistics pass).
        """
        ws = self._select(self.weights, idx) if weights is None else weights
        bs = self._select(self.biases, idx) if biases is None else biases
        masks = self._select(self.masks, idx)
        h = x
        inputs, pre = [], []
        for layer in range(self.num_layers):
            inputs.append(h)
            a = torch.baddbmm(bs[layer].unsqueeze(1), h, ws[layer].transpose(1, 2))
            if track and layer == 0:
                a.requires_grad_(True)
            pre.append(a)
            if layer < self.num_layers - 1:
                h = self.activation(a) * masks[layer].unsqueeze(1)
            else:
                h = a
        return (h, inputs, pre) if track else h

    def forward_from(self, pre: torch.Tensor, layer: int, idx: torch.Tensor) -> torch.Tensor:
        """Continue from the pre-activation ``(E', *lead, n, cap)`` of layer ``layer``."""
        h = pre
        extra = pre.ndim - 3
        for i in range(layer + 1, self.num_layers):
            mask = self.masks[i - 1][idx].view(len(idx), *([1] * (extra + 1)), -1)
            h = self.activation(h) * mask
            w = self.weights[i][idx].view(len(idx), *([1] * extra), *self.weights[i].shape[1:])
            b = self.biases[i][idx].view(len(idx), *([1] * (extra + 1)), -1)
            h = h @ w.transpose(-1, -2) + b
        return h

    # ---------------------------------------------------------------- training
    def train(
        self,
        idx: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        loss_fn: PerSampleLoss,
        batch_indices: torch.Tensor,
    ) -> torch.Tensor:
        """Adam steps for the envs ``idx`` on minibatches ``batch_indices`` ``(E', steps, bs)``.

        ``idx`` must hold distinct env indices in increasing order.

        ``x``, ``y`` are the envs' training data ``(E', n, ...)``. Returns the mean
        minibatch loss of each env ``(E',)``.
        """
        steps = batch_indices.shape[1]
        total = torch.zeros(len(idx), device=self.device, dtype=self.dtype)
        if steps == 0:
            return total
        # all minibatches of the phase in one gather (one indexing op instead of 2 per step)
        rows = torch.arange(len(idx), device=self.device).view(-1, 1, 1)
        xs, ys = x[rows, batch_indices], y[rows, batch_indices]  # (E', steps, bs, ...)
        full = len(idx) == self.num_envs  # idx holds distinct envs, so this means all of them
        for step in range(steps):
            leaves = [p.detach().requires_grad_(True) for p in self.params()]
            ws, bs = leaves[: self.num_layers], leaves[self.num_layers :]
            if not full:
                ws, bs = [w[idx] for w in ws], [b[idx] for b in bs]
            out = self.forward(xs[:, step], idx, ws, bs)
            losses = loss_fn(out, ys[:, step]).mean(-1)
            grads = torch.autograd.grad(losses.sum(), leaves)
            self._adam(idx, grads, full)
            total = total + losses.detach()
        return total / steps

    @torch.no_grad()
    def _adam(self, idx: torch.Tensor, grads: list[torch.Tensor], full: bool) -> None:
        beta1, beta2 = self.betas
        self.steps[idx] += 1
        t = self.steps[idx]
        bc1 = (1 - beta1**t).to(self.dtype)
        bc2_sqrt = (1 - beta2**t).sqrt().to(self.dtype)
        for p, g, m, v in zip(self.params(), grads, self.exp_avg, self.exp_avg_sq, strict=True):
            shape = (len(idx),) + (1,) * (p.ndim - 1)
            step_size = (self.lr / bc1).view(shape)
            if full:
                m.lerp_(g, 1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                denom = (v.sqrt() / bc2_sqrt.view(shape)).add_(self.eps)
                p.sub_(step_size * (m / denom))
            else:
                gi = g[idx]
                mi = m[idx].lerp_(gi, 1 - beta1)
                vi = v[idx].mul_(beta2).addcmul_(gi, gi, value=1 - beta2)
                m[idx], v[idx] = mi, vi
                denom = (vi.sqrt() / bc2_sqrt.view(shape)).add_(self.eps)
                p[idx] = p[idx] - step_size * (mi / denom)

    # -------------------------------------------------------------- statistics
    def statistics(self, idx: torch.Tensor, x: torch.Tensor, y: torch.Tensor, loss_fn):
        """TINY statistics of the envs ``idx`` on ``(x, y)`` (leading env dimension)."""
        ws = [w[idx].detach() for w in self.weights]
        bs = [b[idx].detach() for b in self.biases]
        with torch.enable_grad():
            out, inputs, pre = self.forward(x.detach(), idx, ws, bs, track=True)
            losses = loss_fn(out, y)
            grads = torch.autograd.grad(losses.sum(), pre)
        acc = StatisticsAccumulator()
        acc.add([t.detach() for t in inputs], list(grads), losses.detach())
        return acc.result()

    # ----------------------------------------------------------------- growth
    def in_mask(self, layer: int, idx: torch.Tensor) -> torch.Tensor:
        """``(E', cap_l + 1)`` mask of the valid inputs (and the bias) of layer ``layer``."""
        ones = torch.ones(len(idx), 1, device=self.device, dtype=self.dtype)
        if layer == 0:
            return torch.ones(len(idx), self.caps[0] + 1, device=self.device, dtype=self.dtype)
        return torch.cat([self.masks[layer - 1][idx], ones], 1)

    def out_mask(self, layer: int, idx: torch.Tensor) -> torch.Tensor:
        if layer == self.num_layers - 1:
            return torch.ones(len(idx), self.caps[-1], device=self.device, dtype=self.dtype)
        return self.masks[layer][idx]

    @torch.no_grad()
    def apply(
        self,
        env: int,
        site: int,
        alpha: torch.Tensor,
        omega: torch.Tensor,
        update: torch.Tensor,
        gamma: torch.Tensor,
    ) -> None:
        """Grow env ``env`` at ``site`` by the neurons ``alpha (K, cap+1)``, ``omega (out, K)``
        and the update ``(out, cap_next + 1)`` of the next layer, at amplitude ``gamma``."""
        k = alpha.shape[0]
        width = int(self.widths[env, site])
        self.ensure_capacity(site, width + k)
        g = gamma.to(self.dtype).reshape(())
        root = g.clamp(min=0).sqrt()
        nxt = site + 1
        self.weights[nxt][env] += g * update[:, :-1]
        self.biases[nxt][env] += g * update[:, -1]
        if self.sigma0 != 0.0:
            self.biases[nxt][env] -= root * self.sigma0 * omega.sum(1)
        slots = slice(width, width + k)
        cap_in = self.weights[site].shape[2]
        self.weights[site][env, slots, :] = root * alpha[:, :cap_in]
        self.biases[site][env, slots] = root * alpha[:, -1]
        self.weights[nxt][env, :, slots] = root * omega
        self.widths[env, site] = width + k
        self.masks[site][env, slots] = 1.0

    def num_parameters(self, env: int) -> int:
        return costs.parameter_count(self.layer_sizes(env))


def gamma_losses(
    stack: StackedMLP,
    idx: torch.Tensor,
    site: int,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: PerSampleLoss,
    alpha: torch.Tensor,
    omega: torch.Tensor,
    update: torch.Tensor,
    gammas: torch.Tensor,
) -> torch.Tensor:
    """Mean loss ``(E', G)`` of the envs ``idx`` grown at ``site`` for every amplitude.

    ``alpha (E', K, cap+1)``, ``omega (E', out, K)``, ``update (E', out, cap_next+1)``.
    """
    with torch.no_grad():
        ws = [w[idx] for w in stack.weights]
        bs = [b[idx] for b in stack.biases]
        masks = [m[idx] for m in stack.masks]
        h = x
        for layer in range(site):
            h = stack.activation(
                torch.baddbmm(bs[layer].unsqueeze(1), h, ws[layer].transpose(1, 2))
            )
            h = h * masks[layer].unsqueeze(1)
        h_in = h
        hidden = stack.activation(
            torch.baddbmm(bs[site].unsqueeze(1), h_in, ws[site].transpose(1, 2))
        )
        hidden = hidden * masks[site].unsqueeze(1)
        base = torch.baddbmm(bs[site + 1].unsqueeze(1), hidden, ws[site + 1].transpose(1, 2))
        cap_in = h_in.shape[-1]
        z = torch.baddbmm(alpha[:, :, -1].unsqueeze(1), h_in, alpha[:, :, :cap_in].transpose(1, 2))
        root = gammas.clamp(min=0).sqrt().view(1, -1, 1, 1)
        new = stack.activation(root * z.unsqueeze(1)) - stack.sigma0  # (E', G, n, K)
        out = base.unsqueeze(1) + root * (new @ omega.transpose(1, 2).unsqueeze(1))
        delta = torch.baddbmm(
            update[:, :, -1].unsqueeze(1), hidden, update[:, :, :-1].transpose(1, 2)
        )
        out = out + gammas.view(1, -1, 1, 1) * delta.unsqueeze(1)
        out = stack.forward_from(out, site + 1, idx)
        losses = loss_fn(out, y.unsqueeze(1)).mean(-1)
    return torch.nan_to_num(losses, nan=math.inf)
