"""The instability rule, in streaming form: one definition for the trainer and the analyses.

The trainer watches the loss step by step to measure around each instability as it happens
(``measure.around_instabilities``); :func:`landscope.analysis.find_instabilities` replays the same
detector over a finished run. The rule is causal (a decision at step t reads only losses up to t),
so both find exactly the same instabilities in the same loss series.

*Ours* (the paper's exact rule could not be checked): an instability **starts** at the first step
whose loss exceeds (1 + δ)× its running minimum since the last instability ended; it **peaks** at
its highest loss; it **ends** at the first step whose loss is back below (1 + δ)× that pre-start
minimum. Non-finite losses (divergence) count as above any bound. The default δ comes from the
sensitivity study of ``benchmarks/instability_detection.py`` (docs/instabilities.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from landscope.errors import InputError

DEFAULT_DELTA = 0.02  # benchmarks/instability_detection.py: recall 0.98, precision 1.00 (docs)
SENSITIVITY_DELTAS = (0.01, 0.02, 0.05, 0.1)  # [W&R]'s suggested check: claims at every δ


def check_delta(delta: object, where: str = "delta") -> float:
    """``delta`` as a float, or one :class:`InputError` naming it."""
    if (
        isinstance(delta, bool)
        or not isinstance(delta, int | float)
        or not (math.isfinite(delta) and delta > 0)
    ):
        raise InputError(f"{where} must be positive, got {delta!r}")
    return float(delta)


@dataclass(frozen=True)
class Spell:
    """One instability as the detector saw it (steps; ``end`` is ``None`` while it lasts)."""

    start: int
    peak: int
    end: int | None
    base_loss: float  # running minimum before the start
    peak_loss: float


class InstabilityDetector:
    """Feed it ``(step, loss)`` in step order; it reports when an instability starts and ends."""

    def __init__(self, delta: float = DEFAULT_DELTA) -> None:
        self.delta = check_delta(delta)
        self.running_min = math.inf
        self._start: int | None = None
        self._peak = 0
        self._peak_loss = -math.inf
        self._base = math.inf

    @property
    def active(self) -> bool:
        """Whether an instability is under way (started, not yet ended)."""
        return self._start is not None

    @property
    def current(self) -> Spell | None:
        """The instability under way, or ``None``."""
        if self._start is None:
            return None
        return Spell(self._start, self._peak, None, self._base, self._peak_loss)

    def update(self, step: int, loss: float) -> Spell | None:
        """Take the loss at ``step``; returns the instability that ended at this step, if any.

        After the call, :attr:`active` with ``current.start == step`` means one started here.
        """
        value = loss if math.isfinite(loss) else math.inf
        if self._start is None:
            self.running_min = min(self.running_min, value)
            if value > (1 + self.delta) * self.running_min:
                self._start, self._peak, self._peak_loss, self._base = step, step, value, self.running_min
            return None
        if value > self._peak_loss:
            self._peak, self._peak_loss = step, value
        if value < (1 + self.delta) * self._base:
            done = Spell(self._start, self._peak, step, self._base, self._peak_loss)
            self._start, self.running_min = None, value
            return done
        return None

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue the same detection."""
        return {
            "delta": self.delta,
            "running_min": self.running_min,
            "start": self._start,
            "peak": self._peak,
            "peak_loss": self._peak_loss,
            "base": self._base,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.delta, self.running_min = float(state["delta"]), state["running_min"]
        self._start = state["start"]
        self._peak, self._peak_loss, self._base = state["peak"], state["peak_loss"], state["base"]


def detect(steps: Any, losses: Any, delta: float = DEFAULT_DELTA) -> list[Spell]:
    """Every instability of a loss series (the last one with ``end=None`` if the series ends in it)."""
    det = InstabilityDetector(delta)
    out = []
    for s, v in zip(steps, losses, strict=True):
        done = det.update(int(s), float(v))
        if done is not None:
            out.append(done)
    if det.current is not None:
        out.append(det.current)
    return out
