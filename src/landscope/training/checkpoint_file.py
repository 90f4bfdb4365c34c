"""What a checkpoint file holds, and reading one safely.

``torch.load(weights_only=True)`` rebuilds tensors and plain Python values only, so a checkpoint
from someone else's run folder cannot run code when it is loaded. :func:`to_plain` stores
everything else as those, and :func:`read_checkpoint` turns every way a file can be damaged into
one :class:`CheckpointError` whose ``why`` completes "checkpoint FILE …".
"""

from __future__ import annotations

import dataclasses
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from landscope.curvature import EigenResult
from landscope.errors import InputError

# -- checkpoint contents ------------------------------------------------------------------------
# torch.load(weights_only=True) rebuilds tensors and plain Python values only, so a checkpoint
# stores everything else as those: numpy values as Python numbers or tagged tensors, and the few
# result dataclasses a measurer's state holds as tagged dicts of their fields, rebuilt on load from
# this explicit table (never from a name found in the file).
_TAG = "__landscope_type__"
_DATACLASSES: dict[str, type] = {"EigenResult": EigenResult}
_ATOMS = (torch.Tensor, torch.dtype, torch.device, torch.Size)
_CHECKPOINT_KEYS = frozenset(
    {"step", "model", "optimizer", "measurer", "theta0", "initial_loss", "clip_count", "metrics_offset"}
)


def _same(new: list[Any], old: Any) -> bool:
    return all(a is b for a, b in zip(new, old, strict=True))


def to_plain(obj: Any, where: str = "state") -> Any:
    """``obj`` as tensors and plain Python values (those unchanged are returned as they are).

    Raises an :class:`InputError` naming the entry that holds anything else: a checkpoint that
    could not be read back safely is refused when it is written, not when the run is resumed.
    """
    if obj is None or type(obj) in (bool, int, float, complex, str, bytes) or isinstance(obj, _ATOMS):
        return obj
    if isinstance(obj, dict):
        keys = [to_plain(k, where) for k in obj]
        values = [to_plain(v, f"{where}[{k!r}]") for k, v in obj.items()]
        if type(obj) in (dict, OrderedDict) and _same(keys, obj) and _same(values, obj.values()):
            return obj
        out = (OrderedDict if isinstance(obj, OrderedDict) else dict)(zip(keys, values, strict=True))
        if hasattr(obj, "_metadata"):  # a module's state_dict: the per-module versions
            # torch sets _metadata on its state_dict OrderedDicts; no type declares it
            out._metadata = obj._metadata  # type: ignore[attr-defined]
        return out
    if isinstance(obj, list | tuple | set):
        items = [to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        if type(obj) in (list, tuple, set) and _same(items, obj):
            return obj
        return next(t for t in (list, tuple, set) if isinstance(obj, t))(items)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray) and obj.dtype != object:
        try:
            return {_TAG: "ndarray", "data": torch.from_numpy(np.array(obj, copy=True, order="C"))}
        except TypeError:
            pass
    elif dataclasses.is_dataclass(obj) and _DATACLASSES.get(type(obj).__name__) is type(obj):
        return {
            _TAG: type(obj).__name__,
            "fields": {
                f.name: to_plain(getattr(obj, f.name), f"{where}.{f.name}") for f in dataclasses.fields(obj)
            },
        }
    elif isinstance(obj, bool | int | float | str):  # subclasses such as torch's TorchVersion
        return next(t for t in (int, float, str) if isinstance(obj, t))(obj)
    raise InputError(
        f"checkpoint entry {where} is a {type(obj).__module__}.{type(obj).__qualname__}, which "
        f"torch.load(weights_only=True) cannot read back; checkpoints hold tensors and plain "
        f"Python values only"
    )


def from_plain(obj: Any) -> Any:
    """Undo :func:`to_plain`: rebuild the tagged numpy arrays and dataclasses."""
    if isinstance(obj, dict):
        if _TAG in obj:
            kind = obj[_TAG]
            if kind == "ndarray" and isinstance(obj.get("data"), torch.Tensor):
                return obj["data"].numpy()
            cls = _DATACLASSES.get(kind) if isinstance(kind, str) else None
            if cls is None or not isinstance(obj.get("fields"), dict):
                raise CheckpointError(f"holds an entry of unknown type {kind!r}")
            fields = {k: from_plain(v) for k, v in obj["fields"].items()}
            init = {f.name for f in dataclasses.fields(cls) if f.init}
            try:
                inst = cls(**{k: v for k, v in fields.items() if k in init})
            except TypeError as e:
                raise CheckpointError(f"holds a {kind} that does not match this landscope's ({e})") from None
            for k, v in fields.items():
                if k not in init:
                    object.__setattr__(inst, k, v)
            return inst
        values = [from_plain(v) for v in obj.values()]
        if _same(values, obj.values()):
            return obj
        out = type(obj)(zip(obj, values, strict=True))
        if hasattr(obj, "_metadata"):  # torch's state_dict attribute (see to_plain)
            out._metadata = obj._metadata  # type: ignore[attr-defined]
        return out
    if isinstance(obj, list | tuple) and not isinstance(obj, torch.Size):
        items = [from_plain(v) for v in obj]
        return obj if _same(items, obj) else type(obj)(items)
    return obj


class CheckpointError(Exception):
    """A checkpoint file that cannot be used; ``why`` completes "checkpoint FILE …"."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def checkpoint_advice(run: Path) -> str:
    """What the user can do when no checkpoint of ``run`` can be used."""
    return (
        f"remove {run / 'checkpoints'} to restart this run from step 0, or start a new run in another folder"
    )


def load_failure(path: Path, e: Exception) -> CheckpointError:
    """What ``torch.load(path, weights_only=True)`` raising ``e`` means for the user."""
    text = str(e)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if text.startswith("Weights only load failed"):
        # torch's message: paragraphs on weights_only, the reason, a pointer to its docs
        given = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\n\n|$)", text, re.DOTALL)
        parts = (
            [given.group(1)]
            if given
            else [
                q
                for q in (p.strip() for p in text.split("\n\n")[1:])
                if q and not q.startswith("Check the doc")
            ]
        )
        text = " ".join(parts)
    reason = " ".join(text.split())[:200]
    if found is not None:
        name = found.group(1)
        if name.startswith("landscope."):
            return CheckpointError(
                f"was written by an older landscope: it holds {name} objects, which "
                f"cannot be loaded safely (landscope reads checkpoints with "
                f"torch.load(weights_only=True) only)"
            )
        return CheckpointError(
            f"holds {name}, which is neither a tensor nor a plain Python value: "
            f"unpickling it could run code, so landscope does not load it (was the file "
            f"replaced?)"
        )
    try:
        size = path.stat().st_size
    except OSError:
        size = None
    if size == 0:
        return CheckpointError("is empty (0 bytes)")
    what = type(e).__name__ + (f": {reason}" if reason else "")
    return CheckpointError(f"is corrupt or truncated ({size} bytes; torch.load: {what})")


def read_checkpoint(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    """The state in checkpoint ``path``, read safely; raises :class:`CheckpointError`."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # whatever a damaged file makes torch raise: one message, no traceback
        raise load_failure(path, e) from None
    if not isinstance(state, dict) or not set(state) >= _CHECKPOINT_KEYS:
        kind = (
            type(state).__name__
            if not isinstance(state, dict)
            else f"dict without {sorted(_CHECKPOINT_KEYS - set(state))}"
        )
        raise CheckpointError(f"does not hold a landscope checkpoint (it holds a {kind})")
    if not (
        isinstance(state["step"], int)
        and isinstance(state["metrics_offset"], int)
        and state["step"] >= 0
        and state["metrics_offset"] >= 0
    ):
        raise CheckpointError(
            f"holds step {state['step']!r} and metrics_offset "
            f"{state['metrics_offset']!r}, not non-negative integers"
        )
    return from_plain(state)
