"""Trajectory similarity across learning rates ([W&R] §4; *ours*: the three measures below).

Runs from the same initialisation and data order are each compared with a smooth low-η baseline
at every common measurement step: the cosine of their displacements cos(θ_η − θ₀, θ_base − θ₀),
the overlap of their top-k eigen-subspaces, and the agreement of their test-set predictions.
Needs runs recorded with ``measure.save_params`` (and ``save_predictions`` for agreement).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from landscope.analysis.shift import subspace_overlap
from landscope.errors import InputError
from landscope.training import Run
from landscope.training.store import EigenSnapshot


@dataclass(frozen=True)
class Similarity:
    """Similarity to the baseline, one row per run and one column per step (NaN: not measured)."""

    labels: tuple[str, ...]
    steps: np.ndarray
    cosine: np.ndarray
    overlap: np.ndarray
    agreement: np.ndarray

    def final(self, what: str = "cosine") -> np.ndarray:
        """The last finite value of each run's row of ``cosine``, ``overlap`` or ``agreement``."""
        M = getattr(self, what)
        out = np.full(M.shape[0], np.nan)
        for i, row in enumerate(M):
            ok = np.nonzero(np.isfinite(row))[0]
            if len(ok):
                out[i] = row[ok[-1]]
        return out


def _snapshots(run: Run) -> dict[int, EigenSnapshot]:
    return {s: run.eigen(s) for s in run.eigen_steps}


def trajectory_similarity(runs: list[Run], baseline: Run, labels: list[str] | None = None) -> Similarity:
    """:class:`Similarity` of ``runs`` to ``baseline`` (see the module docstring)."""
    if not runs:
        raise InputError("trajectory_similarity needs at least one run")
    labels = labels or [f"η={r.config.optimizer.lr:g}" if r.config else str(r.path) for r in runs]
    base = _snapshots(baseline)
    first = base[min(base)] if base else None
    if first is None or first.params is None:
        raise InputError(f"baseline {baseline.path} has no stored parameters (measure.save_params)")
    steps = np.array(sorted(base))
    theta0 = first.params.astype(float)
    C, O, A = (np.full((len(runs), len(steps)), np.nan) for _ in range(3))
    for i, run in enumerate(runs):
        snaps = _snapshots(run)
        for j, s in enumerate(steps):
            a, b = snaps.get(int(s)), base[int(s)]
            if a is None or a.params is None or b.params is None:
                continue
            da, db = a.params.astype(float) - theta0, b.params.astype(float) - theta0
            na, nb = np.linalg.norm(da), np.linalg.norm(db)
            C[i, j] = float(da @ db / (na * nb)) if na > 0 and nb > 0 else (1.0 if na == nb else 0.0)
            if a.vectors is not None and b.vectors is not None:
                O[i, j] = subspace_overlap(a.vectors, b.vectors)
            if a.test_predictions is not None and b.test_predictions is not None:
                A[i, j] = float(np.mean(a.test_predictions == b.test_predictions))
    return Similarity(tuple(labels), steps, C, O, A)
