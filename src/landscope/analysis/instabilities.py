"""Training instabilities: loss spikes with a heating and a cooling phase ([W&R] §3; DESIGN §6).

*Ours* (the paper's exact rule could not be checked): an instability **starts** at the first step
whose loss exceeds (1 + δ)× its running minimum since the last instability ended; **heating** runs
from the start to the loss peak; **cooling** from the peak to the first step whose loss is back
below (1 + δ)× that pre-start minimum (the **end**). δ = 0.1 by default. Each instability also
records its **crossing**: the first measurement since the previous instability started at which
λ₁ exceeded the stability threshold (the claim: one precedes every spike).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from landscope.analysis.trace import Trace, trace
from landscope.errors import InputError
from landscope.train import Run


@dataclass(frozen=True)
class Instability:
    """One loss spike. Steps are training steps; ``end`` is ``None`` if the run ended first."""

    index: int
    start: int
    peak: int
    end: int | None
    base_loss: float          # running minimum before the start
    peak_loss: float
    crossing: int | None      # first λ₁ > threshold measurement in (previous start, start]

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


def find_instabilities(run: Run | Trace, delta: float = 0.1, key: str | None = None) -> list[Instability]:
    """The instabilities of a run's training loss (see the module docstring for the rule).

    ``key`` picks the loss (default: every step's for full batch, the full-set loss measured at
    each measurement for minibatch runs). Non-finite losses (divergence) count as above any bound.
    """
    if not delta > 0:
        raise InputError(f"find_instabilities: delta must be positive, got {delta!r}")
    tr = trace(run, key)
    steps, loss = tr.loss_steps, np.where(np.isfinite(tr.loss), tr.loss, np.inf)
    raw: list[tuple[int, int, int | None, float]] = []  # start, peak, end (indices), base
    running_min, start = math.inf, None
    for i, value in enumerate(loss):
        if start is None:
            running_min = min(running_min, value)
            if value > (1 + delta) * running_min:
                start, peak, base = i, i, running_min
        else:
            if value > loss[peak]:
                peak = i
            if value < (1 + delta) * base:
                raw.append((start, peak, i, base))
                start, running_min = None, value
    if start is not None:
        raw.append((start, peak, None, base))
    events = []
    for n, (s, p, e, base) in enumerate(raw):
        window_lo = steps[raw[n - 1][0]] if n > 0 else -math.inf
        events.append(Instability(
            index=n, start=int(steps[s]), peak=int(steps[p]), end=None if e is None else int(steps[e]),
            base_loss=float(base), peak_loss=float(loss[p]),
            crossing=_first_crossing(tr, window_lo, int(steps[s]))))
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
