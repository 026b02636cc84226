"""The MLP size model: parameters and multiply-adds (MACs) as pure functions of the layer
sizes ``[in, *hidden widths, out]``: the net's size, what growth adds, and the compute of
training, statistics, solve and search. :class:`~growenv.nets.mlp.net.GrowingMLP`, the
stacked (lockstep) MLPs and the env's accounting all use these functions."""

from __future__ import annotations

from collections.abc import Sequence


def forward_macs(layer_sizes: Sequence[int]) -> int:
    """Multiply-adds of one forward pass of one sample through linear layers."""
    return sum(a * b for a, b in zip(layer_sizes[:-1], layer_sizes[1:], strict=True))


def parameter_count(layer_sizes: Sequence[int]) -> int:
    """Weights and biases of an MLP with these layer sizes."""
    return sum((a + 1) * b for a, b in zip(layer_sizes[:-1], layer_sizes[1:], strict=True))


def added_parameters(layer_sizes: Sequence[int], site: int, num_neurons: int) -> int:
    """Parameters that ``num_neurons`` new neurons at hidden state ``site`` add: incoming
    weights and bias, outgoing weights."""
    return num_neurons * (layer_sizes[site] + 1 + layer_sizes[site + 2])


def added_macs(layer_sizes: Sequence[int], site: int, num_neurons: int) -> int:
    """Multiply-adds per sample that ``num_neurons`` new neurons at ``site`` add."""
    return num_neurons * (layer_sizes[site] + layer_sizes[site + 2])


def training_macs(layer_sizes: Sequence[int], samples: int) -> int:
    """Forward + backward (input and weight gradients) = 3x forward, per sample."""
    return 3 * forward_macs(layer_sizes) * samples


def statistics_macs(layer_sizes: Sequence[int], samples: int) -> int:
    """One statistics pass: forward, backward to pre-activations, and the S, M, C, P products."""
    fwd = forward_macs(layer_sizes)
    dims = [d + 1 for d in layer_sizes[:-1]]  # layer inputs with the ones column
    outs = list(layer_sizes[1:])
    products = sum(d * (d + o) for d, o in zip(dims, outs, strict=True))
    products += sum(dims[j] * (dims[j + 1] + outs[j + 1]) for j in range(len(dims) - 1))
    return (2 * fwd + products) * samples


def solve_macs(layer_sizes: Sequence[int]) -> int:
    """Rough cost of the factorisations: ~10 d^3 per eigh and per SVD, plus the products."""
    dims = [d + 1 for d in layer_sizes[:-1]]
    outs = list(layer_sizes[1:])
    total = sum(10 * d**3 + 2 * d * d * o for d, o in zip(dims, outs, strict=True))
    total += sum(10 * dims[j] * dims[j] * outs[j + 1] for j in range(len(dims) - 1))
    return total


def amplitude_macs(layer_sizes: Sequence[int], site: int, num_gammas: int, samples: int) -> int:
    """Forward of the suffix after ``site`` for every candidate amplitude."""
    suffix = forward_macs(layer_sizes[site + 1 :])
    prefix = forward_macs(layer_sizes[: site + 2])
    return (prefix + num_gammas * suffix) * samples
