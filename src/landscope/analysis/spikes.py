"""Reference loss spikes, and how well a detector's instabilities find them.

:func:`find_instabilities` has a tolerance δ; to choose it (and to check any other detector) we
need a reference that does not depend on δ. A **spike** is what a reader points at on a loss
curve: a step ``t`` whose loss is a local maximum (``loss[t] > loss[t-1]`` and
``loss[t] >= loss[t+1]``) at least ``rise`` (2 %) above the lowest loss of the ``window`` (30)
steps before it. :func:`detection_scores` scores detected instabilities against those spikes
(recall and precision); ``benchmarks/instability_detection.py`` uses both to pick δ.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from landscope.analysis.trace import Trace, trace
from landscope.checks import int_at_least
from landscope.errors import InputError
from landscope.training import Run


def loss_spikes(run: Run | Trace, rise: float = 0.02, window: int = 30, key: str | None = None) -> np.ndarray:
    """The steps of the loss spikes of a run or trace (a 1-D integer array, ascending).

    A spike is a local maximum of the loss at least ``rise`` above the minimum of the ``window``
    losses before it (``loss[t] >= (1 + rise) · min(loss[t-window:t])``; fewer at the start of
    the series). It is a fixed, δ-free reference to score :func:`find_instabilities` against.
    ``window`` counts recorded losses (steps, for full-batch runs); the first and last recorded
    losses are never spikes (a neighbour is missing). Non-finite losses (divergence) are never
    spikes, and count as above any spike, so the step before a divergence is not one either;
    they never lower a window's minimum. ``key`` picks the loss as in :func:`trace`.
    """
    real = isinstance(rise, numbers.Real) and not isinstance(rise, bool)
    if not (real and math.isfinite(rise) and rise >= 0):
        raise InputError(f"loss_spikes: rise must be a finite number >= 0, got {rise!r}")
    window = int_at_least("loss_spikes: window", window, 1)
    tr = trace(run, key)
    raw = np.asarray(tr.loss, dtype=float)
    loss = np.where(np.isfinite(raw), raw, np.inf)
    n = len(loss)
    if n < 3:
        return np.array([], dtype=np.int64)
    mid = loss[1:-1]
    local_max = np.isfinite(mid) & (mid > loss[:-2]) & (mid >= loss[2:])
    idx = np.flatnonzero(local_max) + 1
    keep = [i for i in idx if loss[i] >= (1 + rise) * loss[max(0, i - window) : i].min()]
    return np.asarray(tr.loss_steps, dtype=np.int64)[np.asarray(keep, dtype=np.int64)]


@dataclass(frozen=True)
class DetectionScore:
    """How detected instabilities match reference spikes.

    ``recall``: the fraction of spikes inside some instability's ``[start, end]`` (a missed
    spike is one a reader sees and the analysis ignores). ``precision``: the fraction of
    instabilities holding at least one spike (an empty one is noise called an instability).
    Each is NaN when its denominator (``n_spikes`` / ``n_events``) is 0. ``n_caught`` and
    ``n_hit`` are the numerators, so scores of several runs pool with :meth:`pooled`.
    """

    recall: float
    precision: float
    n_spikes: int
    n_events: int
    n_caught: int
    n_hit: int

    @property
    def f1(self) -> float:
        """Harmonic mean of recall and precision (NaN if either is; 0 if both are 0)."""
        r, p = self.recall, self.precision
        if math.isnan(r) or math.isnan(p):
            return math.nan
        return 0.0 if r + p == 0 else 2 * r * p / (r + p)

    @classmethod
    def pooled(cls, scores: Iterable[DetectionScore]) -> DetectionScore:
        """One score over several runs: every spike and every instability counts once."""
        scores = list(scores)
        caught, spikes = sum(s.n_caught for s in scores), sum(s.n_spikes for s in scores)
        hit, events = sum(s.n_hit for s in scores), sum(s.n_events for s in scores)
        return cls(
            recall=caught / spikes if spikes else math.nan,
            precision=hit / events if events else math.nan,
            n_spikes=spikes,
            n_events=events,
            n_caught=caught,
            n_hit=hit,
        )


def _interval(event: Any, i: int) -> tuple[float, float]:
    """``(start, end)`` of an :class:`Instability` or a ``(start, end)`` pair (end None: ∞)."""
    if hasattr(event, "start") and hasattr(event, "end"):
        start, end = event.start, event.end
    elif isinstance(event, Sequence) and not isinstance(event, str) and len(event) == 2:
        start, end = event
    else:
        raise InputError(
            f"detection_scores: events[{i}] must be an Instability or a (start, end) pair, got {event!r}"
        )
    ok = isinstance(start, numbers.Real) and not isinstance(start, bool) and math.isfinite(start)
    if not ok or not (
        end is None or (isinstance(end, numbers.Real) and not isinstance(end, bool) and end >= start)
    ):
        raise InputError(
            f"detection_scores: events[{i}] needs a finite start and an end >= start "
            f"or None, got start={start!r}, end={end!r}"
        )
    return float(start), math.inf if end is None else float(end)


def detection_scores(events: Iterable[Any], spikes: Iterable[float] | np.ndarray) -> DetectionScore:
    """Recall and precision of detected instabilities against reference spikes.

    ``events``: :class:`~landscope.analysis.Instability` objects (or ``(start, end)`` pairs) of one
    run; an ``end`` of ``None`` means the instability lasts to the run's end. ``spikes``: the
    steps :func:`loss_spikes` returns for the same run. A spike is caught when it lies in some
    ``[start, end]`` (both inclusive), so one instability may catch several spikes.
    """
    if isinstance(events, (str, bytes)) or not isinstance(events, Iterable):
        raise InputError(f"detection_scores: events must be a list of instabilities, got {events!r}")
    intervals = [_interval(e, i) for i, e in enumerate(events)]
    try:
        steps = np.asarray(spikes, dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"detection_scores: spikes must be a 1-D array of steps, got {spikes!r}") from None
    if steps.ndim != 1 or not np.all(np.isfinite(steps)):
        raise InputError(f"detection_scores: spikes must be a 1-D array of finite steps, got {spikes!r}")
    inside = np.array([[lo <= s <= hi for s in steps] for lo, hi in intervals], dtype=bool)
    inside = inside.reshape(len(intervals), len(steps))
    caught, hit = int(inside.any(axis=0).sum()), int(inside.any(axis=1).sum())
    n_spikes, n_events = len(steps), len(intervals)
    return DetectionScore(
        recall=caught / n_spikes if n_spikes else math.nan,
        precision=hit / n_events if n_events else math.nan,
        n_spikes=n_spikes,
        n_events=n_events,
        n_caught=caught,
        n_hit=hit,
    )
