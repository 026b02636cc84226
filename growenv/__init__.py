"""growenv: neural-network growth (TINY expressivity bottleneck) as an RL problem."""

from growenv.amplitude import AmplitudeResult, default_gammas
from growenv.api import amplitude_search, apply_growth, bottleneck, extended_forward
from growenv.env.growth_env import GrowthEnv
from growenv.nets.candidate import GrowthCandidate
from growenv.nets.conv.growth import ConvGrowthCandidate, conv_bottleneck
from growenv.nets.conv.net import GrowingConvNet
from growenv.nets.dag.net import GrowingDAG
from growenv.nets.mlp.net import GrowingMLP
from growenv.nets.mlp.statistics import compute_statistics
from growenv.nets.registry import FAMILIES, get_family
from growenv.nets.report import BottleneckReport, SiteReport
from growenv.nets.statistics import GrowthStatistics

__all__ = [
    "FAMILIES",
    "AmplitudeResult",
    "BottleneckReport",
    "ConvGrowthCandidate",
    "GrowingConvNet",
    "GrowingDAG",
    "GrowingMLP",
    "GrowthCandidate",
    "GrowthEnv",
    "GrowthStatistics",
    "SiteReport",
    "amplitude_search",
    "apply_growth",
    "bottleneck",
    "compute_statistics",
    "conv_bottleneck",
    "default_gammas",
    "extended_forward",
    "get_family",
]
__version__ = "0.1.0"

import gymnasium as _gym  # noqa: E402

# v1: amplitude line searches on training samples (search_split="train"); v0 keeps the
# search on the statistics split, for results measured before issue #23's fix
if "growenv/Grow-v1" not in _gym.registry:
    _gym.register(id="growenv/Grow-v1", entry_point="growenv.env.growth_env:GrowthEnv")
if "growenv/Grow-v0" not in _gym.registry:
    _gym.register(
        id="growenv/Grow-v0",
        entry_point="growenv.env.growth_env:GrowthEnv",
        kwargs={"search_split": "stats"},
    )
