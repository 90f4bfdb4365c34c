"""The Hessian set: the data a curvature operator averages its loss over.

Two forms are accepted: a tuple ``(X, y)`` of tensors (split into chunks of ``chunk_size``), or a
re-iterable of ``(X, y)`` batches that yields the same batches on every pass (a list, or a
``DataLoader`` with ``shuffle=False``). Both are checked once, here, so that the operator can trust
them: a generator, a shuffling loader, NaN in the inputs or mismatched lengths fail with a message
that names the value.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from landscope.errors import DataError


@dataclass(frozen=True)
class Chunk:
    """One forward pass's worth of the Hessian set, with its weight ``n_b / N`` in the mean loss."""

    inputs: torch.Tensor
    targets: torch.Tensor
    weight: float


def _check_pair(batch: object, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise DataError(f"{where} must be a pair (X, y) of tensors, got {type(batch).__name__}"
                        + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""))
    X, y = batch
    for name, t in (("X", X), ("y", y)):
        if not isinstance(t, torch.Tensor):
            raise DataError(f"{where}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() == 0:
            raise DataError(f"{where}: {name} is a scalar; its first dimension must index samples")
    if len(X) != len(y):
        raise DataError(f"{where}: X has {len(X)} samples but y has {len(y)}")
    if len(X) == 0:
        raise DataError(f"{where} is empty (0 samples)")
    for name, t in (("X", X), ("y", y)):
        if t.is_floating_point() and not torch.isfinite(t).all():
            bad = (~torch.isfinite(t)).nonzero()[0].tolist()
            raise DataError(f"{where}: {name} contains NaN or inf (first at index {bad})")
    return X, y


def _fingerprint(X: torch.Tensor, y: torch.Tensor) -> tuple[int, float, float]:
    """Cheap identity of a batch: its size and float64 sums of inputs and targets."""
    return len(X), float(X.double().sum()), float(y.double().sum())


class HessianSet:
    """Validated data for a curvature operator, iterated as weighted chunks.

    Args:
        data: ``(X, y)`` tensors, or a re-iterable of ``(X, y)`` batches.
        chunk_size: largest number of samples per forward pass (``None``: a tuple is one chunk,
            an iterable keeps its batches).
        check_deterministic: for an iterable, pass over it twice and require identical batches.
    """

    def __init__(self, data: object, chunk_size: int | None = None,
                 check_deterministic: bool = True) -> None:
        if chunk_size is not None and (not isinstance(chunk_size, int) or isinstance(chunk_size, bool)
                                       or chunk_size < 1):
            raise DataError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
        self.chunk_size = chunk_size
        if isinstance(data, (tuple, list)) and len(data) == 2 and all(
                isinstance(t, torch.Tensor) for t in data):
            X, y = _check_pair(data, "data")
            self._tensors: tuple[torch.Tensor, torch.Tensor] | None = (X, y)
            self._iterable: Iterable | None = None
            self.n_samples = len(X)
            self.n_batches = 1
        else:
            self._tensors = None
            self._iterable = self._check_iterable(data, check_deterministic)

    def _check_iterable(self, data: object, check_deterministic: bool) -> Iterable:
        if isinstance(data, torch.Tensor):
            raise DataError("data is a single tensor; pass a pair (X, y) or batches of pairs")
        if not isinstance(data, Iterable):
            raise DataError(f"data must be a pair (X, y) of tensors or an iterable of (X, y) batches, "
                            f"got {type(data).__name__}")
        if isinstance(data, Iterator):
            raise DataError(f"data is an iterator ({type(data).__name__}) and can be read only once; "
                            "the operator passes over it at every matvec. Pass a list of batches "
                            "or a DataLoader(shuffle=False)")
        first = [_fingerprint(*_check_pair(b, f"data batch {i}")) for i, b in enumerate(data)]
        if not first:
            raise DataError("data yields no batches (empty)")
        if check_deterministic:
            second = [_fingerprint(*_check_pair(b, f"data batch {i}")) for i, b in enumerate(data)]
            if len(second) != len(first):
                raise DataError(f"data yields {len(first)} batches on one pass and {len(second)} on "
                                "the next; it must yield the same batches every pass")
            for i, (a, b) in enumerate(zip(first, second, strict=True)):
                if a[0] != b[0] or abs(a[1] - b[1]) > 1e-6 * (1 + abs(a[1])) or a[2] != b[2]:
                    raise DataError(f"data batch {i} differs between two passes (a shuffling "
                                    "DataLoader?); the Hessian set must yield the same batches "
                                    "every pass: use shuffle=False or a fixed list of batches")
        self.n_samples = sum(f[0] for f in first)
        self.n_batches = len(first)
        return data

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._tensors is not None:
            yield self._tensors
        else:
            assert self._iterable is not None
            for b in self._iterable:
                yield b[0], b[1]

    def chunks(self, device: torch.device | None = None,
               dtype: torch.dtype | None = None) -> Iterator[Chunk]:
        """Yield the chunks with weights ``n_b / N``, moved to ``device`` and, if floating, ``dtype``."""
        N = self.n_samples
        for X, y in self._batches():
            step = self.chunk_size or len(X)
            for s in range(0, len(X), step):
                Xc, yc = X[s:s + step], y[s:s + step]
                if device is not None or dtype is not None:
                    Xc = Xc.to(device=device, dtype=dtype if Xc.is_floating_point() else None)
                    yc = yc.to(device=device, dtype=dtype if yc.is_floating_point() else None)
                yield Chunk(Xc, yc, len(Xc) / N)

    def first_chunk(self, max_samples: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """A few samples, for one-off checks of the model and the loss."""
        X, y = next(self._batches())
        return X[:max_samples], y[:max_samples]
