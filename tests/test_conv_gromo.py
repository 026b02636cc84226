"""growenv's conv statistics and solve against gromo's conv modules (the TINY authors' code).

A pair of gromo ``FullConv2dGrowingModule`` (or ``RestrictedConv2dGrowingModule``) layers,
wired as gromo's ``Conv2dGrowingBlock`` wires them (the second one's ``previous_module`` is
the first), followed by a plain average-pool + linear head; growenv's ``GrowingConvNet`` gets
the same weights and data. gromo's protocol: ``init_computation`` -> forward ->
``MSELoss(reduction="sum").backward()`` -> ``update_computation`` ->
``compute_optimal_updates`` (float32). Both normalise by the number of samples and sum over
positions.

gromo's restricted module takes the growth covariance from the previous layer's ``S``
(every hidden position weighted 1); growenv counts the positions the centre tap reads, which
is the same for stride 1 with ``padding = k // 2`` (the configuration compared here).
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from torch import nn

from growenv.nets.conv.growth import conv_bottleneck
from growenv.nets.conv.net import GrowingConvNet

conv_modules = pytest.importorskip("gromo.modules.conv2d_growing_module")

RTOL = 1e-3
# (kernel, stride, padding, image size)
CASES = [
    ("full", 1, 1, 8),
    ("full", 1, 0, 8),
    ("full", 2, 1, 9),
    ("full", 2, 0, 9),
    ("restricted", 1, 1, 8),
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclasses.dataclass
class Pair:
    first: object
    second: object
    loss: float
    report: object


def make_pair(kernel: str, stride: int, padding: int, size: int, seed: int = 0) -> Pair:
    torch.manual_seed(seed)
    cls = (
        conv_modules.FullConv2dGrowingModule
        if kernel == "full"
        else conv_modules.RestrictedConv2dGrowingModule
    )
    c0, c1, c2, out, n = 3, 4, 5, 3, 64
    geometry = {"kernel_size": 3, "stride": stride, "padding": padding}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = cls(c0, c1, post_layer_function=nn.SELU(), name="first", **geometry)
        second = cls(
            c1, c2, post_layer_function=nn.SELU(), previous_module=first, name="second", **geometry
        )
    first.next_module = second
    head = nn.Linear(c2, out)
    model = nn.Sequential(first, second, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    net = GrowingConvNet(c0, [c1, c2], out, 3, stride, padding, activation="selu", image_size=size)
    with torch.no_grad():
        for w, b, m in zip(net.weights, net.biases, [first.layer, second.layer, head]):
            w.copy_(m.weight)
            b.copy_(m.bias)
    x = torch.randn(n, c0, size, size)
    y = torch.randn(n, out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for layer in (first, second):
            layer.init_computation()
        model.zero_grad()
        loss = nn.MSELoss(reduction="sum")(model(x), y)
        loss.backward()
        for layer in (first, second):
            layer.update_computation()
        for layer in (first, second):
            layer.compute_optimal_updates()
    report = conv_bottleneck(net, x, y, kernel=kernel)
    return Pair(first, second, float(loss.detach()) / n, report)


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-s{c[1]}p{c[2]}")
def pair(request: pytest.FixtureRequest) -> Pair:
    return make_pair(*request.param)


def rel(a, b) -> float:
    a, b = torch.as_tensor(a).detach().double(), torch.as_tensor(b).detach().double()
    return float((a - b).abs().max() / b.abs().max())


def test_same_loss(pair: Pair) -> None:
    assert rel(pair.report.loss, pair.loss) <= RTOL


def test_eigenvalues(pair: Pair) -> None:
    site = pair.report.sites[0]
    ref = pair.second.eigenvalues_extension
    assert int(site.num_significant) == ref.shape[0]  # gromo keeps the significant ones
    k = ref.shape[0]
    assert float(((site.eigenvalues[:k] - ref) / ref).abs().max()) <= RTOL


def test_update_gains(pair: Pair) -> None:
    gains = pair.report.layers.update_gain
    assert rel(gains[0], pair.first.parameter_update_decrease) <= RTOL
    assert rel(gains[1], pair.second.parameter_update_decrease) <= RTOL
    assert rel(pair.report.sites[0].update_gain, pair.second.parameter_update_decrease) <= RTOL


def test_first_order_gain(pair: Pair) -> None:
    assert rel(pair.report.sites[0].first_order_gain, pair.second.first_order_improvement) <= RTOL


def test_optimal_update_and_new_channels(pair: Pair) -> None:
    """gromo subtracts its delta (growenv adds its update); channels are compared through
    the sign-free sum over k of omega_k (x) alpha_k."""
    site = pair.report.sites[0]
    delta = pair.second.optimal_delta_layer
    assert rel(-site.update_weight, delta.weight) <= RTOL
    cand = site.candidate()
    ext_in = pair.first.extended_output_layer
    ext_out = pair.second.extended_input_layer
    alpha = torch.cat([cand.in_weight.flatten(1), cand.in_bias[:, None]], 1)
    g_alpha = torch.cat([ext_in.weight.flatten(1), ext_in.bias[:, None]], 1)
    ours = torch.einsum("okij,ka->oija", cand.out_weight, alpha)
    ref = torch.einsum("okij,ka->oija", ext_out.weight, g_alpha)
    assert rel(ours, ref) <= RTOL
