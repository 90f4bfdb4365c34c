"""Landscape shift ([W&R] §4): the top-k eigen-subspace turns at each instability.

overlap(Uₐ, U_b) = ‖UₐᵀU_b‖²_F / k ∈ [0, 1] (1: the same subspace). The shift across an
instability is 1 − overlap(U before its start, U after its end), with U the stored top-k
eigenvectors at the last measurement ≤ start − 1 and the first ≥ end + 1 (exactly those steps
with ``measure.around_instabilities``).

Its baseline (*ours*) is the shift over **stable windows**: from each measurement, to the first
measurement at least as many training steps later as the instability spans. A stable window
starts after progressive sharpening has ended (λ₁ first reached the threshold: before, the
subspace turns fastest) and touches no instability, not even one found at the smallest δ of the
sensitivity set. Windows are never shorter than the instability, and at a coarse cadence they
are longer (a cadence of 20 against a span of 6); shift grows with the window, so the baseline
is conservative: the claim "across > stable" has to beat windows at least as long.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from landscope.analysis.instabilities import (
    DEFAULT_DELTA,
    SENSITIVITY_DELTAS,
    Instability,
    find_instabilities,
)
from landscope.analysis.trace import Trace, trace
from landscope.curvature import subspace_overlap as subspace_overlap  # the one definition
from landscope.errors import InputError
from landscope.training import Run


def eigenvector_series(run: Run) -> tuple[np.ndarray, list[np.ndarray]]:
    """Steps with stored eigenvectors and the ``(dim, k)`` vectors at each."""
    steps, vecs = [], []
    for s in run.eigen_steps:
        v = run.eigen(s).vectors
        if v is not None:
            steps.append(s)
            vecs.append(v)
    if not steps:
        raise InputError(
            f"run {run.path} stored no eigenvectors (measure.k > 0 and measure.save_vectors are needed)"
        )
    return np.array(steps), vecs


def overlap_matrix(run: Run | tuple[np.ndarray, list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, M)`` with M[i, j] = overlap of the top-k subspaces at measurements i and j.

    For a run folder the result is cached (keyed by the folder and its eigen files), since the
    claims evaluate the shift of the same run at several δ.
    """
    if isinstance(run, Run):
        files = sorted((run.path / "eigen").glob("step_*.npz"))
        stamp = (len(files), max((f.stat().st_mtime_ns for f in files), default=0))
        return _run_overlaps(str(run.path.resolve()), stamp)
    return _overlaps(*run)


@functools.lru_cache(maxsize=8)
def _run_overlaps(path: str, stamp: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    from landscope.training import load_run

    steps, M = _overlaps(*eigenvector_series(load_run(path)))
    M.setflags(write=False)
    return steps, M


def _overlaps(steps: np.ndarray, vecs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    V = torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in vecs])  # (T, dim, k)
    T, dim, k = V.shape
    flat = V.permute(0, 2, 1).reshape(T * k, dim)  # one GEMM: every pair of vectors
    M = (flat @ flat.T).reshape(T, k, T, k).pow(2).sum((1, 3)) / k
    return np.asarray(steps), M.numpy()


@dataclass(frozen=True)
class Shift:
    """Shift across each finished instability and over stable windows at least as long.

    ``across[i]`` is 1 − overlap for ``events[i]``; ``stable[i]`` the mean shift over its stable
    windows (NaN when none exists); ``windows[i]`` their number.
    """

    events: tuple[Instability, ...]
    across: np.ndarray
    stable: np.ndarray
    windows: np.ndarray

    @property
    def mean_across(self) -> float:
        """Mean shift across instabilities."""
        return float(np.nanmean(self.across)) if len(self.across) else math.nan

    @property
    def mean_stable(self) -> float:
        """Mean shift over the matched stable windows."""
        ok = ~np.isnan(self.stable)
        return float(self.stable[ok].mean()) if ok.any() else math.nan

    @property
    def ratio(self) -> float:
        """Mean shift across over mean shift stable, over the instabilities that have both."""
        ok = ~np.isnan(self.stable) & ~np.isnan(self.across)
        if not ok.any() or not self.stable[ok].mean() > 0:
            return math.nan
        return float(self.across[ok].mean() / self.stable[ok].mean())


def sharpening_end(run: Run | Trace) -> float:
    """The first measurement step at which λ₁ reached the threshold (∞ if it never did).

    Before it, progressive sharpening turns the top subspace fastest: not a stable baseline.
    """
    tr = trace(run)
    hit = tr.lambda_steps[np.isfinite(tr.lambda1) & (tr.lambda1 >= tr.threshold)]
    return float(hit[0]) if len(hit) else math.inf


def landscape_shift(
    run: Run,
    instabilities: list[Instability] | None = None,
    delta: float = DEFAULT_DELTA,
    series: tuple[np.ndarray, list[np.ndarray]] | None = None,
    quiet_delta: float = min(SENSITIVITY_DELTAS),
) -> Shift:
    """:class:`Shift` of a run (see the module docstring)."""
    events = find_instabilities(run, delta) if instabilities is None else instabilities
    steps, M = overlap_matrix(series if series is not None else run)
    # stable windows start after sharpening and touch no instability, not even a small one
    busy = np.array(
        [
            (e.start - 1, math.inf if e.end is None else e.end + 1)
            for e in [*events, *find_instabilities(run, quiet_delta)]
        ],
        dtype=float,
    ).reshape(-1, 2)
    first = sharpening_end(run)
    fsteps = steps.astype(float)
    done, across, stable, windows = [], [], [], []
    for ev in events:
        if ev.end is None:
            continue
        before = np.nonzero(steps <= ev.start - 1)[0]
        after = np.nonzero(steps >= ev.end + 1)[0]
        if not len(before) or not len(after):
            continue
        a, b = before[-1], after[0]
        span = steps[b] - steps[a]
        # from each measurement i, the first measurement j at least `span` steps later
        j = np.searchsorted(fsteps, fsteps + span)
        has = j < len(steps)
        i, j = np.nonzero(has)[0], j[has]
        lo, hi = fsteps[i], fsteps[j]
        touches = ((lo[:, None] <= busy[None, :, 1]) & (hi[:, None] >= busy[None, :, 0])).any(axis=1)
        ok = (lo >= first) & ~touches
        shifts = 1 - M[i[ok], j[ok]]
        done.append(ev)
        across.append(1 - M[a, b])
        stable.append(float(np.mean(shifts)) if len(shifts) else math.nan)
        windows.append(int(len(shifts)))
    return Shift(tuple(done), np.array(across), np.array(stable), np.array(windows, dtype=int))
