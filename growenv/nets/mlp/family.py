"""The ``"mlp"`` family: :class:`~growenv.nets.mlp.net.GrowingMLP` and its verbs and costs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from growenv.amplitude import AmplitudeResult
from growenv.data.tasks import Task
from growenv.nets.family import SITES, STACKABLE, check_options
from growenv.nets.mlp import costs
from growenv.nets.mlp.growth import (
    GrowthCandidate,
    mlp_amplitude_search,
    mlp_apply_growth,
    mlp_extended_forward,
)
from growenv.nets.mlp.net import GrowingMLP
from growenv.nets.mlp.report import mlp_bottleneck
from growenv.nets.report import BottleneckReport


class MLPFamily:
    """Fully connected nets (:class:`~growenv.nets.mlp.net.GrowingMLP`) on flat inputs.

    The cost model reads only ``net.layer_sizes``, so it also prices stand-ins of a net (the
    lockstep env's per-env architectures).
    """

    name = "mlp"
    net_class = GrowingMLP
    capabilities = frozenset({STACKABLE, SITES})
    options: Mapping[str, tuple] = {}
    min_width = 0

    def validate_options(self, **options: Any) -> dict[str, Any]:
        """``{}``: MLPs take no family options (any given one is rejected)."""
        return check_options(self.name, self.options, options)

    def prepare_task(self, task: Task) -> Task:
        """The task with inputs flattened to ``(n, in_features)``."""
        return task.flattened()

    def build(
        self,
        task: Task,
        widths: list[int],
        *,
        activation: Any = "selu",
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> GrowingMLP:
        """``task.in_features -> widths -> task.out_features``, initialised in float32 with
        ``generator`` and then cast to ``dtype``."""
        net = GrowingMLP(
            task.in_features,
            list(widths),
            task.out_features,
            activation=activation,
            device=device,
            generator=generator,
        )
        return net.to(dtype)

    # ----------------------------------------------------------------------- verbs
    def bottleneck(self, net, x, y=None, *, loss="mse", **kw) -> BottleneckReport:
        """:func:`~growenv.nets.mlp.report.mlp_bottleneck`."""
        return mlp_bottleneck(net, x, y, loss, **kw)

    def extended_forward(self, net, x, candidate: GrowthCandidate, gamma=1.0) -> torch.Tensor:
        """:func:`~growenv.nets.mlp.growth.mlp_extended_forward`."""
        return mlp_extended_forward(net, candidate, x, gamma)

    def amplitude_search(self, net, candidate, x, y, *, loss="mse", gammas=None) -> AmplitudeResult:
        """:func:`~growenv.nets.mlp.growth.mlp_amplitude_search`."""
        return mlp_amplitude_search(net, candidate, x, y, loss, gammas)

    def apply_growth(self, net, candidate, gamma=1.0, optimizer=None) -> None:
        """:func:`~growenv.nets.mlp.growth.mlp_apply_growth`."""
        mlp_apply_growth(net, candidate, gamma, optimizer)

    # ------------------------------------------------------------------ cost model
    def training_macs(self, net, samples: int) -> int:
        """Forward + backward: ``3 x`` the forward multiply-adds per sample."""
        return costs.training_macs(net.layer_sizes, samples)

    def statistics_macs(self, net, samples: int, **options: Any) -> int:
        """The statistics pass plus the factorisations of the solve."""
        self.validate_options(**options)
        sizes = net.layer_sizes
        return costs.statistics_macs(sizes, samples) + costs.solve_macs(sizes)

    def search_macs(self, net, site: int, num_gammas: int, samples: int) -> int:
        """The prefix up to ``site + 1`` once, the suffix once per amplitude."""
        return costs.amplitude_macs(net.layer_sizes, site, num_gammas, samples)

    def evaluate_macs(self, net, samples: int) -> int:
        """One forward pass per sample."""
        return costs.forward_macs(net.layer_sizes) * samples


FAMILY = MLPFamily()
