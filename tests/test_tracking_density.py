"""Warm-started tracking, subspace overlap, SLQ spectral density and Hutchinson's trace."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from reference import random_orthogonal, with_spectrum

import landscope as ls

# -- subspace_overlap ---------------------------------------------------------------------------


def _orthonormal(n: int, k: int, seed: int) -> torch.Tensor:
    return random_orthogonal(n, seed)[:, :k]


def test_overlap_with_itself_and_rotations_is_one():
    U = _orthonormal(20, 4, seed=0)
    assert ls.subspace_overlap(U, U) == pytest.approx(1.0, abs=1e-12)
    R = random_orthogonal(4, seed=1)
    assert ls.subspace_overlap(U, U @ R) == pytest.approx(1.0, abs=1e-12)
    assert ls.subspace_overlap(U @ R, U) == pytest.approx(1.0, abs=1e-12)
    assert ls.subspace_overlap(U, -U) == pytest.approx(1.0, abs=1e-12)


def test_overlap_of_orthogonal_subspaces_is_zero():
    Q = random_orthogonal(20, seed=2)
    assert ls.subspace_overlap(Q[:, :3], Q[:, 3:6]) == pytest.approx(0.0, abs=1e-12)
    assert ls.subspace_overlap(Q[:, 0], Q[:, 1]) == pytest.approx(0.0, abs=1e-12)  # 1-D inputs


def test_overlap_partial_and_mixed_dtypes():
    Q = random_orthogonal(10, seed=3)
    U = Q[:, :2]
    V = torch.stack([Q[:, 0], (Q[:, 1] + Q[:, 2]) / math.sqrt(2)], dim=1)
    assert ls.subspace_overlap(U, V) == pytest.approx(0.75, abs=1e-12)  # (1 + ½) / 2
    assert ls.subspace_overlap(U.float(), V) == pytest.approx(0.75, abs=1e-6)
    # different k: the smaller one divides, so a subspace inside a bigger one overlaps fully
    assert ls.subspace_overlap(Q[:, :1], Q[:, :3]) == pytest.approx(1.0, abs=1e-12)


def test_overlap_rejects_mismatched_rows():
    with pytest.raises(ls.InputError, match="10.*11|11.*10"):
        ls.subspace_overlap(torch.zeros(10, 2), torch.zeros(11, 2))


# -- EigenTracker -------------------------------------------------------------------------------


def _moving_operators(n_steps: int = 5, dt: float = 1e-3) -> list[ls.DenseOperator]:
    g = torch.Generator().manual_seed(4)
    bulk = torch.rand(95, generator=g, dtype=torch.float64) * 8
    lam = torch.cat([torch.tensor([20.0, 18.0, 16.0, 14.0, 12.0], dtype=torch.float64), bulk])
    A, _ = with_spectrum(lam, seed=5)
    E = torch.randn(100, 100, generator=g, dtype=torch.float64)
    E = (E + E.T) / 2
    E = E / torch.linalg.matrix_norm(E, ord=2)
    return [ls.DenseOperator(A + (i * dt) * 20 * E) for i in range(n_steps)]


def test_tracker_matches_cold_solves_with_fewer_matvecs():
    k = 3
    ops = _moving_operators()
    trk = ls.EigenTracker(k=k, tol=1e-6)
    prev_vectors = None
    for i, op in enumerate(ops):
        res = trk.update(op)
        cold = ls.eigenpairs(op, k=k, tol=1e-6)
        exact = torch.linalg.eigh(op.matrix)
        assert torch.allclose(res.values, cold.values, rtol=1e-6, atol=0)
        assert torch.allclose(res.values, exact.eigenvalues.flip(0)[:k], rtol=1e-6, atol=0)
        assert ls.subspace_overlap(res.vectors, cold.vectors) >= 1 - 1e-6
        assert res.converged
        if i == 0:
            assert res.overlap is None
            assert res.n_matvecs == cold.n_matvecs  # nothing to start from: a cold solve
        else:
            expected = ls.subspace_overlap(prev_vectors, res.vectors)
            assert res.overlap == pytest.approx(expected, abs=1e-12)
            assert res.overlap >= 0.999  # tiny changes
            assert res.n_matvecs < cold.n_matvecs, (i, res.n_matvecs, cold.n_matvecs)
        prev_vectors = res.vectors
    assert trk.n_updates == len(ops)


def test_tracker_overlap_sees_a_rotation():
    """A large change of the operator shows as a small overlap."""
    A, Q = with_spectrum(torch.cat([torch.tensor([10.0, 9.0]), torch.linspace(0, 1, 28)]), seed=6)
    B = Q[:, [2, 3]] @ torch.diag(torch.tensor([10.0, 9.0], dtype=torch.float64)) @ Q[:, [2, 3]].T
    B = B + Q[:, 4:] @ torch.diag(torch.linspace(0, 1, 26, dtype=torch.float64)) @ Q[:, 4:].T
    trk = ls.EigenTracker(k=2)
    trk.update(A)
    res = trk.update(ls.DenseOperator(0.5 * (B + B.T)))
    assert res.overlap is not None and res.overlap <= 1e-8
    assert torch.allclose(res.values, torch.tensor([10.0, 9.0], dtype=torch.float64), rtol=1e-6)


def test_tracker_reset_and_determinism():
    ops = _moving_operators(n_steps=3)
    a = [ls.EigenTracker(k=2, seed=3).update(op) for op in ops[:1]]
    trk1, trk2 = ls.EigenTracker(k=2, seed=3), ls.EigenTracker(k=2, seed=3)
    r1 = [trk1.update(op) for op in ops]
    r2 = [trk2.update(op) for op in ops]
    for x, y in zip(r1, r2, strict=True):
        assert torch.equal(x.values, y.values) and torch.equal(x.vectors, y.vectors)
        assert x.n_matvecs == y.n_matvecs
    assert torch.equal(a[0].vectors, r1[0].vectors)
    trk1.reset()
    again = trk1.update(ops[0])
    assert again.overlap is None


def test_tracker_on_training_hessian(mlp_case, ce):
    """Small SGD steps between measurements: the live operator is re-solved warm."""
    c = mlp_case
    op = ls.HessianOperator(c.model, ce, (c.X, c.y))
    trk = ls.EigenTracker(k=2, tol=1e-6)
    opt = torch.optim.SGD(c.model.parameters(), lr=1e-3)
    first = trk.update(op)
    for _ in range(2):
        opt.zero_grad()
        ce(c.model(c.X), c.y).backward()
        opt.step()
        res = trk.update(op)
        cold = ls.eigenpairs(op, k=2)
        assert torch.allclose(res.values, cold.values, rtol=1e-6, atol=0)
        assert res.overlap >= 0.999
        assert res.n_matvecs < cold.n_matvecs
    assert first.overlap is None


@pytest.mark.parametrize(
    "kw,bad", [(dict(k=0), "0"), (dict(which="XX"), "XX"), (dict(random_part=1.5), "1.5")]
)
def test_tracker_bad_arguments(kw, bad):
    with pytest.raises(ls.InputError, match=bad):
        ls.EigenTracker(**kw)


# -- spectral density (SLQ) ---------------------------------------------------------------------


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """Trapezoid rule (numpy ≥ 1.24 has no common name for it: trapz is gone in 2.x)."""
    return float(((y[1:] + y[:-1]) / 2 * np.diff(x)).sum())


def _per_probe_moment(dens, p: int) -> np.ndarray:
    return (dens.weights.numpy() * dens.nodes.numpy() ** p).sum(axis=1)


def test_density_integrates_to_one_and_matches_moments(mlp_case, ce, mlp_ce_H):
    op = ls.HessianOperator(mlp_case.model, ce, (mlp_case.X, mlp_case.y))
    n_probes, n_steps = 16, 20
    dens = ls.spectral_density(op, n_probes=n_probes, n_steps=n_steps, seed=0)
    assert dens.nodes.shape == dens.weights.shape == (n_probes, n_steps)
    assert np.allclose(dens.weights.sum(dim=1).numpy(), 1.0, atol=1e-12)
    assert dens.moment(0) == pytest.approx(1.0, abs=1e-12)
    integral = _trapezoid(dens.density.numpy(), dens.grid.numpy())
    assert abs(integral - 1.0) <= 1e-3
    evals = torch.linalg.eigvalsh(mlp_ce_H)
    span = float(evals.max() - evals.min())
    assert float(dens.nodes.min()) >= float(evals.min()) - 1e-8 * span
    assert float(dens.nodes.max()) <= float(evals.max()) + 1e-8 * span
    dim = op.dim
    for p in (1, 2):
        exact = float(torch.trace(torch.linalg.matrix_power(mlp_ce_H, p))) / dim
        per_probe = _per_probe_moment(dens, p)
        assert dens.moment(p) == pytest.approx(per_probe.mean(), rel=1e-12)
        stderr = per_probe.std(ddof=1) / math.sqrt(n_probes)
        assert stderr > 0
        assert abs(dens.moment(p) - exact) <= 4 * stderr, (p, dens.moment(p), exact, stderr)
    assert dens.n_matvecs == n_probes * n_steps


def test_density_is_deterministic_for_a_seed(mlp_case, ce):
    op = ls.HessianOperator(mlp_case.model, ce, (mlp_case.X, mlp_case.y))
    a = ls.spectral_density(op, n_probes=3, n_steps=10, seed=5)
    b = ls.spectral_density(op, n_probes=3, n_steps=10, seed=5)
    c = ls.spectral_density(op, n_probes=3, n_steps=10, seed=6)
    assert torch.equal(a.density, b.density) and torch.equal(a.nodes, b.nodes)
    assert not torch.equal(a.nodes, c.nodes)


def test_density_of_two_cluster_spectrum():
    """Eigenvalues 1 (×30) and 5 (×10): nodes are exactly {1, 5}; mass ≈ 3/4 and 1/4."""
    lam = torch.tensor([1.0] * 30 + [5.0] * 10, dtype=torch.float64)
    A, _ = with_spectrum(lam, seed=7)
    n_probes = 20
    dens = ls.spectral_density(ls.DenseOperator(A), n_probes=n_probes, n_steps=15, seed=1)
    w = dens.weights.numpy()
    nodes = dens.nodes.numpy()
    live = w > 1e-12
    assert np.all(np.minimum(abs(nodes[live] - 1), abs(nodes[live] - 5)) <= 1e-8)
    mass5 = (w * (abs(nodes - 5) <= 1e-6)).sum(axis=1)  # per probe
    stderr = mass5.std(ddof=1) / math.sqrt(n_probes)
    assert abs(mass5.mean() - 0.25) <= 4 * stderr
    grid, d = dens.grid.numpy(), dens.density.numpy()
    upper = grid >= 3
    assert _trapezoid(d[upper], grid[upper]) == pytest.approx(mass5.mean(), abs=1e-3)
    assert dens.moment(1) == pytest.approx(1 + 4 * mass5.mean(), rel=1e-10)
    assert dens.n_matvecs <= 2 * n_probes  # the Krylov space is invariant after 2 steps


@pytest.mark.parametrize(
    "kw,bad",
    [(dict(n_probes=0), "n_probes.*0"), (dict(n_steps=-1), "n_steps.*-1"), (dict(sigma=-0.5), "sigma.*-0.5")],
)
def test_density_bad_arguments(kw, bad):
    with pytest.raises(ls.InputError, match=bad):
        ls.spectral_density(torch.eye(4, dtype=torch.float64) * 2, **kw)


# -- Hutchinson ---------------------------------------------------------------------------------


def test_hutchinson_within_three_standard_errors(case, loss_fn, dense_H):
    op = ls.HessianOperator(case.model, loss_fn, (case.X, case.y))
    n = 100
    est = ls.hutchinson_trace(op, n_probes=n, seed=0)
    exact = float(torch.trace(dense_H))
    assert est.samples.shape == (n,)
    assert est.n_matvecs == n
    assert est.trace == pytest.approx(float(est.samples.mean()), rel=1e-12)
    assert est.stderr == pytest.approx(float(est.samples.std(unbiased=True)) / math.sqrt(n), rel=1e-12)
    assert est.stderr > 0
    assert abs(est.trace - exact) <= 3 * est.stderr, (est.trace, exact, est.stderr)
    again = ls.hutchinson_trace(op, n_probes=n, seed=0)
    assert torch.equal(est.samples, again.samples)


def test_hutchinson_exact_for_diagonal():
    """Rademacher probes: zᵀDz = trace(D) for every z, so the estimate is exact with zero error."""
    D = torch.diag(torch.linspace(-1, 3, 17, dtype=torch.float64))
    est = ls.hutchinson_trace(ls.DenseOperator(D), n_probes=10, seed=2, batch=3)
    assert est.trace == pytest.approx(float(torch.trace(D)), abs=1e-12)
    assert est.stderr == pytest.approx(0.0, abs=1e-12)


def test_hutchinson_bad_arguments():
    with pytest.raises(ls.InputError, match="n_probes.*0"):
        ls.hutchinson_trace(torch.eye(3, dtype=torch.float64), n_probes=0)
