"""Frozen result types of the curvature algorithms.

Results are values, never tuples: every field is named, and a result cannot be modified after an
algorithm returns it, so a stored measurement is exactly what was computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Which = Literal["LA", "SA", "LM"]  # largest algebraic, smallest algebraic, largest magnitude


@dataclass(frozen=True)
class EigenResult:
    """Eigenpairs of a curvature operator.

    Attributes:
        values: (k,) float64, sorted descending (also for ``which="SA"``).
        vectors: (dim, k) float64, orthonormal columns, ``vectors[:, i]`` belongs to
            ``values[i]``; ``None`` when the solver was asked not to return them.
        residuals: (k,) float64, ``‖H v_i − λ_i v_i‖``: from the Krylov relation of the products
            actually computed (exact up to float64 rounding for float64 operators; for lower
            precision plus the rounding measured by one explicit product), or measured with ``k``
            explicit products (``confirm=True``). See :func:`eigenpairs`.
        n_matvecs: operator applications used, the confirming ones included.
        converged: every residual is within ``tol · scale``.
        tol: the relative tolerance asked for.
        scale: the eigenvalue magnitude the tolerance is relative to (largest |Ritz value| seen).
        which: ``"LA"``, ``"SA"`` or ``"LM"``.
        method: ``"lanczos"``, ``"power"`` or ``"dense"``.
        n_restarts: how often the Krylov basis was compressed (thick restart).
        overlap: with the previous subspace (``EigenTracker`` only), ``‖UₐᵀU_b‖²_F / k``.
        rounding: what the explicit product added to every residual (below float64: the
            product's own rounding, in the units of ``residuals``); 0 when none was measured.
    """

    values: torch.Tensor
    vectors: torch.Tensor | None
    residuals: torch.Tensor
    n_matvecs: int
    converged: bool
    tol: float
    scale: float
    which: Which
    method: str
    n_restarts: int = 0
    overlap: float | None = None
    rounding: float = 0.0

    @property
    def solver_converged(self) -> bool:
        """The solver's own residuals met ``tol``: ``converged`` before the measured rounding.

        It differs from ``converged`` only where a low-precision product's rounding is itself
        above ``tol · scale``: the pairs are as good as the operator can tell, not verified.
        """
        bound = self.tol * max(self.scale, torch.finfo(torch.float64).tiny)
        return bool((self.residuals - self.rounding <= bound).all())

    @property
    def k(self) -> int:
        """Number of eigenpairs returned."""
        return int(self.values.numel())

    @property
    def relative_residuals(self) -> torch.Tensor:
        """Residuals divided by ``scale``: what ``tol`` is compared with."""
        return self.residuals / max(self.scale, torch.finfo(torch.float64).tiny)


@dataclass(frozen=True)
class Density:
    """A spectral density estimated by stochastic Lanczos quadrature (SLQ).

    Attributes:
        grid: (n_grid,) eigenvalue axis.
        density: (n_grid,) smoothed density on ``grid``; integrates to ≈ 1.
        nodes: (n_probes, n_steps) Gauss quadrature nodes (Ritz values) per probe.
        weights: (n_probes, n_steps) quadrature weights per probe; each row sums to 1.
        sigma: width of the Gaussian kernel used for smoothing.
        n_matvecs: operator applications used.
    """

    grid: torch.Tensor
    density: torch.Tensor
    nodes: torch.Tensor
    weights: torch.Tensor
    sigma: float
    n_matvecs: int

    def moment(self, p: int) -> float:
        """Estimate of ``trace(Hᵖ) / dim`` from the quadrature (exact in expectation, p < 2·n_steps)."""
        return float((self.weights * self.nodes**p).sum(dim=1).mean())


@dataclass(frozen=True)
class TraceEstimate:
    """A Hutchinson estimate of ``trace(H)``.

    Attributes:
        trace: the mean of the probe estimates ``zᵀHz``.
        stderr: standard error of that mean (sample std / √n_probes).
        samples: (n_probes,) the per-probe estimates.
        n_matvecs: operator applications used.
    """

    trace: float
    stderr: float
    samples: torch.Tensor
    n_matvecs: int
