"""The ``"conv"`` family: :class:`~growenv.nets.conv.net.GrowingConvNet` on image tasks."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from growenv.amplitude import AmplitudeResult
from growenv.data.tasks import Split, Task
from growenv.nets.conv.growth import (
    ConvGrowthCandidate,
    conv_amplitude_search,
    conv_apply_growth,
    conv_bottleneck,
    conv_extended_forward,
)
from growenv.nets.conv.net import OPTIONS, GrowingConvNet, validate_options
from growenv.nets.conv.statistics import conv_statistics_macs
from growenv.nets.family import NEEDS_IMAGES, SITES
from growenv.nets.report import BottleneckReport


def image_shape(task: Task) -> tuple[int, int, int] | None:
    """``(C, H, W)`` of the task's images (inputs of that shape, or flattened ones with
    ``info['image_shape']``), or ``None``."""
    shape = task.input_shape if len(task.input_shape) == 3 else task.info.get("image_shape")
    return None if shape is None or len(shape) != 3 else tuple(int(d) for d in shape)


def as_images(task: Task) -> Task:
    """The task with inputs shaped as images ``(n, C, H, W)``.

    Raises ``ValueError`` if the task has neither image inputs nor ``info['image_shape']``.
    """
    shape = image_shape(task)
    if shape is None:
        raise ValueError(
            f"net: 'conv' needs image inputs (C, H, W); task {task.name!r} has inputs of "
            f"shape {task.input_shape} and no info['image_shape']"
        )
    splits = {k: Split(v.x.reshape(len(v), *shape), v.y) for k, v in task.splits().items()}
    return dataclasses.replace(task, input_shape=shape, **splits)


class ConvFamily:
    """Convolutional nets (:class:`~growenv.nets.conv.net.GrowingConvNet`) on images.

    Option ``kernel``: ``"full"`` (a new channel is a k x k kernel in and out) or
    ``"restricted"`` (1 x 1 out), see :func:`~growenv.nets.conv.growth.conv_bottleneck`.
    """

    name = "conv"
    net_class = GrowingConvNet
    capabilities = frozenset({NEEDS_IMAGES, SITES})
    options: Mapping[str, tuple] = OPTIONS
    min_width = 1

    def validate_options(self, **options: Any) -> dict[str, Any]:
        """``{"kernel": ...}`` checked (default ``"full"``)."""
        return validate_options(**options)

    def prepare_task(self, task: Task) -> Task:
        """The task with image-shaped inputs (:func:`as_images`)."""
        return as_images(task)

    def build(
        self,
        task: Task,
        widths: list[int],
        *,
        activation: Any = "selu",
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> GrowingConvNet:
        """One stage per width (3 x 3 kernels, stride 1 then 2) for the task's image size,
        initialised in float32 with ``generator`` and then cast to ``dtype``."""
        channels, height, width = task.input_shape
        net = GrowingConvNet(
            channels,
            list(widths),
            task.out_features,
            stride=[1] + [2] * (len(widths) - 1),
            activation=activation,
            image_size=(height, width),
            device=device,
            generator=generator,
        )
        return net.to(dtype)

    # ----------------------------------------------------------------------- verbs
    def bottleneck(self, net, x, y=None, *, loss="mse", **kw) -> BottleneckReport:
        """:func:`~growenv.nets.conv.growth.conv_bottleneck`."""
        return conv_bottleneck(net, x, y, loss, **kw)

    def extended_forward(self, net, x, candidate: ConvGrowthCandidate, gamma=1.0) -> torch.Tensor:
        """:func:`~growenv.nets.conv.growth.conv_extended_forward`."""
        return conv_extended_forward(net, candidate, x, gamma)

    def amplitude_search(self, net, candidate, x, y, *, loss="mse", gammas=None) -> AmplitudeResult:
        """:func:`~growenv.nets.conv.growth.conv_amplitude_search`."""
        return conv_amplitude_search(net, candidate, x, y, loss, gammas)

    def apply_growth(self, net, candidate, gamma=1.0, optimizer=None) -> None:
        """:func:`~growenv.nets.conv.growth.conv_apply_growth`."""
        conv_apply_growth(net, candidate, gamma, optimizer)

    # ------------------------------------------------------------------ cost model
    def training_macs(self, net, samples: int) -> int:
        """Forward + backward: ``3 x`` the forward multiply-adds per image."""
        return 3 * net.flops() * samples

    def statistics_macs(self, net, samples: int, **options: Any) -> int:
        """:func:`~growenv.nets.conv.statistics.conv_statistics_macs` with the ``kernel``
        option (the streamed figure; the solve is not counted)."""
        kernel = self.validate_options(**options)["kernel"]
        return conv_statistics_macs(net, samples, kernel)

    def search_macs(self, net, site: int, num_gammas: int, samples: int) -> int:
        """An upper bound: the whole forward pass for every amplitude."""
        return net.flops() * num_gammas * samples

    def evaluate_macs(self, net, samples: int) -> int:
        """One forward pass per image."""
        return net.flops() * samples


FAMILY = ConvFamily()
