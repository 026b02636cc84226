"""growenv: neural-network growth (TINY expressivity bottleneck) as an RL problem."""

from growenv.amplitude import AmplitudeResult, amplitude_search, default_gammas
from growenv.conv import GrowingConvNet
from growenv.conv_growth import ConvGrowthCandidate, conv_bottleneck
from growenv.growth import GrowthCandidate, apply_growth, extended_forward
from growenv.nets import GrowingMLP
from growenv.report import BottleneckReport, SiteReport, bottleneck
from growenv.statistics import GrowthStatistics, compute_statistics

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
    _gym.register(id="growenv/Grow-v0", entry_point="growenv.env:GrowthEnv")
