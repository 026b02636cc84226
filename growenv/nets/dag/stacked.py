"""E GrowingDAGs of different shapes trained as one batched model (the lockstep DAG env).

Each env's graph is laid out in *its own* topological order: position 0 is ``in``, the last
position ``out``, the hidden nodes in between (an env with fewer hidden nodes gets empty
positions just before ``out``). Position ``p`` is padded to the widest node any env has
there, and its in-edges from every earlier position are one weight block ``W_p`` of shape
``(E, P_p, P_0 + ... + P_{p-1})`` (one batched matmul per position over the concatenated
earlier outputs) with a mask that is 1 exactly on the env's existing edges. Because the
forward uses ``W_p * mask_p`` and masks padded units' activations to zero, absent edges and
padded units get exactly zero gradients, so their Adam moments stay zero and they never move.

The stack is packed from the env's :class:`~growenv.nets.dag.net.GrowingDAG` and its
``torch.optim.Adam`` (parameters *and* optimizer state: moments and each parameter's own step
count, as a new edge or node starts its own count), trained for a phase of minibatch steps,
and written back. A growth changes one env's graph; the next phase packs the new shapes (the
padding follows the widest node at each position), so growth itself stays the family's
per-env :func:`~growenv.nets.dag.expansions.apply_growth`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from growenv.losses import PerSampleLoss
from growenv.nets.dag.net import IN, OUT, GrowingDAG

__all__ = ["StackedDAG"]


def _adam_settings(optimizer: torch.optim.Optimizer) -> tuple[float, tuple[float, float], float]:
    if type(optimizer) is not torch.optim.Adam or len(optimizer.param_groups) != 1:
        raise ValueError("optimizer: StackedDAG implements torch.optim.Adam with one group")
    group = optimizer.param_groups[0]
    plain = not (group["amsgrad"] or group["maximize"] or group["weight_decay"])
    if not plain:
        raise ValueError("optimizer: StackedDAG implements plain Adam (no amsgrad/decay)")
    return float(group["lr"]), tuple(group["betas"]), float(group["eps"])


class StackedDAG:
    """The nets ``nets`` (with their Adam ``optimizers``) packed into padded position blocks.

    Parameters
    ----------
    nets
        The envs' graphs (same ``in``/``out`` widths, activation, dtype and device).
    optimizers
        One ``torch.optim.Adam`` per net over its parameters (``GrowthEnv``'s optimizer);
        all with the same ``lr``, ``betas`` and ``eps``.

    Notes
    -----
    :meth:`train` runs Adam as ``torch.optim.Adam`` does (single-tensor update, each
    parameter's own step count); :meth:`write_back` puts parameters and state back into the
    nets and optimizers, so each env continues exactly as if it had trained alone (up to the
    order of floating-point sums in the batched matmuls).
    """

    def __init__(
        self, nets: Sequence[GrowingDAG], optimizers: Sequence[torch.optim.Optimizer]
    ) -> None:
        if not nets or len(nets) != len(optimizers):
            raise ValueError("nets: expected one optimizer per net and at least one net")
        settings = {_adam_settings(o) for o in optimizers}
        if len(settings) != 1:
            raise ValueError("optimizers: expected the same lr, betas and eps for every net")
        ((self.lr, self.betas, self.eps),) = settings
        first = nets[0]
        self.nets, self.optimizers = list(nets), list(optimizers)
        self.activation, self.sigma0 = first.activation, first.sigma0
        self.device, self.dtype = first.device, first.dtype
        self.num_envs = e = len(nets)
        orders = [list(n.nodes) for n in nets]
        self.num_positions = npos = max(len(o) for o in orders)
        # position of every node of every env: hidden ones in topological order, out last
        self.positions: list[dict[str, int]] = []
        for order in orders:
            pos = {v: i for i, v in enumerate(order[:-1])}
            pos[OUT] = npos - 1
            self.positions.append(pos)
        widths = [0] * npos
        for net, pos in zip(nets, self.positions, strict=True):
            for v, w in net.nodes.items():
                widths[pos[v]] = max(widths[pos[v]], w)
        self.widths = widths
        self.offsets = [sum(widths[:p]) for p in range(npos)]
        z = {"device": self.device, "dtype": self.dtype}
        self.weights = [torch.zeros(e, widths[p], self.offsets[p], **z) for p in range(1, npos)]
        self.biases = [torch.zeros(e, widths[p], **z) for p in range(1, npos)]
        self.edge_masks = [torch.zeros_like(w) for w in self.weights]
        self.unit_masks = [torch.zeros_like(b) for b in self.biases]
        params = self.params()
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.steps = [torch.zeros_like(p, dtype=torch.float64) for p in params]
        self._pack()

    # ----------------------------------------------------------------- layout
    def params(self) -> list[torch.Tensor]:
        """Weight blocks then bias blocks, one per position after ``in``."""
        return [*self.weights, *self.biases]

    def _slots(self, e: int):
        """``(parameter, its index in params(), index tuple in the stack)`` of env ``e``."""
        net, pos = self.nets[e], self.positions[e]
        nodes = net.nodes
        nw = len(self.weights)
        for u, v in net.edges:
            p, q = pos[v], pos[u]
            cols = slice(self.offsets[q], self.offsets[q] + nodes[u])
            yield net.weight(u, v), p - 1, (e, slice(0, nodes[v]), cols)
        for v in nodes:
            if v != IN:
                yield net.bias(v), nw + pos[v] - 1, (e, slice(0, nodes[v]))

    @torch.no_grad()
    def _pack(self) -> None:
        for e in range(self.num_envs):
            state = self.optimizers[e].state
            for param, i, where in self._slots(e):
                self.params()[i][where] = param
                st = state.get(param)
                if st:
                    self.exp_avg[i][where] = st["exp_avg"]
                    self.exp_avg_sq[i][where] = st["exp_avg_sq"]
                    self.steps[i][where] = float(st["step"])
                if i < len(self.weights):
                    self.edge_masks[i][where] = 1.0
            for v, w in self.nets[e].nodes.items():
                p = self.positions[e][v]
                if v not in (IN, OUT):
                    self.unit_masks[p - 1][e, :w] = 1.0

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy parameters, moments and step counts back into the nets and optimizers."""
        for e in range(self.num_envs):
            state = self.optimizers[e].state
            for param, i, where in self._slots(e):
                param.copy_(self.params()[i][where])
                steps = self.steps[i][where]
                if steps.numel() == 0 or float(steps.reshape(-1)[0]) == 0.0:
                    continue  # never stepped: no state, as torch.optim.Adam
                state[param] = {
                    "step": torch.tensor(float(steps.reshape(-1)[0]), dtype=torch.float32),
                    "exp_avg": self.exp_avg[i][where].clone(),
                    "exp_avg_sq": self.exp_avg_sq[i][where].clone(),
                }

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        x: torch.Tensor,
        weights: Sequence[torch.Tensor] | None = None,
        biases: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Outputs ``(E, n, out)`` of every env for inputs ``(E, n, in)``."""
        ws = self.weights if weights is None else weights
        bs = self.biases if biases is None else biases
        hs = [x]
        last = self.num_positions - 2
        for p, (w, b) in enumerate(zip(ws, bs, strict=True)):
            w = w * self.edge_masks[p]
            src = hs[0] if len(hs) == 1 else torch.cat(hs, -1)
            a = torch.baddbmm(b.unsqueeze(1), src, w.transpose(1, 2))
            if p == last:
                return a
            hs.append(self.activation(a) * self.unit_masks[p].unsqueeze(1))
        raise AssertionError("unreachable: out is the last position")

    # ---------------------------------------------------------------- training
    def train(
        self, xs: torch.Tensor, ys: torch.Tensor, loss_fn: PerSampleLoss
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Adam steps on the minibatches ``xs`` ``(E, steps, bs, in)``, ``ys`` ``(E, steps,
        bs, ...)``, one step per minibatch for every env (then call :meth:`write_back`).

        Returns the mean minibatch loss of each env ``(E,)`` and every step's losses
        ``(steps, E)`` (to name a divergence)."""
        steps = xs.shape[1]
        history = []
        for step in range(steps):
            leaves = [p.detach().requires_grad_(True) for p in self.params()]
            nw = len(self.weights)
            out = self.forward(xs[:, step], leaves[:nw], leaves[nw:])
            losses = loss_fn(out, ys[:, step]).mean(-1)
            grads = torch.autograd.grad(losses.sum(), leaves)
            self._adam(grads)
            history.append(losses.detach())
        if not history:
            return torch.zeros(self.num_envs, device=self.device, dtype=self.dtype), xs.new_zeros(
                0, self.num_envs
            )
        per_step = torch.stack(history)
        total = per_step[0]
        for row in per_step[1:]:  # summed in step order, as train_steps does
            total = total + row
        return total / steps, per_step

    @torch.no_grad()
    def _adam(self, grads: Sequence[torch.Tensor]) -> None:
        beta1, beta2 = self.betas
        for p, g, m, v, t in zip(
            self.params(), grads, self.exp_avg, self.exp_avg_sq, self.steps, strict=True
        ):
            t += 1
            bc1 = 1 - beta1**t
            bc2_sqrt = (1 - beta2**t).sqrt()
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (v.sqrt() / bc2_sqrt.to(self.dtype)).add_(self.eps)
            p.sub_((self.lr / bc1).to(self.dtype) * (m / denom))
