"""The registry of net families: one line per family.

Adding a family is a new subpackage ``growenv/nets/<name>/`` (net, statistics, growth and a
``family.py`` with one :class:`~growenv.nets.family.NetFamily` object) plus one line in
:data:`FAMILIES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from growenv.nets.base import GrowingNet
from growenv.nets.conv.family import FAMILY as CONV
from growenv.nets.dag.family import FAMILY as DAG
from growenv.nets.family import NetFamily, format_choices
from growenv.nets.mlp.family import FAMILY as MLP

#: Every net family by name.
FAMILIES: Mapping[str, NetFamily] = MappingProxyType(
    {family.name: family for family in (MLP, CONV, DAG)}
)


def get_family(name: str) -> NetFamily:
    """The family registered as ``name``.

    Raises
    ------
    ValueError
        ``"net: expected 'mlp', 'conv' or 'dag', got 'x'"`` for an unknown name.
    """
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"net: expected {format_choices(tuple(FAMILIES))}, got {name!r}") from None


def family_of(net: object) -> NetFamily:
    """The family of ``net`` (a :class:`~growenv.nets.base.GrowingNet`, by its class's
    ``family`` attribute).

    Raises
    ------
    TypeError
        If ``net`` is not a growing net (e.g. a plain ``nn.Sequential``); the message names
        the converters (``GrowingMLP.from_sequential`` / ``GrowingConvNet.from_sequential``).
    """
    if not isinstance(net, GrowingNet):
        names = [f.net_class.__name__ for f in FAMILIES.values()]
        converters = " / ".join(
            f"{f.net_class.__name__}.from_sequential" for f in FAMILIES.values()
        )
        raise TypeError(
            f"net: expected a growing net ({', '.join(names)}; "
            f"convert a torch model with {converters}), got {type(net).__name__}"
        )
    return get_family(type(net).family)
