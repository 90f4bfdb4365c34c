"""Outliers and bulk of the Hessian spectrum; the model's effective parameters ([W&R] §3).

*Ours*: the outlier count k* is the position of the largest log-gap, argmax over i of
log(λᵢ/λᵢ₊₁) among positive eigenvalues, searched within the first half of the top-m values given
(the tail of a truncated spectrum compares bulk values with each other, and its small values make
large but meaningless ratios). With m ≥ 3C eigenvalues for C classes, k* ≈ C (or C − 1) is the
usual finding for cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from landscope.errors import InputError


def _descending(values: np.ndarray | torch.Tensor | list[float]) -> np.ndarray:
    v = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=float)
    if v.ndim != 1 or len(v) < 2:
        raise InputError(f"need at least two eigenvalues in a 1-D array, got shape {v.shape}")
    if np.any(np.diff(v) > 1e-12 * np.abs(v).max()):
        raise InputError("eigenvalues must be sorted in descending order (as EigenResult.values are)")
    return v


@dataclass(frozen=True)
class Spectrum:
    """Outlier count ``k_star``, the log-gap that separates them, and the values used."""

    values: np.ndarray
    k_star: int
    log_gap: float  # log(λ_{k*} / λ_{k*+1})

    @property
    def outliers(self) -> np.ndarray:
        """The outlier eigenvalues."""
        return self.values[: self.k_star]

    @property
    def bulk(self) -> np.ndarray:
        """The rest of the given eigenvalues."""
        return self.values[self.k_star :]


def spectrum(values: np.ndarray | torch.Tensor | list[float]) -> Spectrum:
    """:class:`Spectrum` of the top-m eigenvalues (descending)."""
    v = _descending(values)
    pos = v[v > 0]
    if len(pos) < 2:
        return Spectrum(v, len(pos), float("nan"))
    gaps = np.log(pos[:-1] / pos[1:])
    search = gaps[: max(1, len(v) // 2)]
    i = int(np.argmax(search))
    return Spectrum(v, i + 1, float(search[i]))


def outlier_count(values: np.ndarray | torch.Tensor | list[float]) -> int:
    """k*: the number of outlier eigenvalues among the descending top-m ``values``."""
    return spectrum(values).k_star


def coordinates(vector: np.ndarray | torch.Tensor, U: np.ndarray | torch.Tensor) -> np.ndarray:
    """Coordinates ``Uᵀx`` of a vector in an orthonormal basis (columns of ``U``)."""
    x = np.asarray(vector, dtype=float).reshape(-1)
    U = np.asarray(U, dtype=float)
    if U.ndim == 1:
        U = U[:, None]
    if U.shape[0] != x.shape[0]:
        raise InputError(f"the basis has {U.shape[0]} rows but the vector has {x.shape[0]} entries")
    return U.T @ x


def fraction_in_subspace(vector: np.ndarray | torch.Tensor, U: np.ndarray | torch.Tensor) -> float:
    """‖Uᵀx‖² / ‖x‖²: how much of ``x`` (the gradient, θ − θ₀) lies in span(U)."""
    x = np.asarray(vector, dtype=float).reshape(-1)
    n = float(x @ x)
    return float(np.sum(coordinates(x, U) ** 2) / n) if n > 0 else float("nan")


@dataclass(frozen=True)
class EffectiveParameters:
    """θ − θ₀ and the gradient expressed in the top-k* eigenbasis (the effective parameters)."""

    k_star: int
    displacement: np.ndarray  # Uᵀ(θ − θ₀)
    displacement_fraction: float  # ‖Uᵀ(θ − θ₀)‖² / ‖θ − θ₀‖²
    gradient: np.ndarray | None  # Uᵀg
    gradient_fraction: float | None


def effective_parameters(
    values: np.ndarray,
    vectors: np.ndarray,
    theta: np.ndarray,
    theta0: np.ndarray,
    gradient: np.ndarray | None = None,
) -> EffectiveParameters:
    """The effective parameters at one measurement (top eigenpairs, θ, θ₀ and optionally g)."""
    k = outlier_count(values)
    U = np.asarray(vectors)[:, :k]
    d = np.asarray(theta, dtype=float) - np.asarray(theta0, dtype=float)
    return EffectiveParameters(
        k,
        coordinates(d, U),
        fraction_in_subspace(d, U),
        None if gradient is None else coordinates(gradient, U),
        None if gradient is None else fraction_in_subspace(gradient, U),
    )
