"""Argument validators: the project's one way to reject bad input.

Every validator returns the value in its canonical type (``int``, ``float``, ``bool`` or the
allowed value itself) or raises :class:`~growenv.errors.UserError` (a ``ValueError``: the
command line prints it as one line, exit status 2) in the project's style::

    name: expected <what>, got <value>

so that a wrong keyword anywhere (env config, tasks, policies, CLIs) reads the same way.
Tensor validators (:func:`finite_values`, :func:`class_labels`) make one host check each
and say where the first bad entry is rather than printing the tensor.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

import torch

from growenv.errors import UserError

__all__ = ["boolean", "choice", "class_labels", "finite_values", "integer", "real"]


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
    UserError
        ``"name: expected an int >= minimum, got value"``.
    """
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        none = " or None" if allow_none else ""
        raise UserError(
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
    finite: bool = False,
) -> float | None:
    """``value`` as a ``float`` within the bounds (NaN is rejected; inf too if ``finite``).

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
    finite
        Reject ``inf`` and ``-inf`` as well.

    Raises
    ------
    UserError
        ``"name: expected a number >= minimum, got value"`` (``"a finite number"`` if
        ``finite``).
    """
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value
    if ok and finite:
        ok = abs(value) != float("inf")
    if ok and minimum is not None:
        ok = value > minimum if exclusive else value >= minimum
    if ok and maximum is not None:
        ok = value < maximum if exclusive else value <= maximum
    if not ok:
        none = " or None" if allow_none else ""
        what = "a finite number" if finite else "a number"
        raise UserError(
            f"{name}: expected {what}{_bounds(minimum, maximum, exclusive)}{none}, got {value!r}"
        )
    return float(value)


def choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """``value`` if it is one of ``allowed``.

    Raises
    ------
    UserError
        ``"name: expected one of 'a', 'b', got value"``.
    """
    allowed = tuple(allowed)
    try:
        ok = value in allowed
    except TypeError:  # unhashable or incomparable values are simply not allowed
        ok = False
    if not ok:
        listed = ", ".join(repr(a) for a in allowed)
        raise UserError(f"{name}: expected one of {listed}, got {value!r}")
    return value


def boolean(name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False`` (numpy booleans too; not 0 or 1).

    Raises
    ------
    UserError
        ``"name: expected True or False, got value"``.
    """
    if type(value).__name__ not in ("bool", "bool_"):
        raise UserError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def finite_values(name: str, value: torch.Tensor, minimum: float | None = None) -> torch.Tensor:
    """``value`` if every entry is finite (and ``>= minimum``): one host check.

    Parameters
    ----------
    name
        The argument's name (it starts the error message).
    value
        A tensor (integer entries are always finite).
    minimum
        Inclusive lower bound of every entry, or ``None`` for none.

    Raises
    ------
    UserError
        ``"x: expected finite values (no NaN or inf), got nan at index (3, 2) (1 bad entry
        of 60)"``.
    """
    if value.is_floating_point():
        bad = ~torch.isfinite(value)
    else:
        bad = torch.zeros_like(value, dtype=torch.bool)
    if minimum is not None:
        bad = bad | (value < minimum)
    if not bool(bad.any()):
        return value
    flat = bad.reshape(-1)
    first = int(flat.nonzero()[0, 0])
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(first), value.shape))
    where = f" at index {index}" if value.ndim else ""
    count = int(flat.sum())
    of = f" ({count} bad {'entry' if count == 1 else 'entries'} of {flat.numel()})"
    bound = f" >= {minimum}" if minimum is not None else ""
    got = f"{value.reshape(-1)[first].item()!r}{where}{of if flat.numel() > 1 else ''}"
    raise UserError(f"{name}: expected finite values{bound} (no NaN or inf), got {got}")


def class_labels(name: str, value: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``value`` if it holds class labels in ``[0, num_classes)``: one host check.

    Raises
    ------
    UserError
        ``"y: expected class labels in [0, 9] for 10 classes, got labels in [0, 11]"``.
    """
    if value.numel() == 0 or value.is_floating_point():
        return value
    lo, hi = (int(v) for v in torch.stack([value.min(), value.max()]).cpu())
    if lo < 0 or hi >= num_classes:
        raise UserError(
            f"{name}: expected class labels in [0, {num_classes - 1}] for {num_classes} "
            f"classes, got labels in [{lo}, {hi}]"
        )
    return value
