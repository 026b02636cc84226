"""Argument validators: the project's one way to reject bad input.

Every validator returns the value in its canonical type (``int``, ``float``, ``bool`` or the
allowed value itself) or raises ``ValueError`` with one line in the project's style::

    name: expected <what>, got <value>

so that a wrong keyword anywhere (env config, tasks, policies, CLIs) reads the same way.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

__all__ = ["boolean", "choice", "integer", "real"]


def _bounds(minimum: float | None, maximum: float | None, exclusive: bool) -> str:
    lo, hi = (">", "<") if exclusive else (">=", "<=")
    if minimum is not None and maximum is not None:
        left, right = ("(", ")") if exclusive else ("[", "]")
        return f" in {left}{minimum}, {maximum}{right}"
    if minimum is not None:
        return f" {lo} {minimum}"
    if maximum is not None:
        return f" {hi} {maximum}"
    return ""


def integer(
    name: str,
    value: Any,
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    allow_none: bool = False,
) -> int | None:
    """``value`` as an ``int`` within ``[minimum, maximum]`` (bounds optional).

    Parameters
    ----------
    name
        The argument's name, as the caller spells it (it starts the error message).
    value
        The value to check; ``bool`` is rejected (it is an ``int`` to Python, not to users).
    minimum, maximum
        Inclusive bounds, or ``None`` for none.
    allow_none
        Accept ``None`` (returned as is).

    Raises
    ------
    ValueError
        ``"name: expected an int >= minimum, got value"``.
    """
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        none = " or None" if allow_none else ""
        raise ValueError(
            f"{name}: expected an int{_bounds(minimum, maximum, False)}{none}, got {value!r}"
        )
    return int(value)


def real(
    name: str,
    value: Any,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    allow_none: bool = False,
    exclusive: bool = False,
) -> float | None:
    """``value`` as a finite-or-infinite ``float`` within the bounds (NaN is rejected).

    Parameters
    ----------
    name
        The argument's name (it starts the error message).
    value
        Any real number (``int``, ``float``, numpy scalars); ``bool`` is rejected.
    minimum, maximum
        Bounds, or ``None`` for none; inclusive unless ``exclusive``.
    allow_none
        Accept ``None`` (returned as is).
    exclusive
        Make both bounds strict, e.g. a fraction in ``(0, 1)``.

    Raises
    ------
    ValueError
        ``"name: expected a number >= minimum, got value"``.
    """
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value
    if ok and minimum is not None:
        ok = value > minimum if exclusive else value >= minimum
    if ok and maximum is not None:
        ok = value < maximum if exclusive else value <= maximum
    if not ok:
        none = " or None" if allow_none else ""
        raise ValueError(
            f"{name}: expected a number{_bounds(minimum, maximum, exclusive)}{none}, got {value!r}"
        )
    return float(value)


def choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """``value`` if it is one of ``allowed``.

    Raises
    ------
    ValueError
        ``"name: expected one of 'a', 'b', got value"``.
    """
    allowed = tuple(allowed)
    try:
        ok = value in allowed
    except TypeError:  # unhashable or incomparable values are simply not allowed
        ok = False
    if not ok:
        listed = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name}: expected one of {listed}, got {value!r}")
    return value


def boolean(name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False`` (numpy booleans too; not 0 or 1).

    Raises
    ------
    ValueError
        ``"name: expected True or False, got value"``.
    """
    if type(value).__name__ not in ("bool", "bool_"):
        raise ValueError(f"{name}: expected True or False, got {value!r}")
    return bool(value)
