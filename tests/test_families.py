"""The net-family registry: lookup, dispatch of the public verbs, options, building, costs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import growenv
from growenv.data.tasks import Split, Task
from growenv.env.config import EnvConfig
from growenv.nets import dag
from growenv.nets.conv.growth import (
    conv_amplitude_search,
    conv_apply_growth,
    conv_bottleneck,
    conv_extended_forward,
)
from growenv.nets.conv.net import GrowingConvNet
from growenv.nets.conv.statistics import conv_statistics_macs
from growenv.nets.dag import costs as dag_costs
from growenv.nets.dag.net import GrowingDAG
from growenv.nets.family import EXPANSIONS, NEEDS_IMAGES, SITES, STACKABLE, NetFamily
from growenv.nets.mlp.growth import mlp_amplitude_search, mlp_apply_growth, mlp_extended_forward
from growenv.nets.mlp.net import GrowingMLP
from growenv.nets.mlp.report import mlp_bottleneck
from growenv.nets.registry import FAMILIES, family_of, get_family

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def mlp_case():
    gen = torch.Generator().manual_seed(0)
    net = GrowingMLP(5, [3, 2], 4, generator=gen)
    x = torch.randn(40, 5, generator=gen)
    y = torch.randn(40, 4, generator=gen)
    return net, x, y, {}


def conv_case():
    gen = torch.Generator().manual_seed(1)
    net = GrowingConvNet(
        3, [2, 3], 4, stride=[1, 2], pool=[None, "avg"], image_size=8, generator=gen
    )
    x = torch.randn(12, 3, 8, 8, generator=gen)
    y = torch.randn(12, 4, generator=gen)
    return net, x, y, {"kernel": "restricted"}


OWN = {
    "mlp": (mlp_bottleneck, mlp_extended_forward, mlp_amplitude_search, mlp_apply_growth),
    "conv": (conv_bottleneck, conv_extended_forward, conv_amplitude_search, conv_apply_growth),
}
CASES = {"mlp": mlp_case, "conv": conv_case}


# ------------------------------------------------------------------------------- registry
def test_registry_names_classes_and_capabilities():
    assert set(FAMILIES) == {"mlp", "conv", "dag"}
    for name, family in FAMILIES.items():
        assert isinstance(family, NetFamily)
        assert family.name == name and family.net_class.family == name
        assert get_family(name) is family
    assert STACKABLE in get_family("mlp").capabilities
    assert NEEDS_IMAGES not in get_family("mlp").capabilities
    assert NEEDS_IMAGES in get_family("conv").capabilities
    assert STACKABLE not in get_family("conv").capabilities
    assert SITES in get_family("mlp").capabilities and SITES in get_family("conv").capabilities
    assert (get_family("mlp").min_width, get_family("conv").min_width) == (0, 1)
    dag = get_family("dag")
    assert dag.net_class is growenv.GrowingDAG and dag.capabilities == frozenset({EXPANSIONS})
    assert SITES not in dag.capabilities
    assert dag.validate_options() == {"neuron_fit": "tiny", "start_graph": "empty"}
    with pytest.raises(ValueError, match=r"^kernel: the 'dag' family takes no such option"):
        dag.validate_options(kernel="full")
    with pytest.raises(ValueError, match=r"^start_graph: expected 'empty' or 'chain', got 'x'$"):
        dag.validate_options(start_graph="x")


def test_unknown_family_is_one_clear_line():
    with pytest.raises(ValueError, match=r"^net: expected 'mlp', 'conv' or 'dag', got 'resnet'$"):
        get_family("resnet")
    with pytest.raises(ValueError, match=r"got None"):
        get_family(None)


def test_family_of_nets_and_non_growing_nets():
    assert family_of(mlp_case()[0]) is FAMILIES["mlp"]
    assert family_of(conv_case()[0]) is FAMILIES["conv"]
    seq = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
    for verb in (lambda: growenv.bottleneck(seq, torch.zeros(2, 3), torch.zeros(2, 1)),
                 lambda: family_of(seq)):  # fmt: skip
        with pytest.raises(TypeError) as err:
            verb()
        message = str(err.value)
        assert "\n" not in message and message.endswith("got Sequential")
        assert "GrowingMLP.from_sequential" in message
        assert "GrowingConvNet.from_sequential" in message
        assert "GrowingDAG.from_sequential" in message


# ------------------------------------------------------------------------------- dispatch
def _same(a, b) -> None:
    assert torch.equal(a, b), (a, b)


@pytest.mark.parametrize("name", ["mlp", "conv"])
def test_public_verbs_equal_the_family_functions_bitwise(name):
    net, x, y, options = CASES[name]()
    own_bottleneck, own_preview, own_search, own_apply = OWN[name]
    public = growenv.bottleneck(net, x, y, **options)
    own = own_bottleneck(net, x, y, "mse", **options)
    _same(public.loss, own.loss)
    for a, b in zip(public.sites, own.sites, strict=True):
        for field in ("eigenvalues", "update_gain", "bottleneck", "first_order_gain"):
            _same(getattr(a, field), getattr(b, field))
    candidate = public.sites[0].candidate(2)
    gammas = torch.tensor([0.0, 0.3, 1.0])
    _same(
        growenv.extended_forward(net, candidate, x, gammas), own_preview(net, candidate, x, gammas)
    )
    _same(growenv.extended_forward(net, candidate, x, 0.5), own_preview(net, candidate, x, 0.5))
    a, b = growenv.amplitude_search(net, candidate, x, y), own_search(net, candidate, x, y)
    _same(a.gamma, b.gamma)
    _same(a.losses, b.losses)
    grown_public, grown_own = copy.deepcopy(net), copy.deepcopy(net)
    growenv.apply_growth(grown_public, candidate, a.gamma)
    own_apply(grown_own, candidate, a.gamma)
    for p, q in zip(grown_public.parameters(), grown_own.parameters(), strict=True):
        _same(p, q)
    # and the grown net computes the preview it promised
    torch.testing.assert_close(grown_public(x), own_preview(net, candidate, x, float(a.gamma)))


def dag_case() -> tuple[GrowingDAG, torch.Tensor, torch.Tensor]:
    """in -> a -> out with a skip in -> out and a node b without out-edges (float64)."""
    gen = torch.Generator().manual_seed(3)
    net = GrowingDAG(
        4,
        3,
        nodes={"a": 5, "b": 2},
        edges=[("in", "a"), ("a", "out"), ("in", "out"), ("in", "b")],
        dtype=torch.float64,
        generator=gen,
    )
    x = torch.randn(60, 4, generator=gen, dtype=torch.float64)
    y = torch.randn(60, 3, generator=gen, dtype=torch.float64)
    return net, x, y


def test_dag_is_a_registered_family_and_the_verbs_dispatch_to_it_bitwise():
    net, x, y = dag_case()
    assert family_of(net) is get_family("dag")
    public = growenv.bottleneck(net, x, y, loss="mse")
    own = dag.bottleneck(net, x, y, "mse")
    assert isinstance(public, dag.DagReport)
    _same(public.loss, own.loss)
    for name in own.nodes:
        _same(public.nodes[name].bottleneck, own.nodes[name].bottleneck)
        _same(public.nodes[name].update_gain, own.nodes[name].update_gain)
    assert [e.key for e in public.expansions] == [e.key for e in own.expansions]
    for a, b in zip(public.expansions, own.expansions, strict=True):
        for field in ("eigenvalues", "update_gain", "first_order_gain"):
            _same(getattr(a, field), getattr(b, field))
    gammas = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    for key in (("edge", "a", "b"), ("node", "in", "out"), ("widen", "a", None)):
        candidate = public.expansion(*key).candidate(2)
        _same(
            growenv.extended_forward(net, candidate, x, gammas),
            dag.extended_forward(net, x, candidate, gammas),
        )
        _same(
            growenv.extended_forward(net, candidate, x, 0.5),
            dag.extended_forward(net, x, candidate, 0.5),
        )
        a, b = (
            growenv.amplitude_search(net, candidate, x, y),
            dag.amplitude_search(net, candidate, x, y),
        )
        _same(a.gamma, b.gamma)
        _same(a.losses, b.losses)
        grown_public, grown_own = copy.deepcopy(net), copy.deepcopy(net)
        growenv.apply_growth(grown_public, candidate, a.gamma)
        dag.apply_growth(grown_own, candidate, a.gamma)
        assert grown_public.nodes == grown_own.nodes and grown_public.edges == grown_own.edges
        for p, q in zip(grown_public.parameters(), grown_own.parameters(), strict=True):
            _same(p, q)
        torch.testing.assert_close(
            grown_public(x), dag.extended_forward(net, x, candidate, float(a.gamma))
        )


def test_the_env_takes_the_dag_family_and_names_the_drivable_ones():
    assert EnvConfig(net="dag").num_slots == 2 * 9**2 - 8
    assert EnvConfig().num_slots == EnvConfig().max_sites  # sites: unchanged
    with pytest.raises(ValueError, match=r"^net: expected 'mlp', 'conv' or 'dag', got 'resnet'$"):
        EnvConfig(net="resnet")


def test_dag_build_and_search_macs():
    family = get_family("dag")
    net, x, y = dag_case()
    task = family.prepare_task(_image_task())
    empty = family.build(task, [])
    assert empty.edges == [] and list(empty.nodes) == ["in", "out"]
    chain = family.build(task, [2, 3], generator=torch.Generator().manual_seed(0))
    assert chain.edges == [("in", "h1"), ("h1", "h2"), ("h2", "out")]
    assert chain.hidden_widths == [2, 3]
    with pytest.raises(TypeError, match=r"no numbered sites.*DagCandidate"):
        family.search_macs(net, 0, 8, 10)
    cand = growenv.bottleneck(net, x, y).expansion("edge", "a", "b").candidate()
    # one plain forward and the candidate's preview per amplitude, per sample
    assert family.search_macs(net, cand, 8, 10) == 10 * (
        net.macs() + 8 * dag_costs.preview_macs(net, cand)
    )
    assert family.search_macs(net, [cand, cand], 8, 10) == 10 * (
        net.macs() + 16 * dag_costs.preview_macs(net, cand)
    )
    flat = family.prepare_task(_image_task())
    assert flat.input_shape == (3 * 8 * 6,) and flat.train.x.shape == (6, 144)


# -------------------------------------------------------------------------------- options
def test_validate_options():
    conv, mlp = get_family("conv"), get_family("mlp")
    assert conv.options == {"kernel": ("full", "restricted")} and dict(mlp.options) == {}
    assert conv.validate_options() == {"kernel": "full"}
    assert conv.validate_options(kernel="restricted") == {"kernel": "restricted"}
    assert mlp.validate_options() == {}
    with pytest.raises(ValueError, match=r"^kernel: expected 'full' or 'restricted', got 'x'$"):
        conv.validate_options(kernel="x")
    with pytest.raises(ValueError, match=r"^kernel: expected 'full' or 'restricted', got \[\]$"):
        conv.validate_options(kernel=[])
    with pytest.raises(ValueError, match=r"^kernel: the 'mlp' family takes no such option"):
        mlp.validate_options(kernel="full")
    net, x, y, _ = conv_case()
    for call in (
        lambda: growenv.bottleneck(net, x, y, kernel="1x1"),
        lambda: conv_statistics_macs(net, 4, "1x1"),
        lambda: conv.statistics_macs(net, 4, kernel="1x1"),
    ):
        with pytest.raises(
            ValueError, match=r"^kernel: expected 'full' or 'restricted', got '1x1'$"
        ):
            call()


# ------------------------------------------------------------------------------- building
def _image_task(n: int = 6, shape=(3, 8, 6), out: int = 5) -> Task:
    gen = torch.Generator().manual_seed(2)
    splits = {
        k: Split(torch.randn(n, *shape, generator=gen), torch.randn(n, out, generator=gen))
        for k in ("train", "stats", "val", "test")
    }
    return Task("images", "mse", shape, out, **splits)


def test_prepare_task_flattens_or_restores_images():
    task = _image_task()
    flat = get_family("mlp").prepare_task(task)
    assert flat.input_shape == (3 * 8 * 6,) and flat.train.x.shape == (6, 144)
    back = get_family("conv").prepare_task(flat)
    assert back.input_shape == (3, 8, 6)
    assert torch.equal(back.train.x, task.train.x)
    vector = Task("vec", "mse", (4,), 1, *[Split(torch.zeros(2, 4), torch.zeros(2, 1))] * 4)
    with pytest.raises(ValueError, match="'conv' needs image inputs"):
        get_family("conv").prepare_task(vector)


def test_build_is_the_envs_architecture():
    task = _image_task()
    conv = get_family("conv").build(
        task, [2, 3, 4], activation="relu", generator=torch.Generator().manual_seed(5),
        dtype=torch.float64,
    )  # fmt: skip
    expected = GrowingConvNet(
        3, [2, 3, 4], 5, stride=[1, 2, 2], activation="relu", image_size=(8, 6),
        generator=torch.Generator().manual_seed(5),
    ).double()  # fmt: skip
    assert [s.stride for s in conv.stages] == [1, 2, 2] and conv.image_size == (8, 6)
    assert conv.dtype == torch.float64
    for p, q in zip(conv.parameters(), expected.parameters(), strict=True):
        _same(p, q)
    flat = get_family("mlp").prepare_task(task)
    mlp = get_family("mlp").build(flat, [0, 3], generator=torch.Generator().manual_seed(6))
    expected = GrowingMLP(144, [0, 3], 5, generator=torch.Generator().manual_seed(6))
    assert mlp.layer_sizes == [144, 0, 3, 5]
    for p, q in zip(mlp.parameters(), expected.parameters(), strict=True):
        _same(p, q)


def test_env_builds_through_the_family():
    env = growenv.GrowthEnv(task="teacher_student", hidden_layers=2, start_width=0)
    env.episode_task(0)
    net = env.build_net([2, 1], torch.Generator().manual_seed(0))
    assert family_of(net) is get_family("mlp") and net.hidden_widths == [2, 1]


# ------------------------------------------------------------------------------ cost model
def _hook_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds per sample of the Linear and Conv2d layers, counted from their outputs."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            per_output = module.in_channels * kh * kw
            total += output[0].numel() * per_output  # channels x positions of one sample
        else:
            total += module.in_features * module.out_features

    hooks = [
        m.register_forward_hook(count)
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.Conv2d))
    ]
    with torch.no_grad():
        model(x[:1])
    for h in hooks:
        h.remove()
    return total


def test_mlp_cost_model_equals_explicit_sums():
    family = get_family("mlp")
    net, x, _, _ = mlp_case()
    sizes = net.layer_sizes  # [5, 3, 2, 4]
    fwd = sum(sizes[i] * sizes[i + 1] for i in range(len(sizes) - 1))
    assert fwd == _hook_macs(net.to_sequential(), x) == 5 * 3 + 3 * 2 + 2 * 4
    assert family.evaluate_macs(net, 7) == fwd * 7
    assert family.training_macs(net, 7) == 3 * fwd * 7
    assert net.num_parameters() == sum(p.numel() for p in net.to_sequential().parameters())
    # search at site 0 over G amplitudes: layer 0 once, layers 1 and 2 once per amplitude
    assert family.search_macs(net, 0, 4, 3) == 3 * (5 * 3 + 4 * (3 * 2 + 2 * 4))
    assert family.search_macs(net, 1, 4, 3) == 3 * (5 * 3 + 3 * 2 + 4 * (2 * 4))
    # statistics: 2 forward passes; per layer d(d + o) for S and M; per site d_j (d_j+1 + o_j+1)
    d = [6, 4, 3]
    o = [3, 2, 4]
    products = sum(d[i] * (d[i] + o[i]) for i in range(3)) + sum(
        d[j] * (d[j + 1] + o[j + 1]) for j in range(2)
    )
    solve = sum(10 * d[i] ** 3 + 2 * d[i] ** 2 * o[i] for i in range(3)) + sum(
        10 * d[j] ** 2 * o[j + 1] for j in range(2)
    )
    assert family.statistics_macs(net, 5) == (2 * fwd + products) * 5 + solve
    # what growth adds, measured on the grown net
    report = growenv.bottleneck(net, x, mlp_case()[2])
    cand = report.sites[1].candidate(2)
    grown = copy.deepcopy(net)
    growenv.apply_growth(grown, cand, 0.5)
    assert grown.num_parameters() - net.num_parameters() == net.added_parameters(1, 2)
    assert cand.added_parameters() == net.added_parameters(1, 2)
    assert _hook_macs(grown.to_sequential(), x) - fwd == net.added_flops(1, 2)


def test_conv_cost_model_equals_counted_forward():
    family = get_family("conv")
    net, x, y, _ = conv_case()
    fwd = _hook_macs(net.to_sequential(), x)
    # by hand: conv0 3->2, 3x3, 8x8 outputs; conv1 2->3, 3x3, stride 2 -> 4x4; head 3->4
    assert fwd == 2 * 8 * 8 * 3 * 9 + 3 * 4 * 4 * 2 * 9 + 3 * 4
    assert family.evaluate_macs(net, 5) == fwd * 5
    assert family.training_macs(net, 5) == 3 * fwd * 5
    assert family.search_macs(net, 1, 32, 5) == 32 * fwd * 5
    for kernel in ("full", "restricted"):
        assert family.statistics_macs(net, 5, kernel=kernel) == conv_statistics_macs(net, 5, kernel)
    assert family.statistics_macs(net, 5) == conv_statistics_macs(net, 5, "full")
    for site in (0, 1):
        cand = growenv.bottleneck(net, x, y).sites[site].candidate(2)
        grown = copy.deepcopy(net)
        growenv.apply_growth(grown, cand, 0.5)
        assert grown.num_parameters() - net.num_parameters() == net.added_parameters(site, 2)
        assert cand.added_parameters() == net.added_parameters(site, 2)
        assert _hook_macs(grown.to_sequential(), x) - fwd == net.added_flops(site, 2)


def test_dag_cost_model_equals_explicit_counts():
    family = get_family("dag")
    net, x, y = dag_case()
    # edges in->a (4x5), a->out (5x3), in->out (4x3), in->b (4x2)
    fwd = 4 * 5 + 5 * 3 + 4 * 3 + 4 * 2
    assert fwd == net.macs() == sum(w.numel() for w in net.weights)
    assert family.evaluate_macs(net, 7) == fwd * 7
    assert family.training_macs(net, 7) == 3 * fwd * 7
    # statistics: forward, backward through a->out only (the input takes no gradient), and
    # X^T X, X^T G with X = [in, a, b, 1] (D = 4 + 5 + 2 + 1), G = [a, b, out] (O = 5 + 2 + 3)
    d, o = 12, 10
    assert family.statistics_macs(net, 5) == (fwd + 5 * 3 + d * (d + o)) * 5
    assert net(x).shape == (60, 3)
    # growth: the grown net's count is the old one plus what the candidate adds
    report = growenv.bottleneck(net, x, y)
    for key in (("edge", "a", "b"), ("node", "in", "out"), ("widen", "a", None)):
        cand = report.expansion(*key).candidate(2)
        grown = copy.deepcopy(net)
        growenv.apply_growth(grown, cand, 0.5)
        assert family.evaluate_macs(grown, 1) - fwd == cand.added_macs()


# ------------------------------------------------------------------------------ structure
