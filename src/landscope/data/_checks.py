"""Argument checks shared by the loaders: each raises ``DataError`` naming the loader and the value."""

from __future__ import annotations

import math

from landscope.checks import int_at_least
from landscope.errors import DataError


def check_int(loader: str, name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum`` (:func:`~landscope.checks.int_at_least`), as a ``DataError``."""
    return int_at_least(f"{loader}: {name}", value, minimum, error=DataError)


def check_count(loader: str, name: str, value: object, available: int, where: object) -> int:
    """A sample count to take from a file: ``None`` means all ``available``; more is an error."""
    if value is None:
        return available
    n = check_int(loader, name, value)
    if n > available:
        raise DataError(f"{loader}: {name}={n} exceeds the {available} samples in {where}")
    return n


def check_nonneg_float(loader: str, name: str, value: object) -> float:
    """``value`` as a finite float ``>= 0``."""
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
    ):
        raise DataError(f"{loader}: {name} must be a finite number >= 0, got {value!r}")
    return float(value)
