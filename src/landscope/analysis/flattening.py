"""Landscape flattening ([W&R] §4): λ₁ at the end of each instability falls with its index."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from landscope.analysis.instabilities import DEFAULT_DELTA, Instability, find_instabilities
from landscope.analysis.trace import Trace, trace
from landscope.train import Run


@dataclass(frozen=True)
class Flattening:
    """λ₁ measured at (the first measurement at or after) the end of each finished instability.

    ``rho`` is Spearman's rank correlation of λ₁ against the instability index (NaN below three
    instabilities); the claim is ρ < 0, with λ₁ at or below the threshold after each one.
    """

    index: np.ndarray
    step: np.ndarray
    lambda1: np.ndarray
    threshold: np.ndarray
    rho: float
    p_value: float

    @property
    def below_threshold(self) -> float:
        """Fraction of instabilities after which λ₁ ≤ threshold (NaN when there are none)."""
        ok = self.lambda1 <= self.threshold
        return float(ok.mean()) if len(ok) else math.nan


def flattening(run: Run | Trace, instabilities: list[Instability] | None = None,
               delta: float = DEFAULT_DELTA) -> Flattening:
    """:class:`Flattening` of a run (instabilities found with ``delta`` unless given)."""
    tr = trace(run)
    events = find_instabilities(tr, delta) if instabilities is None else instabilities
    idx, steps, lam, thr = [], [], [], []
    for ev in events:
        if ev.end is None:
            continue
        after = np.nonzero(tr.lambda_steps >= ev.end)[0]
        if not len(after):
            continue
        j = after[0]
        idx.append(ev.index)
        steps.append(tr.lambda_steps[j])
        lam.append(tr.lambda1[j])
        thr.append(tr.threshold[j])
    rho, p = (spearmanr(idx, lam) if len(idx) >= 3 and len(set(lam)) > 1 else (math.nan, math.nan))
    return Flattening(np.array(idx, dtype=int), np.array(steps, dtype=int), np.array(lam, dtype=float),
                      np.array(thr, dtype=float), float(rho), float(p))
