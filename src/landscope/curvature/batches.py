"""The Hessian set: the data a curvature operator averages its loss over.

A *batch* is any structure of tensors: an ``(X, y)`` pair where ``X`` and ``y`` are each a tensor,
a tuple or a dict of tensors, or a plain dict batch (``input_ids``, ``attention_mask``,
``labels``: a Hugging Face ``BatchEncoding`` is one). The data is one batch (a tuple pair or a
dict), or a re-iterable of batches that yields the same batches on every pass (a list, or a
``DataLoader`` with ``shuffle=False``). It is checked once, here, so that the operator can trust
it: a generator, a shuffling loader, NaN in floating tensors or batches without tensors fail with a
message that names the value.

Each chunk has a weight, its share of the total: ``batch_weight(chunk) / Σ batch_weight``. The
default weight is the number of samples (the first dimension of the batch's first tensor), which
makes the operator the curvature of the mean over samples however the data is chunked. A token loss
that averages over valid tokens needs the number of valid tokens instead: :func:`valid_tokens`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from landscope.checks import positive_int
from landscope.errors import DataError, InputError, LandscopeError

Batch = Any  # a tensor, or a tuple / list / dict of batches
BatchWeight = Callable[[Batch], float]


def tensors(batch: Batch) -> list[torch.Tensor]:
    """The tensors of a batch, depth first, in order."""
    return [t for _, t in named_tensors(batch)]


def named_tensors(batch: Batch, name: str = "batch") -> list[tuple[str, torch.Tensor]]:
    """The tensors of a batch with the path that reaches each: ``X``, ``y[0]``, ``batch['labels']``."""
    if isinstance(batch, torch.Tensor):
        return [(name, batch)]
    if isinstance(batch, Mapping):
        return [nt for k, v in batch.items() for nt in named_tensors(v, f"{name}[{k!r}]")]
    if isinstance(batch, (tuple, list)):
        return [nt for i, v in enumerate(batch) for nt in named_tensors(v, f"{name}[{i}]")]
    return []


def map_tensors(fn: Callable[[torch.Tensor], torch.Tensor], batch: Batch) -> Batch:
    """``batch`` with ``fn`` applied to every tensor (mappings become dicts, other leaves stay)."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, Mapping):
        return {k: map_tensors(fn, v) for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(map_tensors(fn, v) for v in batch)
    if isinstance(batch, list):
        return [map_tensors(fn, v) for v in batch]
    return batch


def to_device(batch: Batch, device: torch.device | None, dtype: torch.dtype | None) -> Batch:
    """``batch`` on ``device``, its floating tensors in ``dtype`` (integer ones keep theirs)."""
    return map_tensors(lambda t: t.to(device=device, dtype=dtype if t.is_floating_point() else None), batch)


def batch_size(batch: Batch) -> int:
    """Samples in a batch: the first dimension of its first tensor (of ``X`` for a pair)."""
    first = tensors(batch[0] if is_pair(batch) else batch)
    if not first or first[0].dim() == 0:
        return 1
    return int(first[0].shape[0])


def is_pair(batch: Batch) -> bool:
    """An ``(X, y)`` pair: a tuple or list of two parts, each a tensor, tuple, list or dict."""
    return (
        isinstance(batch, (tuple, list))
        and len(batch) == 2
        and all(isinstance(part, (torch.Tensor, tuple, list, Mapping)) for part in batch)
    )


def slice_batch(batch: Batch, start: int, stop: int, n: int) -> Batch:
    """Samples ``start:stop`` of a batch of ``n``: tensors whose first dimension is ``n`` are sliced."""
    return map_tensors(lambda t: t[start:stop] if t.dim() > 0 and t.shape[0] == n else t, batch)


def valid_tokens(ignore_index: int = -100, key: str = "labels", shift: bool = False) -> BatchWeight:
    """A ``batch_weight`` counting the target tokens that are not ``ignore_index``.

    With it, chunks of a token loss averaged over valid tokens (``F.cross_entropy(...,
    ignore_index=-100)``, Hugging Face's ``.loss``) are weighted so that the operator is the
    curvature of the mean over *all* valid tokens of the Hessian set, exactly, however many each
    chunk holds. The targets are ``batch[key]`` for a dict batch and ``y`` for an ``(X, y)`` pair
    (then ``y[key]`` if ``y`` is a dict). ``shift=True`` drops each sequence's first target, as a
    causal language model's loss does when it shifts the labels (Hugging Face ``…ForCausalLM`` and
    GPT-2's ``LMHeadModel`` with ``labels``).
    """

    def weight(batch: Batch) -> float:
        target = batch[1] if is_pair(batch) else batch
        if isinstance(target, Mapping):
            if key not in target:
                raise DataError(
                    f"valid_tokens: the batch has no {key!r} entry (keys: {sorted(target)}); pass key=…"
                )
            target = target[key]
        if not isinstance(target, torch.Tensor):
            raise DataError(f"valid_tokens: the targets must be a tensor, got {type(target).__name__}")
        if shift:
            target = target[..., 1:]
        return float((target != ignore_index).sum())

    return weight


@dataclass(frozen=True)
class Chunk:
    """One forward pass's worth of the Hessian set, with its share of the total weight."""

    batch: Batch
    weight: float


def _check_batch(batch: Batch, where: str) -> Batch:
    leaves = tensors(batch)
    if not leaves:
        raise DataError(
            f"{where} has no tensors: a batch is (X, y) or a dict of tensors, got {type(batch).__name__}"
        )
    if is_pair(batch):
        for name, part in zip(("X", "y"), batch, strict=True):
            if isinstance(part, torch.Tensor) and part.dim() == 0:
                raise DataError(f"{where}: {name} is a scalar; its first dimension must index samples")
        X, y = (tensors(part) for part in batch)
        if not X:
            raise DataError(f"{where}: X holds no tensor")
        if y and y[0].dim() > 0 and X[0].dim() > 0 and len(X[0]) != len(y[0]):
            raise DataError(f"{where}: X has {len(X[0])} samples but y has {len(y[0])}")
    if batch_size(batch) == 0:
        raise DataError(f"{where} is empty (0 samples)")
    named = (
        [*named_tensors(batch[0], "X"), *named_tensors(batch[1], "y")]
        if is_pair(batch)
        else named_tensors(batch)
    )
    for name, t in named:
        if t.is_floating_point() and not torch.isfinite(t).all():
            bad = (~torch.isfinite(t)).nonzero()[0].tolist()
            raise DataError(f"{where}: {name} contains NaN or inf (first at index {bad})")
    return batch


def _fingerprint(batch: Batch) -> tuple:
    """Cheap identity of a batch: its size and the float64 sum of each tensor."""
    return (batch_size(batch), *(float(t.double().sum()) for t in tensors(batch)))


def _same(a: tuple, b: tuple) -> bool:
    return (
        len(a) == len(b)
        and a[0] == b[0]
        and all(abs(x - y) <= 1e-6 * (1 + abs(x)) for x, y in zip(a[1:], b[1:], strict=True))
    )


def _iterate(data: Iterable) -> Iterator[Batch]:
    """Iterate ``data`` without touching the global RNG.

    ``iter(DataLoader)`` draws its base seed from it (a shuffle-free loader needs no randomness),
    so the caller's state is put back.
    """
    state = torch.get_rng_state()
    it = iter(data)
    torch.set_rng_state(state)
    return it


def _is_single(data: object) -> bool:
    """One batch rather than an iterable of batches: a tuple pair (or ``[X, y]`` tensors), or a dict."""
    if isinstance(data, Mapping):
        return True
    if isinstance(data, tuple):
        return is_pair(data)
    return isinstance(data, list) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)


class HessianSet:
    """Validated data for a curvature operator, iterated as weighted chunks.

    Args:
        data: one batch (an ``(X, y)`` tuple, or a dict), or a re-iterable of batches (a list or
            a ``DataLoader``; a tuple of batches is read as one ``(X, y)`` batch, use a list).
        chunk_size: largest number of samples per forward pass (``None``: a single batch is one
            chunk, an iterable keeps its batches).
        check_deterministic: for an iterable, pass over it twice and require identical batches.
        batch_weight: each chunk's weight, ``batch_weight(chunk)``; default its number of samples.
    """

    def __init__(
        self,
        data: object,
        chunk_size: int | None = None,
        check_deterministic: bool = True,
        batch_weight: BatchWeight | None = None,
    ) -> None:
        chunk_size = positive_int("chunk_size", chunk_size, allow_none=True, error=DataError)
        if batch_weight is not None and not callable(batch_weight):
            raise InputError(
                f"batch_weight must be callable (batch → weight), got {type(batch_weight).__name__}"
            )
        self.chunk_size = chunk_size
        self.batch_weight = batch_weight
        if data is None:
            raise InputError("data is required: an (X, y) pair, a dict batch, or a list of batches")
        if _is_single(data):
            self._single: Batch | None = _check_batch(data, "data")
            self._iterable: Iterable | None = None
            self.n_batches = 1
        else:
            self._single = None
            self._iterable = self._check_iterable(data, check_deterministic)
        self._raw_weights, self.n_samples = [], 0
        for i, c in enumerate(self._raw_chunks()):  # one pass: weights and sample count
            self._raw_weights.append(self._weight_of(c, i))
            self.n_samples += batch_size(c)
        self.total_weight = float(sum(self._raw_weights))
        if not self.total_weight > 0:
            raise DataError(
                f"the batches' weights sum to {self.total_weight:g}: nothing to average "
                "over (batch_weight returned 0 for every chunk: no valid tokens?)"
            )

    @property
    def single(self) -> bool:
        """Whether the data is one batch (then an operator may keep its graphs between products)."""
        return self._single is not None

    def _weight_of(self, chunk: Batch, i: int) -> float:
        if self.batch_weight is None:
            return float(batch_size(chunk))
        try:
            w = self.batch_weight(chunk)
            w = float(w.item() if isinstance(w, torch.Tensor) else w)
        except LandscopeError:
            raise  # its own message (valid_tokens names the missing key)
        except (TypeError, ValueError, RuntimeError) as e:
            raise InputError(f"batch_weight failed on chunk {i}: it must return a number ({e})") from e
        if not w >= 0 or w == float("inf"):
            raise InputError(
                f"batch_weight returned {w!r} for chunk {i}; weights must be finite and non-negative"
            )
        return w

    def _check_iterable(self, data: object, check_deterministic: bool) -> Iterable:
        if isinstance(data, torch.Tensor):
            raise DataError("data is a single tensor; pass a pair (X, y) or batches of pairs")
        if not isinstance(data, Iterable):
            raise DataError(
                f"data must be an (X, y) pair, a dict batch or an iterable of batches, "
                f"got {type(data).__name__}"
            )
        if isinstance(data, Iterator):
            raise DataError(
                f"data is an iterator ({type(data).__name__}) and can be read only once; "
                "the operator passes over it at every matvec. Pass a list of batches "
                "or a DataLoader(shuffle=False)"
            )
        first = [_fingerprint(_check_batch(b, f"data batch {i}")) for i, b in enumerate(_iterate(data))]
        if not first:
            raise DataError("data yields no batches (empty)")
        if check_deterministic:
            second = [_fingerprint(_check_batch(b, f"data batch {i}")) for i, b in enumerate(_iterate(data))]
            if len(second) != len(first):
                raise DataError(
                    f"data yields {len(first)} batches on one pass and {len(second)} on "
                    "the next; it must yield the same batches every pass"
                )
            for i, (a, b) in enumerate(zip(first, second, strict=True)):
                if not _same(a, b):
                    raise DataError(
                        f"data batch {i} differs between two passes (a shuffling "
                        "DataLoader?); the Hessian set must yield the same batches "
                        "every pass: use shuffle=False or a fixed list of batches"
                    )
        self.n_batches = len(first)
        return data

    def _batches(self) -> Iterator[Batch]:
        if self._single is not None:
            yield self._single
        else:
            assert self._iterable is not None
            yield from _iterate(self._iterable)

    def _raw_chunks(self) -> Iterator[Batch]:
        for b in self._batches():
            n = batch_size(b)
            step = self.chunk_size or n
            for s in range(0, n, step):
                yield b if step >= n else slice_batch(b, s, s + step, n)

    def chunks(self, device: torch.device | None = None, dtype: torch.dtype | None = None) -> Iterator[Chunk]:
        """The chunks with their weights, moved to ``device`` and, if floating, ``dtype``.

        Chunks of weight 0 (no valid tokens) are left out: their mean loss is undefined.
        """
        for c, w in zip(self._raw_chunks(), self._raw_weights, strict=True):
            if w == 0:
                continue
            if device is not None or dtype is not None:
                c = to_device(c, device, dtype)
            yield Chunk(c, w / self.total_weight)

    def first_chunk(self, max_samples: int = 64) -> Batch:
        """A few samples of the first chunk with a weight, for one-off checks of the model and loss."""
        for c, w in zip(self._raw_chunks(), self._raw_weights, strict=True):
            if w > 0:
                n = batch_size(c)
                return slice_batch(c, 0, max_samples, n) if n > max_samples else c
        raise DataError("no chunk has a positive weight")  # excluded in __init__
