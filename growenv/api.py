"""The public growth verbs, for every net family.

:func:`bottleneck`, :func:`extended_forward`, :func:`amplitude_search` and
:func:`apply_growth` look the net's family up (:func:`~growenv.nets.registry.family_of`) and
call its implementation; a net that is not a growing net gets a one-line ``TypeError``
naming the converters (``GrowingMLP.from_sequential``, ``GrowingConvNet.from_sequential``).

The verbs check what the families take on trust (one host check each, here only: the
environment calls the families directly with data it has checked): class labels in range,
finite data and targets for the search, and amplitudes ``gamma`` finite and ``>= 0``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from growenv import tiny
from growenv.amplitude import AmplitudeResult
from growenv.errors import UserError
from growenv.losses import PerSampleLoss
from growenv.nets.base import GrowingNet
from growenv.nets.candidate import GrowthCandidate
from growenv.nets.dag.expansions import DagReport
from growenv.nets.family import EXPANSIONS
from growenv.nets.registry import family_of
from growenv.nets.report import BottleneckReport
from growenv.validation import class_labels, finite_values, real

__all__ = ["amplitude_search", "apply_growth", "bottleneck", "extended_forward"]


def _check_labels(net: GrowingNet, loss: str | PerSampleLoss, y: object, name: str = "y") -> None:
    """Class labels in ``[0, net.out_features)`` for ``loss="cross_entropy"``."""
    if isinstance(loss, str) and loss == "cross_entropy" and isinstance(y, torch.Tensor):
        class_labels(name, y, net.out_features)


def _check_gamma(gamma: float | torch.Tensor) -> None:
    """Amplitudes are finite and ``>= 0`` (the grid of :func:`~growenv.amplitude.default_gammas`
    spans ``[0, 10]``; any finite amplitude ``>= 0`` is valid)."""
    if isinstance(gamma, torch.Tensor) and gamma.numel() != 1:
        finite_values("gamma", gamma, minimum=0)
    else:
        value = gamma.item() if isinstance(gamma, torch.Tensor) else gamma
        real("gamma", value, 0, finite=True)


def bottleneck(
    net: GrowingNet,
    x: torch.Tensor | Iterable,
    y: torch.Tensor | None = None,
    loss: str | PerSampleLoss = "mse",
    *,
    batch_size: int | None = None,
    rtol: float | None = None,
    atol: float = tiny.DEFAULT_ATOL,
    statistical_threshold: float = tiny.DEFAULT_STATISTICAL_THRESHOLD,
    solve_dtype: torch.dtype = torch.float64,
    input_factors: tiny.CovarianceFactors | None = None,
    kernel: str = "full",
    raw_correlation: bool = False,
    neuron_fit: str = "tiny",
    neurons: int | None = None,
) -> BottleneckReport | DagReport:
    """Measure the expressivity bottleneck of every site (DAGs: every node and expansion)
    of ``net``.

    One forward+backward pass over the data (streamed in ``batch_size`` chunks, or an
    iterable of ``(x, y)`` batches with ``y=None``) gives the statistics; one batched solve
    gives, per site, the eigenvalues, the best update of the next layer and its gain, the
    bottleneck and the first-order gain, and candidate neurons on request
    (``report.sites[j].candidate(K)``). For a :class:`~growenv.nets.dag.net.GrowingDAG` the
    report is a :class:`~growenv.nets.dag.expansions.DagReport`: per-node bottlenecks
    (``report.nodes``) and every new edge, new node and widening (``report.expansions``,
    each with ``.kind``, ``.source``, ``.target``, ``.eigenvalues``, ``.estimated_gain``
    and ``.candidate(K)``).

    Parameters
    ----------
    net
        A :class:`~growenv.nets.mlp.net.GrowingMLP` or
        :class:`~growenv.nets.conv.net.GrowingConvNet` (any registered family).
    x, y
        Inputs and targets, or an iterable of ``(x, y)`` batches and ``y=None``.
    loss
        ``"mse"`` (``l_i = ||f(x_i) - y_i||^2``), ``"cross_entropy"`` (class labels), or a
        callable returning per-sample losses.
    batch_size
        Stream tensors in chunks of this many samples (``None``: one batch).
    rtol, atol
        Eigenvalues of ``S`` below ``max(atol, rtol * largest)`` are treated as zero.
        ``rtol=None`` picks it from the statistics' precision (1e-6 for float32, 1e-12 for
        float64).
    statistical_threshold
        ``lambda_k`` below it are not counted as significant (gromo's default, 1e-3).
    solve_dtype
        Precision of the factorisations (float64 by default; results come back in the
        net's dtype).
    input_factors
        MLPs: factors of the input covariance from an earlier report on the same data
        (``report.input_factors``), which skip the input layer's ``eigh``. Ignored for conv.
    kernel
        Conv nets: ``"full"`` or ``"restricted"`` new channels. Ignored for MLPs.
    raw_correlation
        Conv nets: keep every site's raw correlation ``P``. MLP reports always keep it.
    neuron_fit, neurons
        DAGs: new neurons in TINY's closed form (``"tiny"``) or ``neurons`` of them fitted
        with the activation (``"nonlinear"``, docs/math.md). Ignored for MLPs and conv nets.

    Returns
    -------
    BottleneckReport or DagReport
        ``report.sites[j]`` for site ``j``; for DAGs ``report.nodes`` and
        ``report.expansions``.

    Raises
    ------
    TypeError
        If ``net`` is not a growing net.
    ValueError
        For class labels outside ``[0, net.out_features)``, NaN or inf in the data or in the
        net (a diverged net is named as such), and other bad arguments.
    """
    family = family_of(net)
    _check_labels(net, loss, y)
    dag = EXPANSIONS in family.capabilities
    try:
        return family.bottleneck(
            net,
            x,
            y,
            loss=loss,
            batch_size=batch_size,
            rtol=rtol,
            atol=atol,
            statistical_threshold=statistical_threshold,
            solve_dtype=solve_dtype,
            input_factors=input_factors,
            kernel=kernel,
            raw_correlation=raw_correlation,
            **({"neuron_fit": neuron_fit, "neurons": neurons} if dag else {}),
        )
    except IndexError as err:  # streamed batches: labels are checked by torch's loss
        if loss != "cross_entropy" or "out of bounds" not in str(err):
            raise
        raise UserError(
            f"y: expected class labels in [0, {net.out_features - 1}] for "
            f"{net.out_features} classes, got a label out of that range ({err})"
        ) from None


def extended_forward(
    net: GrowingNet,
    candidate: GrowthCandidate,
    x: torch.Tensor,
    gamma: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """Preview: the net's output with ``candidate`` applied, without changing the net.

    Parameters
    ----------
    net, candidate
        A growing net and a candidate of one of its sites (``report.sites[j].candidate()``).
    x
        Inputs.
    gamma
        A float (returns ``(n, out)``) or a 1-D tensor of G amplitudes (returns
        ``(G, n, out)``), finite and ``>= 0``.

    Raises
    ------
    ValueError
        For a NaN, infinite or negative ``gamma``.
    """
    family = family_of(net)
    _check_gamma(gamma)
    return family.extended_forward(net, x, candidate, gamma)


def amplitude_search(
    net: GrowingNet,
    candidate: GrowthCandidate,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str | PerSampleLoss = "mse",
    gammas: torch.Tensor | None = None,
) -> AmplitudeResult:
    """The amplitude ``gamma`` that minimises the real mean loss on ``(x, y)``.

    Every amplitude is evaluated at once (the forward up to the grown site is shared);
    ``gamma = 0`` is always evaluated, so ``loss_drop >= 0``.

    Parameters
    ----------
    net, candidate
        A growing net and a candidate of one of its sites.
    x, y
        Inputs and targets (finite; class labels in ``[0, net.out_features)`` for
        ``loss="cross_entropy"``).
    loss
        As for :func:`bottleneck`.
    gammas
        Amplitudes to try (finite, ``>= 0``); default
        :func:`~growenv.amplitude.default_gammas`.

    Raises
    ------
    ValueError
        For NaN or inf in ``x`` or ``y``, labels out of range, bad ``gammas``, or a net whose
        loss at ``gamma = 0`` is NaN or inf on finite data (its weights diverged).
    """
    family = family_of(net)
    if isinstance(x, torch.Tensor):
        finite_values("x", x)
    if isinstance(y, torch.Tensor):
        finite_values("y", y)
    _check_labels(net, loss, y)
    result = family.amplitude_search(net, candidate, x, y, loss=loss, gammas=gammas)
    if not bool(torch.isfinite(result.base_loss)):
        raise UserError(
            f"net: expected a net with a finite loss on finite data, got a loss of "
            f"{float(result.base_loss)} at gamma = 0 (its weights or outputs are NaN or inf: "
            "did training diverge? lower lr)"
        )
    return result


def apply_growth(
    net: GrowingNet,
    candidate: GrowthCandidate,
    gamma: float | torch.Tensor = 1.0,
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Apply ``candidate`` to ``net`` in place at amplitude ``gamma``.

    The result equals :func:`extended_forward` at the same ``gamma``. Optimizer state of the
    grown parameters is kept (zero-padded for the new entries).

    Parameters
    ----------
    net, candidate
        A growing net and a candidate of one of its sites.
    gamma
        The amplitude, finite and ``>= 0`` (e.g. ``amplitude_search(...).gamma``;
        ``gamma = 0`` adds units that leave the function unchanged).
    optimizer
        The net's optimizer, whose state is grown with the parameters.

    Raises
    ------
    ValueError
        For a NaN, infinite or negative ``gamma`` (the net is left unchanged).
    """
    family = family_of(net)
    _check_gamma(gamma)
    family.apply_growth(net, candidate, gamma, optimizer)
