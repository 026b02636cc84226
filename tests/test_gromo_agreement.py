"""growenv's TINY statistics and solve against gromo, the TINY authors' reference code.

gromo and growenv get the same weights and data; gromo's statistics are computed with its
own protocol (``init_computation`` -> forward -> ``loss.backward()`` on
``MSELoss(reduction="sum")`` -> ``update_computation`` -> ``compute_optimal_updates``), which
matches growenv's per-sample ``||f(x_i) - y_i||^2`` with sample means.

Sign conventions: gromo's ``M`` uses ``+grad`` and its optimal delta is *subtracted*, growenv
uses ``v = -grad`` and adds its update, so gromo's delta is ``-`` growenv's. Eigenvalues and
gains are sign-free; each new neuron ``(alpha_k, omega_k)`` is defined up to a joint sign, so
neurons are compared through ``omega_k alpha_k^T``.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from torch import nn

import growenv

gromo_mlp = pytest.importorskip("gromo.containers.growing_mlp")
gromo_linear = pytest.importorskip("gromo.modules.linear_growing_module")

NUM_SAMPLES = 2000
RTOL = 1e-3
# (in, hidden widths, out): unequal widths are wired by hand like gromo's GrowingMLP does.
SHAPES = [(8, (6, 5), 3), (8, (6, 6), 3), (64, (32, 32, 32), 10)]


@dataclasses.dataclass
class Setup:
    """One net in both libraries, the data and both analyses."""

    layers: list  # gromo LinearGrowingModule, one per linear layer
    net: growenv.GrowingMLP
    x: torch.Tensor
    y: torch.Tensor
    gromo_loss: float
    report: growenv.BottleneckReport


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||`` (Frobenius), in float64."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def build_gromo(sizes: tuple[int, ...]) -> tuple[nn.Module, list]:
    """gromo's GrowingMLP for equal hidden widths, else the same wiring of its modules."""
    widths = sizes[1:-1]
    if len(set(widths)) == 1:
        model = gromo_mlp.GrowingMLP(
            sizes[0], sizes[-1], widths[0], len(widths), activation=nn.SELU()
        )
        return model, list(model.layers)
    layers: list = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        hidden = i < len(sizes) - 2
        layers.append(
            gromo_linear.LinearGrowingModule(
                fan_in,
                fan_out,
                post_layer_function=nn.SELU() if hidden else nn.Identity(),
                previous_module=layers[-1] if layers else None,
                name=f"Layer {i}",
            )
        )
    return nn.Sequential(*layers), layers


def make_setup(in_features: int, widths: tuple[int, ...], out_features: int, seed: int) -> Setup:
    torch.manual_seed(seed)
    sizes = (in_features, *widths, out_features)
    model, layers = build_gromo(sizes)
    net = growenv.GrowingMLP(in_features, list(widths), out_features, activation="selu")
    with torch.no_grad():
        for l, layer in enumerate(layers):
            net.weights[l].copy_(layer.weight)
            net.biases[l].copy_(layer.bias)
    x = torch.randn(NUM_SAMPLES, in_features)
    teacher = torch.randn(in_features, out_features) / in_features**0.5
    y = torch.tanh(2 * x @ teacher) + 0.1 * torch.randn(NUM_SAMPLES, out_features)

    # gromo's statistics protocol (its containers loop over layers the same way; layer 0
    # is included here so that its update gain can be compared too).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for layer in layers:
            layer.init_computation()
        model.zero_grad()
        loss = nn.MSELoss(reduction="sum")(model(x), y)
        loss.backward()
        for layer in layers:
            layer.update_computation()
        for layer in layers:
            layer.compute_optimal_updates()
    report = growenv.bottleneck(net, x, y, loss="mse")
    return Setup(layers, net, x, y, float(loss.detach()) / NUM_SAMPLES, report)


@pytest.fixture(
    scope="module", params=SHAPES, ids=lambda s: "-".join(map(str, [s[0], *s[1], s[2]]))
)
def setup(request: pytest.FixtureRequest) -> Setup:
    in_features, widths, out_features = request.param
    return make_setup(in_features, widths, out_features, seed=len(widths) + in_features)


def test_same_function_and_loss(setup: Setup) -> None:
    assert abs(float(setup.report.loss) - setup.gromo_loss) <= RTOL * setup.gromo_loss


def test_eigenvalues(setup: Setup) -> None:
    for j, site in enumerate(setup.report.sites):
        ref = setup.layers[j + 1].eigenvalues_extension
        k = min(ref.shape[0], site.eigenvalues.shape[0])
        assert k >= 1
        # gromo keeps only the significant eigenvalues: growenv counts the same ones
        assert int(site.num_significant) == ref.shape[0]
        err = (site.eigenvalues[:k] - ref[:k]).abs() / ref[:k].abs()
        assert float(err.max()) <= RTOL, (j, site.eigenvalues[:k], ref)


def test_update_gains(setup: Setup) -> None:
    gains = setup.report.layers.update_gain
    for l, layer in enumerate(setup.layers):
        ref = layer.parameter_update_decrease
        assert abs(float(gains[l] - ref)) <= RTOL * abs(float(ref)), l
    for j, site in enumerate(setup.report.sites):
        assert float(site.update_gain) == pytest.approx(float(gains[j + 1]))


def test_first_order_gains(setup: Setup) -> None:
    for j, site in enumerate(setup.report.sites):
        ref = float(setup.layers[j + 1].first_order_improvement)
        assert abs(float(site.first_order_gain) - ref) <= RTOL * abs(ref), j


def test_optimal_deltas(setup: Setup) -> None:
    layers = setup.report.layers
    for l, layer in enumerate(setup.layers):
        delta = layer.optimal_delta_layer
        assert rel_err(-layers.update_weight[l], delta.weight) <= RTOL, l
        assert rel_err(-layers.update_bias[l], delta.bias) <= RTOL, l


def neuron_products(alpha: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """``omega_k alpha_k^T`` for every neuron k: (K, out, in + 1), sign-free."""
    return omega.T.unsqueeze(-1) * alpha.unsqueeze(-2)


def test_new_neurons(setup: Setup) -> None:
    for j, site in enumerate(setup.report.sites):
        prev, nxt = setup.layers[j], setup.layers[j + 1]
        ext_in = prev.extended_output_layer
        g_alpha = torch.cat([ext_in.weight, ext_in.bias.unsqueeze(1)], 1)  # (K, in + 1)
        g_omega = nxt.extended_input_layer.weight  # (out, K)
        cand = site.candidate()
        alpha = torch.cat([cand.in_weight, cand.in_bias.unsqueeze(1)], 1)
        assert alpha.shape == g_alpha.shape and cand.out_weight.shape == g_omega.shape
        ours = neuron_products(alpha, cand.out_weight)
        ref = neuron_products(g_alpha, g_omega)
        # the sum over the kept neurons does not depend on how near-equal lambdas split
        assert rel_err(ours.sum(0), ref.sum(0)) <= RTOL, j
        # each neuron is well defined where its lambda is separated from its neighbours
        lam = site.eigenvalues.double()
        for k in range(ours.shape[0]):
            near = [lam[i] for i in (k - 1, k + 1) if 0 <= i < lam.shape[0]]
            gap = min(float((lam[k] - other).abs()) for other in near) if near else 1.0
            if gap > 0.05 * float(lam[k]):
                assert rel_err(ours[k], ref[k]) <= 10 * RTOL, (j, k, gap)


def aligned_candidate(setup: Setup, site: int) -> growenv.GrowthCandidate:
    """growenv's candidate with each neuron's sign flipped to match gromo's."""
    cand = setup.report.sites[site].candidate()
    g_alpha = setup.layers[site].extended_output_layer.weight
    signs = torch.sign((cand.in_weight * g_alpha).sum(1))
    return dataclasses.replace(
        cand,
        in_weight=cand.in_weight * signs.unsqueeze(1),
        in_bias=cand.in_bias * signs,
        out_weight=cand.out_weight * signs.unsqueeze(0),
    )


def gromo_extended_forward(setup: Setup, x: torch.Tensor) -> torch.Tensor:
    """gromo's extended forward through its modules (what its GrowingMLP does)."""
    x_ext = None
    for layer in setup.layers:
        x, x_ext = layer.extended_forward(x, x_ext)
    return x


def test_extended_forward_and_amplitude(setup: Setup) -> None:
    """Same grown function: gromo's scaling factor ``f`` is growenv's ``gamma = f**2``."""
    site = int(torch.stack([s.first_order_gain for s in setup.report.sites]).argmax())
    cand = aligned_candidate(setup, site)
    x = setup.x[:500]
    # switch off every other layer's update and extension (scaling 0; nothing is deleted)
    for l, layer in enumerate(setup.layers):
        if l != site + 1:
            layer.scaling_factor = 0.0
    with torch.no_grad():
        for f in (0.1, 0.5, 1.0):
            setup.layers[site + 1].scaling_factor = f
            ref = gromo_extended_forward(setup, x)
            ours = growenv.extended_forward(setup.net, cand, x, gamma=f**2)
            assert rel_err(ours, ref) <= RTOL, f
    result = growenv.amplitude_search(setup.net, cand, setup.x, setup.y, loss="mse")
    assert float(result.loss_drop) >= 0
    assert float(result.base_loss) == pytest.approx(setup.gromo_loss, rel=RTOL)
