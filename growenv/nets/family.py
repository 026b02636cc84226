"""The net-family protocol: what the environment and the public verbs need from a family.

A *family* (``"mlp"``, ``"conv"``, ...) is one kind of growing network together with its
statistics, TINY solve, candidates, preview, amplitude search, growth and cost model. Each
family lives in its own subpackage (``growenv/nets/<name>/``) with a ``family.py`` that
defines one object satisfying :class:`NetFamily`; :mod:`growenv.nets.registry` lists them.
Nothing outside a family's subpackage tests which family a net belongs to: it looks the
family up (:func:`~growenv.nets.registry.family_of`) and calls its members.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from growenv.amplitude import AmplitudeResult
    from growenv.data.tasks import Task
    from growenv.nets.base import GrowingNet
    from growenv.nets.candidate import GrowthCandidate
    from growenv.nets.report import BottleneckReport

#: Capability: the lockstep vector env can stack nets of this family into one batched model.
STACKABLE = "stackable"
#: Capability: the family's nets read images ``(n, C, H, W)``, not flat vectors.
NEEDS_IMAGES = "needs_images"
#: Capability: growth locations are numbered sites of a chain (site ``i`` is hidden layer or
#: stage ``i``), which is what :class:`~growenv.env.growth_env.GrowthEnv`'s actions ("grow
#: site ``i``") and the protocol's site-indexed members (:attr:`NetFamily.min_width`,
#: :meth:`NetFamily.build`, :meth:`NetFamily.search_macs`) assume. Only such families can be
#: driven by the env.
SITES = "sites"
#: Capability: growth locations are expansions of a DAG (new edge, new node, wider node) in
#: the fixed slots of ``growenv.nets.dag.slots``; the family gives ``num_slots(max_nodes)``.
#: The env drives families with :data:`SITES` or this one.
EXPANSIONS = "expansions"


def format_choices(allowed: tuple) -> str:
    """``'a'``, ``'a' or 'b'``, ``'a', 'b' or 'c'``: allowed values as an error names them."""
    names = [repr(a) for a in allowed]
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} or {names[-1]}"


def check_options(
    family: str, table: Mapping[str, tuple], options: Mapping[str, Any]
) -> dict[str, Any]:
    """Validate family-specific ``options`` against ``table`` (name -> allowed values).

    Returns every option of the table, the given value or the default (the first allowed
    value). Raises ``ValueError`` with one line naming the option: an unknown name
    (``"kernel: the 'mlp' family takes no such option (it takes none)"``) or a value not
    allowed (``"kernel: expected 'full' or 'restricted', got 'x'"``).
    """
    for name in options:
        if name not in table:
            takes = ", ".join(table) or "none"
            raise ValueError(
                f"{name}: the {family!r} family takes no such option (it takes {takes})"
            )
    out = {}
    for name, allowed in table.items():
        value = options.get(name, allowed[0])
        try:
            ok = value in allowed
        except TypeError:  # unhashable or incomparable: not allowed
            ok = False
        if not ok:
            raise ValueError(f"{name}: expected {format_choices(allowed)}, got {value!r}")
        out[name] = value
    return out


@runtime_checkable
class NetFamily(Protocol):
    """One family of growing networks: its net class, options, builder, verbs and costs.

    Attributes
    ----------
    name
        Registry name (``"mlp"``, ``"conv"``); equals ``net_class.family``.
    net_class
        The :class:`~growenv.nets.base.GrowingNet` subclass of this family.
    capabilities
        Flags such as :data:`STACKABLE` (the lockstep env can stack it),
        :data:`NEEDS_IMAGES` (inputs are images), :data:`SITES` (growth locations are
        numbered sites of a chain) and :data:`EXPANSIONS` (growth locations are DAG
        expansions in fixed slots); the env drives the families with one of the last two.
    options
        Family-specific options and their allowed values, the default first (conv:
        ``{"kernel": ("full", "restricted")}``; mlp: ``{}``).
    min_width
        Smallest width a site (dag: a hidden node) may have (mlp 0, conv 1, dag 0).
    """

    name: str
    net_class: type[GrowingNet]
    capabilities: frozenset[str]
    options: Mapping[str, tuple]
    min_width: int

    def validate_options(self, **options: Any) -> dict[str, Any]:
        """All of :attr:`options` with the given values checked, defaults filled in."""
        ...

    # -------------------------------------------------------------------- building
    def prepare_task(self, task: Task) -> Task:
        """The task with inputs in the shape this family's nets read."""
        ...

    def build(
        self,
        task: Task,
        widths: list[int],
        *,
        activation: Any,
        device: torch.device | str | None,
        generator: torch.Generator | None,
        dtype: torch.dtype = torch.float32,
    ) -> GrowingNet:
        """A fresh net for the (prepared) ``task`` with hidden ``widths``, as the env builds
        its episodes' nets (dag: the chain of ``widths``, ``[]`` the empty graph)."""
        ...

    # ----------------------------------------------------------------------- verbs
    def bottleneck(
        self, net: GrowingNet, x: Any, y: Any = None, *, loss: Any = "mse", **kw: Any
    ) -> BottleneckReport:
        """Statistics + TINY solve of every site (:func:`growenv.bottleneck`)."""
        ...

    def extended_forward(
        self, net: GrowingNet, x: torch.Tensor, candidate: GrowthCandidate, gamma: Any = 1.0
    ) -> torch.Tensor:
        """Output with ``candidate`` applied at ``gamma``, net unchanged."""
        ...

    def amplitude_search(
        self,
        net: GrowingNet,
        candidate: GrowthCandidate,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        loss: Any = "mse",
        gammas: torch.Tensor | None = None,
    ) -> AmplitudeResult:
        """The amplitude minimising the real loss on ``(x, y)``."""
        ...

    def apply_growth(
        self,
        net: GrowingNet,
        candidate: GrowthCandidate,
        gamma: Any = 1.0,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        """Grow ``net`` in place by ``candidate`` at ``gamma``."""
        ...

    # ------------------------------------------------------------------ cost model
    def training_macs(self, net: Any, samples: int) -> int:
        """Multiply-adds of training (forward + backward) on ``samples`` samples."""
        ...

    def statistics_macs(self, net: Any, samples: int, **options: Any) -> int:
        """Multiply-adds of one statistics pass over ``samples`` samples and the solve."""
        ...

    def search_macs(self, net: Any, site: int, num_gammas: int, samples: int) -> int:
        """Multiply-adds of the amplitude search at ``site`` over ``num_gammas`` amplitudes
        (dag: ``site`` is the searched candidate or candidates)."""
        ...

    def evaluate_macs(self, net: Any, samples: int) -> int:
        """Multiply-adds of one forward pass over ``samples`` samples."""
        ...
