"""growenv: neural-network growth (TINY expressivity bottleneck) as an RL problem."""

from growenv.amplitude import AmplitudeResult, amplitude_search, default_gammas
from growenv.nets.conv.growth import ConvGrowthCandidate, conv_bottleneck
from growenv.nets.conv.net import GrowingConvNet
from growenv.nets.mlp.growth import GrowthCandidate, apply_growth, extended_forward
from growenv.nets.mlp.net import GrowingMLP
from growenv.nets.mlp.report import BottleneckReport, SiteReport, bottleneck
from growenv.nets.mlp.statistics import GrowthStatistics, compute_statistics

__all__ = [
    "AmplitudeResult",
    "BottleneckReport",
    "ConvGrowthCandidate",
    "GrowingConvNet",
    "GrowingMLP",
    "GrowthCandidate",
    "GrowthStatistics",
    "SiteReport",
    "amplitude_search",
    "apply_growth",
    "bottleneck",
    "compute_statistics",
    "conv_bottleneck",
    "default_gammas",
    "extended_forward",
]
__version__ = "0.1.0"

import gymnasium as _gym  # noqa: E402

if "growenv/Grow-v0" not in _gym.registry:
    _gym.register(id="growenv/Grow-v0", entry_point="growenv.env.growth_env:GrowthEnv")
