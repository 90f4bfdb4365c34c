"""Spectral density by stochastic Lanczos quadrature (SLQ), and Hutchinson's trace estimator.

SLQ (Lin, Saad & Yang 2016; Ghorbani et al. 2019): for a random unit probe ``z``, ``m`` Lanczos
steps from ``z`` give a Gauss quadrature (nodes = Ritz values, weights = squared first components
of the Ritz vectors) of the spectral measure seen from ``z``; averaged over probes it estimates the
density of eigenvalues, and ``Σ w θᵖ`` is an unbiased estimate of ``trace(Hᵖ) / dim`` for
``p < 2m``. Probes are Rademacher vectors scaled to unit norm, drawn from a seeded
``torch.Generator``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from landscope.checks import positive_int
from landscope.curvature.operators import CurvatureOperator
from landscope.curvature.results import Density, TraceEstimate
from landscope.curvature.ritz import check_operator, orthogonalise, small_eigh, whole_only
from landscope.errors import InputError


def rademacher(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Entries ±1 with equal probability, float64, drawn on the CPU."""
    return torch.randint(0, 2, shape, generator=generator, dtype=torch.int64).to(torch.float64) * 2 - 1


def lanczos_quadrature(
    op: CurvatureOperator, z: torch.Tensor, n_steps: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Gauss quadrature nodes and weights of ``op``'s spectral measure seen from unit vector ``z``.

    Full reorthogonalisation in float64; stops early (fewer nodes) if the Krylov space is invariant.
    Returns ``(nodes, weights, n_matvecs)``.
    """
    n = op.dim
    steps = min(n_steps, n)
    Q = torch.zeros(steps, n, dtype=torch.float64, device=z.device)
    alpha, beta = [], []
    Q[0] = z / z.norm()
    for j in range(steps):
        w = op.matvec(Q[j])
        w, h = orthogonalise(w, Q[: j + 1], op.layout)
        alpha.append(float(h[j]))
        b = float(w.norm())
        if j + 1 == steps or b <= 1e-12 * max(abs(a) for a in alpha):
            break
        beta.append(b)
        Q[j + 1] = w / b
    m = len(alpha)
    T = np.diag(alpha) + np.diag(beta[: m - 1], 1) + np.diag(beta[: m - 1], -1)
    nodes, vecs = small_eigh(T)
    return nodes, vecs[0] ** 2, m


def spectral_density(
    op: CurvatureOperator | torch.Tensor,
    n_probes: int = 8,
    n_steps: int = 80,
    seed: int = 0,
    n_grid: int = 1000,
    sigma: float | None = None,
    grid: torch.Tensor | None = None,
) -> Density:
    """Eigenvalue density of ``op`` by SLQ, smoothed with a Gaussian kernel.

    Args:
        op: a :class:`CurvatureOperator` or square symmetric tensor.
        n_probes: random probes averaged.
        n_steps: Lanczos steps per probe (nodes per probe); moments up to ``2·n_steps − 1`` exact
            in expectation.
        seed: seeds the probes.
        n_grid: points of the default grid, which spans the nodes ± 5σ.
        sigma: kernel width (default: 1% of the spread of the nodes).
        grid: evaluate the density on this grid instead.
    """
    op = check_operator(op)
    whole_only(op, "spectral_density")
    n_probes = positive_int("n_probes", n_probes)
    n_steps = positive_int("n_steps", n_steps)
    gen = torch.Generator().manual_seed(int(seed))
    all_nodes, all_weights, n_matvecs = [], [], 0
    for _ in range(n_probes):
        z = rademacher((op.dim,), gen).to(op.device)
        nodes, weights, m = lanczos_quadrature(op, z, n_steps)
        all_nodes.append(nodes)
        all_weights.append(weights)
        n_matvecs += m
    width = max(len(a) for a in all_nodes)
    # Probes that stopped early get zero-weight padding, so every row still sums to one.
    nodes = np.zeros((n_probes, width))
    weights = np.zeros((n_probes, width))
    for i, (a, w) in enumerate(zip(all_nodes, all_weights, strict=True)):
        nodes[i, : len(a)], weights[i, : len(w)] = a, w
        nodes[i, len(a) :] = a[-1]
    lo, hi = float(nodes.min()), float(nodes.max())
    if sigma is None:
        sigma = 0.01 * max(hi - lo, abs(hi), 1e-12)
    if not sigma > 0:
        raise InputError(f"sigma must be positive, got {sigma!r}")
    if grid is None:
        grid_np = np.linspace(lo - 5 * sigma, hi + 5 * sigma, n_grid)
    else:
        grid_np = grid.detach().cpu().double().numpy()
    kernel = np.exp(-0.5 * ((grid_np[:, None] - nodes.reshape(-1)[None, :]) / sigma) ** 2)
    kernel /= sigma * math.sqrt(2 * math.pi)
    density = kernel @ weights.reshape(-1) / n_probes
    return Density(
        grid=torch.as_tensor(grid_np),
        density=torch.as_tensor(density),
        nodes=torch.as_tensor(nodes),
        weights=torch.as_tensor(weights),
        sigma=float(sigma),
        n_matvecs=n_matvecs,
    )


def hutchinson_trace(
    op: CurvatureOperator | torch.Tensor, n_probes: int = 100, seed: int = 0, batch: int = 16
) -> TraceEstimate:
    """``trace(H)`` as the mean of ``zᵀHz`` over Rademacher probes ``z``, with its standard error.

    Probes are applied ``batch`` at a time through ``op.matmat`` (batched tangents).
    """
    op = check_operator(op)
    whole_only(op, "hutchinson_trace")
    n_probes = positive_int("n_probes", n_probes)
    batch = positive_int("batch", batch)
    gen = torch.Generator().manual_seed(int(seed))
    samples = []
    for s in range(0, n_probes, batch):
        b = min(batch, n_probes - s)
        Z = rademacher((op.dim, b), gen).to(op.device)
        samples.append((Z * op.matmat(Z)).sum(dim=0).cpu())
    est = torch.cat(samples)
    stderr = float(est.std(unbiased=True) / math.sqrt(n_probes)) if n_probes > 1 else math.inf
    return TraceEstimate(trace=float(est.mean()), stderr=stderr, samples=est, n_matvecs=n_probes)
