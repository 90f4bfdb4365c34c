"""Landscape shift ([W&R] §4): the top-k eigen-subspace turns at each instability.

overlap(Uₐ, U_b) = ‖UₐᵀU_b‖²_F / k ∈ [0, 1] (1: the same subspace). The shift across an
instability is 1 − overlap(U before its start, U after its end), with U the stored top-k
eigenvectors nearest outside the instability; it is compared with the shift over every stable
window (no instability inside) of the same length in measurement steps (*ours*: the pairing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from landscope.analysis.instabilities import DEFAULT_DELTA, Instability, find_instabilities
from landscope.curvature import subspace_overlap as _overlap
from landscope.errors import InputError
from landscope.train import Run


def subspace_overlap(U: np.ndarray | torch.Tensor, V: np.ndarray | torch.Tensor) -> float:
    """‖UᵀV‖²_F / k for orthonormal columns (NumPy arrays or tensors); see the module docstring."""
    return _overlap(torch.as_tensor(np.asarray(U)), torch.as_tensor(np.asarray(V)))


def eigenvector_series(run: Run) -> tuple[np.ndarray, list[np.ndarray]]:
    """Steps with stored eigenvectors and the ``(dim, k)`` vectors at each."""
    steps, vecs = [], []
    for s in run.eigen_steps:
        v = run.eigen(s).vectors
        if v is not None:
            steps.append(s)
            vecs.append(v)
    if not steps:
        raise InputError(f"run {run.path} stored no eigenvectors (measure.k > 0 and "
                         f"measure.save_vectors are needed)")
    return np.array(steps), vecs


def overlap_matrix(run: Run | tuple[np.ndarray, list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, M)`` with M[i, j] = overlap of the top-k subspaces at measurements i and j."""
    steps, vecs = eigenvector_series(run) if isinstance(run, Run) else run
    V = torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in vecs])  # (T, dim, k)
    k = V.shape[2]
    M = torch.einsum("adk,bdl->abkl", V, V).pow(2).sum((2, 3)) / k
    return np.asarray(steps), M.numpy()


@dataclass(frozen=True)
class Shift:
    """Shift across each finished instability and over stable windows of the same length.

    ``across[i]`` is 1 − overlap for ``events[i]``; ``stable[i]`` the mean shift over stable
    windows spanning as many measurements (NaN when none exists); ``windows[i]`` their number.
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


def landscape_shift(run: Run, instabilities: list[Instability] | None = None, delta: float = DEFAULT_DELTA,
                    series: tuple[np.ndarray, list[np.ndarray]] | None = None) -> Shift:
    """:class:`Shift` of a run (see the module docstring)."""
    events = find_instabilities(run, delta) if instabilities is None else instabilities
    steps, M = overlap_matrix(series if series is not None else run)
    busy = np.zeros(len(steps), dtype=bool)  # measurements inside any instability
    for ev in events:
        hi = ev.end if ev.end is not None else np.inf
        busy |= (steps > ev.start) & (steps < hi)
    # a window (a, b) is stable when no instability starts or runs strictly between a and b
    starts = np.array([ev.start for ev in events])
    done, across, stable, windows = [], [], [], []
    for ev in events:
        if ev.end is None:
            continue
        before = np.nonzero(steps <= ev.start)[0]
        after = np.nonzero(steps >= ev.end)[0]
        if not len(before) or not len(after):
            continue
        a, b = before[-1], after[0]
        span = b - a
        pairs = [(i, i + span) for i in range(len(steps) - span)
                 if not busy[i:i + span + 1].any()
                 and not ((starts >= steps[i]) & (starts < steps[i + span])).any()]
        shifts = [1 - M[i, j] for i, j in pairs]
        done.append(ev)
        across.append(1 - M[a, b])
        stable.append(float(np.mean(shifts)) if shifts else math.nan)
        windows.append(len(shifts))
    return Shift(tuple(done), np.array(across), np.array(stable), np.array(windows, dtype=int))
