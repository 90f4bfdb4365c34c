"""The multiplicity probe: a short Lanczos run on the complement of a converged solve.

One Krylov start vector sees one copy of an exactly repeated eigenvalue (an MSE loss's last layer
repeats each eigenvalue C times; symmetric models repeat them too), and at a loose tolerance a
single chain can also stop before it has resolved a cluster. Either way the solve converges, every
residual is small, and a wanted eigenvalue is missing. Nothing in the solve's own output shows it.

The probe looks where the solve did not: ``L`` Lanczos steps on ``P H P``, ``P`` projecting out
the returned vectors, from a fresh random start. Its top Ritz value is a Rayleigh quotient of a
direction orthogonal to every returned vector, so when it beats the k-th returned value (by more
than the tolerance) a wanted eigenvalue really is missing: a copy is never invented. It can be
missed only if the probe's Ritz value lags the complement's top eigenvalue ``μ`` by more than
``μ − λ_k``. From a random start that has probability at most ``1.648 √n · exp(−√δ (2L − 1))``
(Kuczyński & Woźniakowski 1992), ``δ`` being ``μ − λ_k`` relative to the complement's spectral
width: the larger the error a missing eigenvalue would cause, the surer it is found.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from landscope.curvature.operators import CurvatureOperator
from landscope.curvature.ritz import Which, orthogonalise, select, small_eigh

PROBE_PRODUCTS = 12  # Lanczos steps on the complement (measured cost: benchmarks/multiplicity.py)


def kth_value(values: np.ndarray, which: Which) -> float:
    """The worst of the wanted values: the one a newly found eigenvalue must beat."""
    if which == "LA":
        return float(values.min())
    if which == "SA":
        return float(values.max())
    return float(np.abs(values).min())


def beats(value: float, kth: float, which: Which, margin: float) -> bool:
    """Whether ``value`` would enter the wanted set in place of ``kth`` (by more than ``margin``)."""
    if which == "LA":
        return value > kth + margin
    if which == "SA":
        return value < kth - margin
    return abs(value) > kth + margin


def probe_complement(
    op: CurvatureOperator,
    Y: torch.Tensor,
    kth: float,
    which: Which,
    margin: float,
    length: int,
    gen: torch.Generator,
    report: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor | None, int]:
    """Look for a direction orthogonal to ``Y`` whose Ritz value beats ``kth``.

    Args:
        op: the operator.
        Y: ``(dim, k)`` orthonormal float64 columns, the converged vectors.
        kth: the k-th wanted value (:func:`kth_value`).
        which: ``"LA"``, ``"SA"`` or ``"LM"``.
        margin: how much better a value must be (the solve's ``tol · scale``).
        length: products at most.
        gen: seeds the random start.
        report: called with the number of products after each one.

    Returns:
        The unit Ritz vector that beat ``kth`` (``None`` if none did), and the products used.
        Memory: ``length + 1`` float64 vectors of ``dim`` (``length`` of them in the basis).
    """
    layout, device = op.layout, op.device
    Yt = Y.T  # a view: no copy of the k vectors
    Z = torch.empty(length, op.dim, dtype=torch.float64, device=device)
    T = np.zeros((length, length))
    w: torch.Tensor | None
    w, _ = orthogonalise(layout.normal(gen, device), Yt, layout)
    torch.div(w, layout.norm(w), out=Z[0])
    j = 0
    while j < length:
        w = None
        w = op.matvec(Z[j])
        w, _ = orthogonalise(w, Yt, layout)  # P H z: the product restricted to the complement
        w, h = orthogonalise(w, Z[: j + 1], layout)
        T[: j + 1, j] = T[j, : j + 1] = h.cpu().numpy()
        j += 1
        if report is not None:
            report(j)
        mu, S = small_eigh(T[:j, :j])
        top = select(mu, which)[0]
        if beats(float(mu[top]), kth, which, margin):
            z = Z[:j].T @ torch.as_tensor(S[:, top].copy(), device=device)
            return z / layout.norm(z), j
        beta = layout.norm(w)
        if j < length:
            if beta <= 1e-12 * max(abs(float(mu[top])), 1e-300):
                # an invariant subspace of the complement: go on from a fresh direction
                w, _ = orthogonalise(layout.normal(gen, device), Yt, layout)
                w, _ = orthogonalise(w, Z[:j], layout)
                beta = layout.norm(w)
                if beta == 0.0:
                    return None, j
            torch.div(w, beta, out=Z[j])
    return None, j
