"""GrowingConvNet: convolutional stages whose channel counts grow, then a pooled linear head.

Stage ``l`` computes ``a_l = conv_l(h_l)`` (k x k kernel, stride, zero padding, bias), then
``h_{l+1} = pool_l(sigma(a_l))`` (optional ``AvgPool2d``/``MaxPool2d``); after the last stage
the features ``f = mean over positions of h_L`` feed a linear head ``out = W f + c``.
*Site* ``l`` is the channel set of stage ``l``: growing it adds output channels to conv ``l``
and input channels to conv ``l + 1`` (or input features to the head for the last stage).
BatchNorm is not offered.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from growenv.activations import activation_name, resolve_activation, value_and_slope_at_zero
from growenv.nets.base import GrowingNet
from growenv.nets.family import check_options

POOLS = ("avg", "max")
#: The conv family's options and their allowed values, the default first: ``kernel`` is
#: ``"full"`` (a new channel is a k x k kernel in the next conv) or ``"restricted"`` (1 x 1).
OPTIONS: Mapping[str, tuple] = MappingProxyType({"kernel": ("full", "restricted")})


def validate_options(**options: Any) -> dict[str, Any]:
    """The conv options (:data:`OPTIONS`) with the given values checked, defaults filled in;
    ``ValueError`` such as ``"kernel: expected 'full' or 'restricted', got 'x'"``."""
    return check_options("conv", OPTIONS, options)


def _int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class ConvStage:
    """Geometry of one stage: ``conv(kernel_size, stride, padding) -> sigma -> pool``.

    ``pool`` is ``None``, ``"avg"`` or ``"max"`` with a ``pool_size`` window moved by
    ``pool_stride`` (default ``pool_size``); pools have no padding.
    """

    kernel_size: int = 3
    stride: int = 1
    padding: int = 1
    pool: str | None = None
    pool_size: int = 2
    pool_stride: int | None = None

    def __post_init__(self) -> None:
        _int("kernel_size", self.kernel_size, 1)
        _int("stride", self.stride, 1)
        _int("padding", self.padding, 0)
        if self.pool is not None and self.pool not in POOLS:
            raise ValueError(f"pool: expected None or one of {POOLS}, got {self.pool!r}")
        _int("pool_size", self.pool_size, 1)
        if self.pool_stride is not None:
            _int("pool_stride", self.pool_stride, 1)

    @property
    def pool_step(self) -> int:
        """Stride of the pooling window (1 without pooling)."""
        if self.pool is None:
            return 1
        return self.pool_size if self.pool_stride is None else self.pool_stride

    def conv_size(self, size: int) -> int:
        """Output length of the convolution along one dimension."""
        return (size + 2 * self.padding - self.kernel_size) // self.stride + 1

    def out_size(self, size: int) -> int:
        """Output length of the whole stage (convolution, then pooling)."""
        size = self.conv_size(size)
        if self.pool is None or size <= 0:
            return size
        return (size - self.pool_size) // self.pool_step + 1

    def apply_pool(self, h: torch.Tensor) -> torch.Tensor:
        """Pooling of a (..., C, H, W) map (leading dimensions are flattened and restored)."""
        if self.pool is None:
            return h
        lead = h.shape[:-3]
        flat = h.reshape(-1, *h.shape[-3:])
        fn = F.avg_pool2d if self.pool == "avg" else F.max_pool2d
        out = fn(flat, self.pool_size, self.pool_step)
        return out.reshape(*lead, *out.shape[-3:])


def _per_stage(name: str, value: object, count: int) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ValueError(f"{name}: expected {count} values (one per stage), got {len(value)}")
        return list(value)
    return [value] * count


def _stage_from_args(kernel: int, stride: int, padding: int | None, pool: object) -> ConvStage:
    padding = kernel // 2 if padding is None else padding
    if pool is None or isinstance(pool, str):
        return ConvStage(kernel, stride, padding, pool)
    if isinstance(pool, (tuple, list)) and len(pool) in (2, 3):
        return ConvStage(kernel, stride, padding, *pool)
    raise TypeError(f"pool: expected None, 'avg', 'max' or (kind, size[, stride]), got {pool!r}")


def _conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, stage: ConvStage):
    """``conv2d`` over (..., C, H, W): leading dimensions are flattened and restored."""
    lead = x.shape[:-3]
    out = F.conv2d(x.reshape(-1, *x.shape[-3:]), w, b, stage.stride, stage.padding)
    return out.reshape(*lead, *out.shape[-3:])


def global_average(h: torch.Tensor) -> torch.Tensor:
    """Mean over the last two (spatial) dimensions, as ``h.mean((-2, -1))`` (the same
    numbers), written as a sum and a scale of the pooled values: its gradient is a
    broadcast view instead of a full-size map, one allocation and one pass fewer."""
    return h.sum((-2, -1)) / (h.shape[-2] * h.shape[-1])


class GrowingConvNet(GrowingNet):
    """Convolutional network with growable channel counts and a pooled linear head.

    ``x (n, C, H, W) -> [conv_l -> sigma -> pool_l] for each stage -> mean over positions ->
    linear``. Every stage's channel count (*site* ``l``) can grow; parameters grow in place
    (the ``nn.Parameter`` objects are kept) and optimizer state is zero-padded for the new
    entries, as for :class:`~growenv.nets.mlp.net.GrowingMLP`. BatchNorm is not offered.

    Parameters
    ----------
    in_channels, out_features
        Image channels and head outputs.
    channels
        Initial channel count of every stage (each >= 1).
    kernel_size, stride, padding
        Per stage (a sequence) or for all stages (an int). ``padding=None`` means
        ``kernel_size // 2``.
    pool
        Per stage or for all: ``None``, ``"avg"`` / ``"max"`` (2 x 2, stride 2) or a tuple
        ``(kind, size[, stride])``.
    activation
        Name or elementwise ``nn.Module``, shared by all stages.
    image_size
        Default image size (int or ``(H, W)``) for :meth:`flops`; any image size that the
        stages can process is accepted by :meth:`forward`.
    device, dtype, generator
        Where the parameters live; optional generator for reproducible initialisation.
    """

    family = "conv"
    site_noun = "stages"

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        out_features: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        padding: int | None | Sequence[int | None] = None,
        pool: object = None,
        activation: str | nn.Module = "selu",
        image_size: int | tuple[int, int] = 32,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        in_channels = _int("in_channels", in_channels, 1)
        out_features = _int("out_features", out_features, 1)
        if isinstance(channels, int) or not isinstance(channels, Sequence) or not channels:
            raise TypeError("channels: expected a non-empty sequence of ints (one per stage)")
        widths = [_int(f"channels[{i}]", c, 1) for i, c in enumerate(channels)]
        count = len(widths)
        kernels = _per_stage("kernel_size", kernel_size, count)
        strides = _per_stage("stride", stride, count)
        pads = _per_stage("padding", padding, count)
        pools = pool if isinstance(pool, list) else _per_stage("pool", pool, count)
        if len(pools) != count:
            raise ValueError(f"pool: expected {count} values (one per stage), got {len(pools)}")
        stages = [
            _stage_from_args(*args) for args in zip(kernels, strides, pads, pools, strict=True)
        ]
        self._build(in_channels, widths, out_features, stages, activation, device, dtype)
        self.image_size = self._check_image_size(image_size)
        with torch.no_grad():
            for w, b in zip(self.weights, self.biases, strict=True):
                bound = 1.0 / math.sqrt(max(w[0].numel(), 1))
                w.uniform_(-bound, bound, generator=generator)
                b.uniform_(-bound, bound, generator=generator)

    def _build(self, in_channels, widths, out_features, stages, activation, device, dtype) -> None:
        self.stages: tuple[ConvStage, ...] = tuple(stages)
        self.activation = resolve_activation(activation)
        self.sigma0, self.slope0 = value_and_slope_at_zero(self.activation)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        fan_in = in_channels
        for stage, width in zip(self.stages, widths, strict=True):
            k = stage.kernel_size
            self.weights.append(
                nn.Parameter(torch.zeros(width, fan_in, k, k, device=device, dtype=dtype))
            )
            self.biases.append(nn.Parameter(torch.zeros(width, device=device, dtype=dtype)))
            fan_in = width
        self.weights.append(
            nn.Parameter(torch.zeros(out_features, fan_in, device=device, dtype=dtype))
        )
        self.biases.append(nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype)))

    @staticmethod
    def _check_image_size(size: int | tuple[int, int]) -> tuple[int, int]:
        if isinstance(size, int) and not isinstance(size, bool):
            size = (size, size)
        if not (
            isinstance(size, tuple) and len(size) == 2 and all(isinstance(s, int) for s in size)
        ):
            raise TypeError(f"image_size: expected an int or (H, W), got {size!r}")
        return (_int("image_size", size[0], 1), _int("image_size", size[1], 1))

    # ----------------------------------------------------------------- shape
    @property
    def in_channels(self) -> int:
        return self.weights[0].shape[1]

    @property
    def num_sites(self) -> int:
        return len(self.stages)

    @property
    def layer_sizes(self) -> list[int]:
        """``[in_channels, *channel counts, out_features]``."""
        return [self.in_channels, *self.hidden_widths, self.out_features]

    def grid_sizes(self, image_size: int | tuple[int, int] | None = None) -> list[tuple[int, int]]:
        """Spatial size of the input of every stage, then of the last stage's output."""
        size = self.image_size if image_size is None else self._check_image_size(image_size)
        sizes = [size]
        for stage in self.stages:
            size = (stage.out_size(size[0]), stage.out_size(size[1]))
            sizes.append(size)
        return sizes

    def flops(self, image_size: int | tuple[int, int] | None = None) -> int:
        """Multiply-adds of one forward pass of one image (convolutions and head)."""
        sizes = self.grid_sizes(image_size)
        total = self.weights[-1].numel()
        for stage, w, size in zip(self.stages, self.weights, sizes, strict=False):
            total += w.numel() * stage.conv_size(size[0]) * stage.conv_size(size[1])
        return total

    def added_parameters(self, site: int, num_channels: int) -> int:
        """Parameters that ``num_channels`` new channels at ``site`` add (kernels in and out,
        biases)."""
        site = self.check_site(site)
        w_in, w_out = self.weights[site], self.weights[site + 1]
        return num_channels * (w_in[0].numel() + 1 + w_out.shape[0] * w_out[0, 0].numel())

    def added_flops(
        self, site: int, num_channels: int, image_size: int | tuple[int, int] | None = None
    ) -> int:
        """Multiply-adds per image that ``num_channels`` new channels at ``site`` add."""
        site = self.check_site(site)
        sizes = self.grid_sizes(image_size)
        stage, w_in, w_out = self.stages[site], self.weights[site], self.weights[site + 1]
        conv_in = stage.conv_size(sizes[site][0]) * stage.conv_size(sizes[site][1])
        macs = w_in[0].numel() * conv_in
        if site + 1 < self.num_sites:
            nxt, size = self.stages[site + 1], sizes[site + 1]
            macs += (
                w_out.shape[0]
                * w_out[0, 0].numel()
                * nxt.conv_size(size[0])
                * nxt.conv_size(size[1])
            )
        else:
            macs += w_out.shape[0]
        return num_channels * macs

    def extra_repr(self) -> str:
        parts = []
        for stage, width in zip(self.stages, self.hidden_widths, strict=True):
            pool = f"+{stage.pool}{stage.pool_size}" if stage.pool else ""
            parts.append(f"{width}(k{stage.kernel_size}s{stage.stride}p{stage.padding}{pool})")
        arch = " -> ".join([str(self.in_channels), *parts, str(self.out_features)])
        return f"{arch}, activation={activation_name(self.activation)}"

    # --------------------------------------------------------------- forward
    def check_input(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise a clear error unless ``x`` is a float tensor (n, in_channels, H, W) that the
        stages can process."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4:
            raise ValueError(
                f"{name}: expected images of shape (n, {self.in_channels}, H, W), "
                f"got {x.ndim}-d shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{name}: expected {self.in_channels} channels (dimension 1), got "
                f"{x.shape[1]} in shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")
        sizes = self.grid_sizes((int(x.shape[2]), int(x.shape[3])))
        for j, size in enumerate(sizes[1:]):
            if min(size) < 1:
                raise ValueError(
                    f"{name}: images of size {tuple(x.shape[2:])} are too small: stage {j} "
                    f"would output {size}"
                )

    def stage_output(self, a: torch.Tensor, layer: int) -> torch.Tensor:
        """``pool(sigma(a))`` for the pre-activation ``a`` of conv ``layer``."""
        return self.stages[layer].apply_pool(self.activation(a))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_suffix(self.forward_prefix(x, 0), -1)

    def forward_prefix(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """The input of layer ``layer``: a map for a convolution, the pooled features
        (n, C) for the head (``layer = num_sites``)."""
        h = x
        for i in range(layer):
            h = self.stage_output(_conv(h, self.weights[i], self.biases[i], self.stages[i]), i)
        if layer == self.num_sites:
            return global_average(h)
        return h

    def forward_suffix(self, pre_activation: torch.Tensor, layer: int) -> torch.Tensor:
        """Continue from the pre-activation of layer ``layer`` (-1: from the input image).

        Leading dimensions are kept (several amplitudes at once): ``(..., C, H, W)`` for a
        convolution, ``(..., out)`` for the head (returned as is).
        """
        if layer == self.num_sites:
            return pre_activation
        h = pre_activation if layer >= 0 else None
        start = layer + 1
        if layer < 0:
            h = self.stage_output(
                _conv(pre_activation, self.weights[0], self.biases[0], self.stages[0]), 0
            )
            start = 1
        else:
            h = self.stage_output(h, layer)
        for i in range(start, self.num_sites):
            h = self.stage_output(_conv(h, self.weights[i], self.biases[i], self.stages[i]), i)
        return F.linear(global_average(h), self.weights[-1], self.biases[-1])

    # ------------------------------------------------------------ conversion
    @classmethod
    def from_sequential(
        cls, seq: nn.Sequential, image_size: int | tuple[int, int] = 32
    ) -> GrowingConvNet:
        """Build from ``nn.Sequential([Conv2d, act, (AvgPool2d | MaxPool2d)?]*,
        AdaptiveAvgPool2d(1), Flatten(), Linear)``; the weights are copied."""
        spec = _parse_sequential(seq)
        first = spec.convs[0].weight
        net = cls(
            spec.convs[0].in_channels,
            [m.out_channels for m in spec.convs],
            spec.head.out_features,
            kernel_size=[s.kernel_size for s in spec.stages],
            stride=[s.stride for s in spec.stages],
            padding=[s.padding for s in spec.stages],
            pool=[(s.pool, s.pool_size, s.pool_step) if s.pool else None for s in spec.stages],
            activation=spec.activation,
            image_size=image_size,
            device=first.device,
            dtype=first.dtype,
        )
        with torch.no_grad():
            for w, b, m in zip(net.weights, net.biases, [*spec.convs, spec.head], strict=True):
                w.copy_(m.weight)
                b.copy_(m.bias)
        return net

    def to_sequential(self) -> nn.Sequential:
        """Return an equivalent ``nn.Sequential`` (copies of the weights)."""
        layers: list[nn.Module] = []
        for stage, w, b in zip(self.stages, self.weights, self.biases, strict=False):
            conv = nn.Conv2d(
                w.shape[1], w.shape[0], stage.kernel_size, stage.stride, stage.padding,
                device=w.device, dtype=w.dtype,
            )  # fmt: skip
            with torch.no_grad():
                conv.weight.copy_(w)
                conv.bias.copy_(b)
            layers += [conv, type(self.activation)()]
            if stage.pool == "avg":
                layers.append(nn.AvgPool2d(stage.pool_size, stage.pool_step))
            elif stage.pool == "max":
                layers.append(nn.MaxPool2d(stage.pool_size, stage.pool_step))
        w, b = self.weights[-1], self.biases[-1]
        head = nn.Linear(w.shape[1], w.shape[0], device=w.device, dtype=w.dtype)
        with torch.no_grad():
            head.weight.copy_(w)
            head.bias.copy_(b)
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)


@dataclass
class _SequentialSpec:
    convs: list[nn.Conv2d]
    stages: list[ConvStage]
    activation: nn.Module
    head: nn.Linear


def _square(name: str, value: object) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, tuple) and len(value) == 2 and value[0] == value[1]:
        return int(value[0])
    raise ValueError(f"{name}: only square values are supported, got {value!r}")


def _conv_stage(i: int, m: nn.Conv2d) -> ConvStage:
    k = _square(f"seq[{i}].kernel_size", m.kernel_size)
    if isinstance(m.padding, str):
        if m.padding == "valid":
            padding = 0
        elif k % 2 == 1:  # 'same' (stride 1) with an odd kernel
            padding = k // 2
        else:
            raise ValueError(f"seq[{i}]: padding='same' needs an odd kernel, got {k}")
    else:
        padding = _square(f"seq[{i}].padding", m.padding)
    if tuple(m.dilation) != (1, 1):
        raise ValueError(
            f"seq[{i}]: dilated convolutions are not supported (dilation={m.dilation})"
        )
    if m.groups != 1:
        raise ValueError(f"seq[{i}]: grouped convolutions are not supported (groups={m.groups})")
    if m.bias is None:
        raise ValueError(f"seq[{i}]: Conv2d layers need a bias (bias=True)")
    if m.padding_mode != "zeros":
        raise ValueError(f"seq[{i}]: only zero padding is supported, got {m.padding_mode!r}")
    return ConvStage(k, _square(f"seq[{i}].stride", m.stride), padding)


def _pool(i: int, m: nn.Module) -> tuple[str, int, int]:
    size = _square(f"seq[{i}].kernel_size", m.kernel_size)
    stride = size if m.stride is None else _square(f"seq[{i}].stride", m.stride)
    if _square(f"seq[{i}].padding", m.padding) != 0 or m.ceil_mode:
        raise ValueError(f"seq[{i}]: pooling with padding or ceil_mode is not supported")
    if isinstance(m, nn.MaxPool2d) and (
        _square(f"seq[{i}].dilation", m.dilation) != 1 or m.return_indices
    ):
        raise ValueError(f"seq[{i}]: MaxPool2d with dilation or return_indices is not supported")
    if isinstance(m, nn.AvgPool2d) and m.divisor_override is not None:
        raise ValueError(f"seq[{i}]: AvgPool2d with divisor_override is not supported")
    return ("avg" if isinstance(m, nn.AvgPool2d) else "max", size, stride)


_LAYOUT = (
    "expected [Conv2d, activation, (AvgPool2d | MaxPool2d)?]*, AdaptiveAvgPool2d(1), "
    "Flatten(), Linear"
)


def _reject(i: int, m: nn.Module) -> None:
    if isinstance(m, nn.modules.conv._ConvTransposeNd):
        raise ValueError(f"seq[{i}]: transposed convolutions are not supported")
    if isinstance(m, nn.modules.batchnorm._NormBase):
        raise ValueError(
            f"seq[{i}]: BatchNorm is not offered by GrowingConvNet; fold it into the conv"
        )
    if isinstance(m, nn.modules.conv._ConvNd) and not isinstance(m, nn.Conv2d):
        raise ValueError(
            f"seq[{i}]: only Conv2d convolutions are supported, got {type(m).__name__}"
        )


def _parse_sequential(seq: nn.Sequential) -> _SequentialSpec:
    if not isinstance(seq, nn.Sequential):
        raise TypeError(f"seq: expected torch.nn.Sequential, got {type(seq).__name__}")
    modules = list(seq)
    for i, m in enumerate(modules):
        _reject(i, m)
    convs: list[nn.Conv2d] = []
    stages: list[ConvStage] = []
    acts: list[tuple[int, nn.Module]] = []
    i = 0
    while i < len(modules) and isinstance(modules[i], nn.Conv2d):
        conv = modules[i]
        if convs and conv.in_channels != convs[-1].out_channels:
            raise ValueError(
                f"seq[{i}]: in_channels {conv.in_channels} does not match the previous "
                f"Conv2d's out_channels {convs[-1].out_channels}"
            )
        stage = _conv_stage(i, conv)
        if i + 1 >= len(modules) or isinstance(
            modules[i + 1],
            (nn.Conv2d, nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear),
        ):
            raise ValueError(f"seq[{i + 1}]: expected an activation after Conv2d ({_LAYOUT})")
        acts.append((i + 1, modules[i + 1]))
        i += 2
        if i < len(modules) and isinstance(modules[i], (nn.AvgPool2d, nn.MaxPool2d)):
            kind, size, stride = _pool(i, modules[i])
            stage = ConvStage(stage.kernel_size, stage.stride, stage.padding, kind, size, stride)
            i += 1
        convs.append(conv)
        stages.append(stage)
    if not convs:
        raise ValueError(f"seq[0]: expected a Conv2d ({_LAYOUT})")
    tail = modules[i:]
    ok = (
        len(tail) == 3
        and isinstance(tail[0], nn.AdaptiveAvgPool2d)
        and tail[0].output_size in (1, (1, 1))
        and isinstance(tail[1], nn.Flatten)
        and isinstance(tail[2], nn.Linear)
    )
    if not ok:
        names = [type(m).__name__ for m in tail]
        raise ValueError(f"seq[{i}:]: got {names} after the conv stages; {_LAYOUT}")
    head = tail[2]
    if head.bias is None:
        raise ValueError(f"seq[{len(modules) - 1}]: the Linear head needs a bias (bias=True)")
    if head.in_features != convs[-1].out_channels:
        raise ValueError(
            f"seq[{len(modules) - 1}]: Linear in_features {head.in_features} does not match "
            f"the last Conv2d's out_channels {convs[-1].out_channels}"
        )
    for j, m in acts:
        if type(m) is not type(acts[0][1]):
            raise TypeError(
                f"seq[{j}]: all activations must be the same type "
                f"({type(acts[0][1]).__name__}), got {type(m).__name__}"
            )
    return _SequentialSpec(convs, stages, acts[0][1], head)
