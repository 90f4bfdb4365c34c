"""Argument checks shared across landscope: one home for each message a user may see.

A check repeated by hand drifts (one copy refuses ``True``, another accepts NumPy integers, a
third words its message differently); these keep the condition and the wording in one place.
This module sits at the bottom layer beside :mod:`landscope.errors` and imports nothing else of
landscope, so that any module may use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypeGuard, overload

import numpy as np
import torch

from landscope.errors import InputError, LandscopeError


@overload
def positive_int(
    name: str,
    value: object,
    *,
    what: str = ...,
    allow_none: Literal[False] = ...,
    error: type[LandscopeError] = ...,
) -> int: ...
@overload
def positive_int(
    name: str, value: object, *, what: str = ..., allow_none: bool, error: type[LandscopeError] = ...
) -> int | None: ...
def positive_int(
    name: str,
    value: object,
    *,
    what: str = "",
    allow_none: bool = False,
    error: type[LandscopeError] = InputError,
) -> int | None:
    """``value`` as an ``int`` ≥ 1, else ``error`` naming ``name`` and the value.

    Python and NumPy integers pass (a count read from an array is still a count) and come back as
    ``int``; ``bool`` is refused (``True`` is not a step count), and so are floats, even integral
    ones, since ``2.0`` steps is more likely a mix-up than a count. ``None`` passes only with
    ``allow_none``. ``what`` says in the message what the number counts; ``name`` may carry the
    caller's prefix (``"mlp: width"``).
    """
    if value is None and allow_none:
        return None
    if not _is_int(value) or value < 1:
        raise error(
            f"{name} must be a positive integer{' or None' if allow_none else ''}"
            f"{f' ({what})' if what else ''}, got {value!r}"
        )
    return int(value)


def int_at_least(name: str, value: object, minimum: int, *, error: type[LandscopeError] = InputError) -> int:
    """``value`` as an ``int`` ≥ ``minimum``, by :func:`positive_int`'s rules for what is an integer.

    The message says "a positive integer" for ``minimum`` 1, "a non-negative integer" for 0 and
    "an integer >= m" otherwise, so that every count and seed is refused in the same words.
    """
    if not _is_int(value) or value < minimum:
        kind = {1: "a positive integer", 0: "a non-negative integer"}.get(minimum, f"an integer >= {minimum}")
        raise error(f"{name} must be {kind}, got {value!r}")
    return int(value)


def _is_int(value: object) -> TypeGuard[int | np.integer]:
    """Python or NumPy integers, never ``bool`` (``True`` is not a count)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_tensor_pair(data: object) -> TypeGuard[Sequence[torch.Tensor]]:
    """Whether ``data`` is an ``(X, y)`` pair: a tuple or list of exactly two tensors.

    Nested parts (a tuple or dict as ``X``) are not a tensor pair; the curvature operators take
    those through :func:`landscope.curvature.batches.is_pair`.
    """
    return (
        isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)
    )


def tensor_pair(name: str, data: object) -> tuple[torch.Tensor, torch.Tensor]:
    """``data`` as ``(X, y)`` if it is a tuple or list of two tensors, else :class:`InputError`.

    Only the structure is checked; sample counts, devices and dtypes are the caller's, since what
    is acceptable there differs (an empty set, a single sample) from one caller to the next.
    """
    if not is_tensor_pair(data):
        raise InputError(f"{name} must be a tuple (X, y) of tensors, got {type(data).__name__}")
    X, y = data
    return X, y
