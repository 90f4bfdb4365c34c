"""Training instabilities: loss spikes with a heating and a cooling phase ([W&R] §3; DESIGN §6).

The rule (*ours*) lives in :mod:`landscope.training.detector`, shared with the trainer's online
detection: an instability **starts** when the loss exceeds (1 + δ)× its running minimum since the
last instability ended; **heating** runs from the start to the loss peak; **cooling** from the peak
to the first step whose loss is back below (1 + δ)× that pre-start minimum (the **end**). Each
instability also
records its **crossing**: the first measurement since the previous instability started at which
λ₁ exceeded the stability threshold (the claim: one precedes every spike).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from landscope.analysis.trace import Trace, trace
from landscope.training import Run
from landscope.training.detector import DEFAULT_DELTA, SENSITIVITY_DELTAS, check_delta, detect

__all__ = ["DEFAULT_DELTA", "SENSITIVITY_DELTAS", "Instability", "eos_ratio", "find_instabilities"]


@dataclass(frozen=True)
class Instability:
    """One loss spike. Steps are training steps; ``end`` is ``None`` if the run ended first."""

    index: int
    start: int
    peak: int
    end: int | None
    base_loss: float  # running minimum before the start
    peak_loss: float
    crossing: int | None  # first λ₁ > threshold measurement in (previous start, start]

    @property
    def heating(self) -> tuple[int, int]:
        """Start → peak."""
        return self.start, self.peak

    @property
    def cooling(self) -> tuple[int, int | None]:
        """Peak → end."""
        return self.peak, self.end

    @property
    def height(self) -> float:
        """Peak loss over the pre-start minimum."""
        return self.peak_loss / self.base_loss if self.base_loss > 0 else math.inf


def find_instabilities(
    run: Run | Trace, delta: float = DEFAULT_DELTA, key: str | None = None
) -> list[Instability]:
    """The instabilities of a run's training loss (the rule: :mod:`landscope.training.detector`).

    ``key`` picks the loss (default: every step's for full batch, the full-set loss measured at
    each measurement for minibatch runs). Non-finite losses (divergence) count as above any bound.
    """
    delta = check_delta(delta, "find_instabilities: delta")
    tr = trace(run, key)
    spells = detect(tr.loss_steps, tr.loss, delta)
    events = []
    for n, sp in enumerate(spells):
        window_lo = spells[n - 1].start if n > 0 else -math.inf
        events.append(
            Instability(
                index=n,
                start=sp.start,
                peak=sp.peak,
                end=sp.end,
                base_loss=sp.base_loss,
                peak_loss=sp.peak_loss,
                crossing=_first_crossing(tr, window_lo, sp.start),
            )
        )
    return events


def _first_crossing(tr: Trace, lo: float, hi: int) -> int | None:
    """First measurement step in (lo, hi] with λ₁ above the threshold."""
    sel = (tr.lambda_steps > lo) & (tr.lambda_steps <= hi) & (tr.lambda1 > tr.threshold)
    hits = tr.lambda_steps[sel]
    return int(hits[0]) if len(hits) else None


def eos_ratio(run: Run | Trace) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, λ₁ / threshold)`` at every measurement: the edge-of-stability ratio."""
    tr = trace(run)
    with np.errstate(divide="ignore", invalid="ignore"):
        return tr.lambda_steps, tr.lambda1 / tr.threshold
