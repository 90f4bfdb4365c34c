"""Landscape flattening ([W&R] §4): λ₁ falls across each instability, and with the instability index."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import spearmanr

from landscope.analysis.instabilities import DEFAULT_DELTA, Instability, find_instabilities
from landscope.analysis.trace import Trace, trace
from landscope.training import Run


@dataclass(frozen=True)
class Flattening:
    """λ₁ just before and just after each finished instability: the two readings of flattening.

    ``lambda1_before`` is λ₁ at the last measurement before the start, ``lambda1`` at the first one
    after the end (with ``measure.around_instabilities``: exactly start − 1 and end + 1).

    - **drop**: λ₁ after / before for each instability; flattening says it is below 1;
    - **trend**: ``rho``, Spearman's ρ of λ₁ after each instability against its index (NaN below
      three instabilities); flattening says ρ < 0.

    Instabilities without a measurement on both sides are left out (``index`` keeps the others).
    """

    index: np.ndarray
    step: np.ndarray
    lambda1: np.ndarray
    threshold: np.ndarray
    rho: float
    p_value: float
    lambda1_before: np.ndarray = field(default_factory=lambda: np.array([]))

    @property
    def drop(self) -> np.ndarray:
        """λ₁ after / λ₁ before, per instability."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.lambda1 / self.lambda1_before

    @property
    def median_drop(self) -> float:
        """Median of :attr:`drop` (NaN without instabilities)."""
        d = self.drop[np.isfinite(self.drop)]
        return float(np.median(d)) if len(d) else math.nan

    @property
    def below_threshold(self) -> float:
        """Fraction of instabilities after which λ₁ ≤ threshold (NaN when there are none)."""
        ok = self.lambda1 <= self.threshold
        return float(ok.mean()) if len(ok) else math.nan


def flattening(
    run: Run | Trace, instabilities: list[Instability] | None = None, delta: float = DEFAULT_DELTA
) -> Flattening:
    """:class:`Flattening` of a run (instabilities found with ``delta`` unless given)."""
    tr = trace(run)
    events = find_instabilities(tr, delta) if instabilities is None else instabilities
    ok = np.isfinite(tr.lambda1)
    steps, lam1, thr1 = tr.lambda_steps[ok], tr.lambda1[ok], tr.threshold[ok]
    idx, at, lam, thr, before = [], [], [], [], []
    for ev in events:
        if ev.end is None:
            continue
        after, prior = np.nonzero(steps > ev.end)[0], np.nonzero(steps < ev.start)[0]
        if not len(after) or not len(prior):
            continue
        j = after[0]
        idx.append(ev.index)
        at.append(steps[j])
        lam.append(lam1[j])
        thr.append(thr1[j])
        before.append(lam1[prior[-1]])
    rho, p = spearmanr(idx, lam) if len(idx) >= 3 and len(set(lam)) > 1 else (math.nan, math.nan)
    return Flattening(
        np.array(idx, dtype=int),
        np.array(at, dtype=int),
        np.array(lam, dtype=float),
        np.array(thr, dtype=float),
        float(rho),
        float(p),
        np.array(before, dtype=float),
    )
