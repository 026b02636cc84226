"""GrowingMLP: a fully connected network whose hidden widths grow during training."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from growenv.activations import activation_name, resolve_activation, value_and_slope_at_zero
from growenv.nets.base import GrowingNet
from growenv.nets.mlp import costs


def _check_positive_int(name: str, value: object, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else ">= 1"
        raise ValueError(f"{name}: expected an int {bound}, got {value}")
    return value


class GrowingMLP(GrowingNet):
    """Fully connected network ``in -> h_1 -> ... -> h_L -> out`` with growable hidden widths.

    Layer ``l`` computes ``a_l = W_l b_{l-1} + c_l`` and hidden states ``b_l = sigma(a_l)``;
    the last layer is linear (logits or regression outputs). Hidden widths may start at 0
    or 1. *Site* ``j`` is the hidden state ``j`` (the one feeding linear layer ``j + 1``):
    growing it adds rows to ``W_j`` and columns to ``W_{j+1}``.

    Growth keeps optimizers working by growing parameter storage in place: the
    ``nn.Parameter`` objects stay the same (so an optimizer's ``param_groups`` still hold
    them) and their optimizer state tensors (Adam moments, SGD momentum) are zero-padded to
    the new shape, so existing entries keep their state and new ones start fresh. Pass the
    optimizer to :meth:`grow`.

    Parameters
    ----------
    in_features, out_features
        Input and output sizes.
    hidden
        Initial hidden widths, one per hidden layer (each >= 0).
    activation
        Name (``"selu"``, ``"relu"``, ...) or any elementwise ``nn.Module``.
    device, dtype
        Where the parameters live.
    generator
        Optional ``torch.Generator`` for reproducible initialisation.
    """

    family = "mlp"

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        activation: str | nn.Module = "selu",
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        in_features = _check_positive_int("in_features", in_features)
        out_features = _check_positive_int("out_features", out_features)
        if isinstance(hidden, int) or not isinstance(hidden, Sequence):
            raise TypeError(f"hidden: expected a sequence of ints, got {type(hidden).__name__}")
        widths = [
            _check_positive_int(f"hidden[{i}]", w, allow_zero=True) for i, w in enumerate(hidden)
        ]
        self.activation = resolve_activation(activation)
        self.sigma0, self.slope0 = value_and_slope_at_zero(self.activation)
        sizes = [in_features, *widths, out_features]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            bound = 1.0 / math.sqrt(max(fan_in, 1))
            w = torch.empty(fan_out, fan_in, device=device, dtype=dtype)
            b = torch.empty(fan_out, device=device, dtype=dtype)
            w.uniform_(-bound, bound, generator=generator)
            b.uniform_(-bound, bound, generator=generator)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))

    # ----------------------------------------------------------------- shape
    @property
    def in_features(self) -> int:
        return self.weights[0].shape[1]

    @property
    def num_sites(self) -> int:
        """Number of hidden states that can grow."""
        return len(self.weights) - 1

    @property
    def layer_sizes(self) -> list[int]:
        return [self.in_features, *self.hidden_widths, self.out_features]

    def added_parameters(self, site: int, num_neurons: int) -> int:
        """Parameters that ``num_neurons`` new neurons at ``site`` add (in, bias, out)."""
        site = self.check_site(site)
        return costs.added_parameters(self.layer_sizes, site, num_neurons)

    def added_flops(self, site: int, num_neurons: int) -> int:
        """Multiply-adds per sample that ``num_neurons`` new neurons at ``site`` add."""
        site = self.check_site(site)
        return costs.added_macs(self.layer_sizes, site, num_neurons)

    def flops(self) -> int:
        """Multiply-adds of one forward pass of one sample (linear layers)."""
        return costs.forward_macs(self.layer_sizes)

    def num_parameters(self) -> int:
        """Number of weights and biases."""
        return costs.parameter_count(self.layer_sizes)

    def extra_repr(self) -> str:
        arch = " -> ".join(str(s) for s in self.layer_sizes)
        return f"{arch}, activation={activation_name(self.activation)}"

    # --------------------------------------------------------------- forward
    def check_input(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise a clear error when ``x`` is not a float tensor of shape (n, in_features)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"{name}: expected shape (n, {self.in_features}), got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        last = self.num_layers - 1
        for layer, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = F.linear(h, w, b)
            if layer < last:
                h = self.activation(h)
        return h

    def forward_prefix(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """Return the input of linear layer ``layer`` (``x`` for layer 0)."""
        h = x
        for i in range(layer):
            h = self.activation(F.linear(h, self.weights[i], self.biases[i]))
        return h

    def forward_suffix(self, pre_activation: torch.Tensor, layer: int) -> torch.Tensor:
        """Continue the forward pass from the pre-activation of layer ``layer``.

        Leading dimensions of ``pre_activation`` are kept (used to evaluate several
        amplitudes at once).
        """
        h = pre_activation
        for i in range(layer + 1, self.num_layers):
            h = F.linear(self.activation(h), self.weights[i], self.biases[i])
        return h

    # ------------------------------------------------------------ conversion
    @classmethod
    def from_sequential(cls, seq: nn.Sequential) -> GrowingMLP:
        """Build from ``nn.Sequential(Linear, act, Linear, act, ..., Linear)``.

        All hidden activations must be the same type; the weights are copied.
        """
        if not isinstance(seq, nn.Sequential):
            raise TypeError(f"seq: expected torch.nn.Sequential, got {type(seq).__name__}")
        modules = list(seq)
        linears = modules[0::2]
        acts = modules[1::2]
        for i, m in enumerate(linears):
            if not isinstance(m, nn.Linear):
                raise TypeError(
                    f"seq[{2 * i}]: expected torch.nn.Linear (layers must alternate "
                    f"Linear, activation, ..., Linear), got {type(m).__name__}"
                )
            if m.bias is None:
                raise ValueError(f"seq[{2 * i}]: Linear layers need a bias (bias=True)")
        if not linears or len(acts) != len(linears) - 1:
            raise ValueError(
                "seq: expected Linear, activation, Linear, ..., Linear (ending with Linear)"
            )
        for i, m in enumerate(acts):
            if isinstance(m, nn.Linear) or not isinstance(m, nn.Module):
                raise TypeError(f"seq[{2 * i + 1}]: expected an activation, got {type(m).__name__}")
            if type(m) is not type(acts[0]):
                raise TypeError(
                    f"seq[{2 * i + 1}]: all activations must be the same type "
                    f"({type(acts[0]).__name__}), got {type(m).__name__}"
                )
        for i in range(1, len(linears)):
            if linears[i].in_features != linears[i - 1].out_features:
                raise ValueError(
                    f"seq[{2 * i}]: in_features {linears[i].in_features} does not match the "
                    f"previous Linear's out_features {linears[i - 1].out_features}"
                )
        first = linears[0].weight
        net = cls(
            linears[0].in_features,
            [m.out_features for m in linears[:-1]],
            linears[-1].out_features,
            activation=acts[0] if acts else "identity",
            device=first.device,
            dtype=first.dtype,
        )
        with torch.no_grad():
            for w, b, m in zip(net.weights, net.biases, linears, strict=True):
                w.copy_(m.weight)
                b.copy_(m.bias)
        return net

    def to_sequential(self) -> nn.Sequential:
        """Return an equivalent ``nn.Sequential`` (copies of the weights)."""
        layers: list[nn.Module] = []
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            lin = nn.Linear(w.shape[1], w.shape[0], device=w.device, dtype=w.dtype)
            with torch.no_grad():
                lin.weight.copy_(w)
                lin.bias.copy_(b)
            layers.append(lin)
            if i < self.num_layers - 1:
                layers.append(type(self.activation)())
        return nn.Sequential(*layers)
