"""``ls.eigenpairs`` (Lanczos, power, dense) against ``torch.linalg.eigh`` and closed forms (§9.2)."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from reference import dense_hessian, max_rel_err, with_spectrum

import landscope as ls

VALUE_RTOL = 1e-6
OVERLAP = 1 - 1e-6


def reference_top(H: torch.Tensor, k: int, which: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The k wanted eigenpairs of a dense symmetric matrix, values sorted descending."""
    evals, evecs = torch.linalg.eigh(H)
    if which == "LA":
        idx = torch.argsort(evals, descending=True)[:k]
    elif which == "SA":
        idx = torch.argsort(evals)[:k]
    else:
        idx = torch.argsort(evals.abs(), descending=True)[:k]
    order = torch.argsort(evals[idx], descending=True)
    return evals[idx][order], evecs[:, idx][:, order]


def assert_vectors_match(
    vectors: torch.Tensor,
    values: torch.Tensor,
    H: torch.Tensor,
    min_overlap: float = OVERLAP,
    cluster_rtol: float = 1e-4,
) -> None:
    """Each returned vector lies in the reference eigenspace of its eigenvalue.

    The eigenspace is spanned by the reference eigenvectors whose eigenvalues are within
    ``cluster_rtol · max|λ|`` of the returned value: ``|⟨v_i, u_i⟩|²`` for a simple eigenvalue,
    the subspace overlap ``‖Uᵀv_i‖²`` for a cluster. Also: orthonormal columns.
    """
    evals, evecs = torch.linalg.eigh(H)
    scale = evals.abs().max()
    k = vectors.shape[1]
    assert torch.allclose(vectors.T @ vectors, torch.eye(k, dtype=vectors.dtype), atol=1e-8)
    for i in range(k):
        near = (evals - values[i]).abs() <= cluster_rtol * scale
        assert near.any(), f"value {values[i]} is no eigenvalue"
        U = evecs[:, near]
        ov = float(((U.T @ vectors[:, i]) ** 2).sum())
        assert ov >= min_overlap, f"pair {i} (λ={float(values[i]):.6g}): overlap {ov}"


def explicit_residuals(op, res) -> torch.Tensor:
    V = res.vectors
    return (op.matmat(V) - V * res.values).norm(dim=0)


def _gap_ok(H: torch.Tensor, k: int, which: str) -> None:
    """Precondition of the value checks: the k-th wanted eigenvalue is separated from the next."""
    vals, _ = reference_top(H, k + 1, which)
    key = vals.abs() if which == "LM" else vals
    key = key.sort(descending=which != "SA").values
    assert abs(float(key[k - 1] - key[k])) >= 1e-3 * float(vals.abs().max())


# -- against eigh on real Hessians --------------------------------------------------------------


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_lanczos_matches_eigh(case, loss_fn, dense_H, which):
    k = 4
    _gap_ok(dense_H, k, which)
    op = ls.HessianOperator(case.model, loss_fn, (case.X, case.y))
    res = ls.eigenpairs(op, k=k, which=which, tol=1e-6)
    ref_vals, _ = reference_top(dense_H, k, which)
    assert res.values.dtype == torch.float64 and res.vectors.dtype == torch.float64
    assert res.values.shape == (k,) and res.vectors.shape == (case.dim, k)
    assert torch.all(res.values[:-1] >= res.values[1:]), "values must be sorted descending"
    assert torch.allclose(res.values, ref_vals, rtol=VALUE_RTOL, atol=0)
    assert_vectors_match(res.vectors, res.values, dense_H)
    assert res.converged and res.which == which and res.method == "lanczos"
    assert torch.all(res.residuals <= res.tol * res.scale)
    assert res.scale >= float(res.values.abs().max())


@pytest.mark.parametrize("which", ["LA", "LM"])
def test_power_matches_eigh(case, loss_fn, dense_H, which):
    k, tol = 2, 1e-7
    op = ls.HessianOperator(case.model, loss_fn, (case.X, case.y))
    res = ls.eigenpairs(op, k=k, which=which, method="power", tol=tol)
    ref_vals, _ = reference_top(dense_H, k, which)
    scale = float(ref_vals.abs().max())
    assert res.method == "power" and res.converged
    # a residual r bounds the distance to the nearest eigenvalue by r (Bauer–Fike) and the
    # eigenvector angle by r / gap; with deflation allow an order of magnitude on top.
    assert (res.values - ref_vals).abs().max() <= 10 * tol * scale
    assert_vectors_match(res.vectors, res.values, dense_H, min_overlap=1 - 1e-6)
    assert torch.all(res.residuals <= tol * res.scale)
    assert torch.all(explicit_residuals(op, res) <= 10 * tol * scale)


def test_power_la_on_indefinite_operator_gives_largest_algebraic_or_refuses():
    """``which="LA"`` must not silently return the largest-magnitude (negative) eigenvalue."""
    A = torch.diag(torch.tensor([-5.0, 3.0, 1.0, 0.5], dtype=torch.float64))
    try:
        res = ls.eigenpairs(ls.DenseOperator(A), k=1, which="LA", method="power")
    except ls.InputError:
        return
    assert float(res.values[0]) == pytest.approx(3.0, rel=1e-5)


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_dense_method_matches_eigh(case, loss_fn, dense_H, which):
    op = ls.HessianOperator(case.model, loss_fn, (case.X, case.y))
    res = ls.eigenpairs(op, k=5, which=which, method="dense")
    ref_vals, _ = reference_top(dense_H, 5, which)
    assert res.method == "dense" and res.converged
    assert (res.values - ref_vals).abs().max() <= 1e-12 * ref_vals.abs().max()
    assert_vectors_match(res.vectors, res.values, dense_H, min_overlap=1 - 1e-12)


def test_float32_operator_gives_float64_results(mlp_case, ce, mlp_ce_H):
    model32 = mlp_case.model.float()
    op = ls.HessianOperator(model32, ce, (mlp_case.X.float(), mlp_case.y))
    res = ls.eigenpairs(op, k=3, tol=1e-5)
    assert res.values.dtype == torch.float64 and res.vectors.dtype == torch.float64
    ref, _ = reference_top(mlp_ce_H, 3, "LA")
    assert torch.allclose(res.values, ref, rtol=1e-4, atol=0)


# -- closed forms -------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_distinct_known_spectrum(which):
    lam = torch.cat([torch.tensor([9.0, 8.0, 7.0, -8.5, -6.0]), torch.linspace(-3, 3, 55)])
    A, Q = with_spectrum(lam, seed=1)
    res = ls.eigenpairs(ls.DenseOperator(A), k=3, which=which)
    expected = {"LA": [9.0, 8.0, 7.0], "SA": [-8.5, -6.0, -3.0], "LM": [9.0, 8.0, -8.5]}
    exp = torch.tensor(sorted(expected[which], reverse=True), dtype=torch.float64)
    assert torch.allclose(res.values, exp, rtol=VALUE_RTOL, atol=0)
    assert_vectors_match(res.vectors, res.values, A)


@pytest.mark.parametrize("small_basis", [False, True])
@pytest.mark.parametrize("k", [1, 4, 6])
def test_repeated_eigenvalues(k, small_basis):
    """With check_multiplicity, every copy is found: 10 three times, 5 twice."""
    lam = torch.cat(
        [torch.tensor([10.0, 10.0, 10.0, 7.0, 5.0, 5.0, 3.0]), torch.linspace(0.0, 2.0, 43)]
    ).double()
    A, _ = with_spectrum(lam, seed=2)
    res = ls.eigenpairs(
        ls.DenseOperator(A), k=k, check_multiplicity=True, max_basis=k + 3 if small_basis else None
    )
    exp = lam.sort(descending=True).values[:k]
    assert torch.allclose(res.values, exp, rtol=VALUE_RTOL, atol=0), res.values
    assert_vectors_match(res.vectors, res.values, A)


def test_repeated_eigenvalues_sa():
    lam = torch.cat([torch.tensor([-4.0, -4.0, -1.0]), torch.linspace(0.0, 3.0, 37)])
    A, _ = with_spectrum(lam, seed=3)
    res = ls.eigenpairs(ls.DenseOperator(A), k=3, which="SA")
    assert torch.allclose(
        res.values, torch.tensor([-1.0, -4.0, -4.0], dtype=torch.float64), rtol=VALUE_RTOL, atol=0
    ), res.values


@pytest.mark.parametrize("which", ["LA", "LM"])
def test_low_rank_k_larger_than_rank(which):
    lam = torch.tensor([5.0, 3.0, 2.0] + [0.0] * 27)
    A, Q = with_spectrum(lam, seed=4)
    res = ls.eigenpairs(ls.DenseOperator(A), k=5, which=which)
    assert torch.allclose(res.values[:3], lam[:3].double(), rtol=VALUE_RTOL, atol=0)
    assert res.values[3:].abs().max() <= 1e-10 * 5
    assert_vectors_match(res.vectors, res.values, A)
    # the extra vectors lie in the null space
    assert (A @ res.vectors[:, 3:]).norm(dim=0).max() <= 1e-8
    assert res.converged


def test_low_rank_sa_and_rank_one():
    u = torch.randn(25, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    A = torch.outer(u, u)
    res = ls.eigenpairs(A, k=2, which="SA", check_multiplicity=True)  # a plain tensor is accepted
    assert res.values.abs().max() <= 1e-10 * float(u @ u)
    res = ls.eigenpairs(A, k=3, check_multiplicity=True)
    assert float(res.values[0]) == pytest.approx(float(u @ u), rel=1e-10)
    assert res.values[1:].abs().max() <= 1e-10 * float(u @ u)


def test_linear_regression_closed_form():
    """½ mean ‖Xw + b − y‖²: the Hessian is exactly [X, 1]ᵀ[X, 1] / N."""
    g = torch.Generator().manual_seed(5)
    N, d = 30, 4
    X = torch.randn(N, d, generator=g, dtype=torch.float64) * torch.tensor(
        [3.0, 1.0, 0.5, 0.2], dtype=torch.float64
    )
    y = torch.randn(N, 1, generator=g, dtype=torch.float64)
    model = torch.nn.Linear(d, 1).double()

    def loss(out, target):
        return 0.5 * ((out - target) ** 2).sum(dim=-1).mean()

    Z = torch.cat([X, torch.ones(N, 1, dtype=torch.float64)], dim=1)
    H = Z.T @ Z / N
    op = ls.HessianOperator(model, loss, (X, y))
    assert max_rel_err(op.to_dense(), H) <= 1e-12
    lam = torch.linalg.eigvalsh(H).flip(0)
    res = ls.eigenpairs(op, k=3)
    assert torch.allclose(res.values, lam[:3], rtol=VALUE_RTOL, atol=0)
    assert_vectors_match(res.vectors, res.values, H)
    res = ls.eigenpairs(op, k=2, which="SA")
    assert torch.allclose(res.values, lam[-2:], rtol=VALUE_RTOL, atol=0)
    # the Hessian of a quadratic does not depend on the parameters
    with torch.no_grad():
        model.weight.add_(1.0)
    assert max_rel_err(op.to_dense(), H) <= 1e-12


# -- thick restarts -----------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["LA", "SA"])
def test_thick_restart_small_basis(which):
    k = 5
    g = torch.Generator().manual_seed(6)
    bulk = torch.rand(195, generator=g, dtype=torch.float64) * 60
    lam = torch.cat([torch.tensor([100.0, 95.0, 90.0, 85.0, 80.0], dtype=torch.float64), bulk])
    if which == "SA":
        lam = -lam
    A, _ = with_spectrum(lam, seed=7)
    res = ls.eigenpairs(ls.DenseOperator(A), k=k, which=which, max_basis=k + 5)
    exp, _ = reference_top(A, k, which)
    assert res.n_restarts > 0
    assert res.converged
    assert torch.allclose(res.values, exp, rtol=VALUE_RTOL, atol=0)
    assert_vectors_match(res.vectors, res.values, A)
    assert torch.all(explicit_residuals(ls.DenseOperator(A), res) <= 1.01 * res.tol * res.scale)


def test_default_basis_does_not_restart_when_not_needed():
    A, _ = with_spectrum(torch.linspace(0, 10, 60) ** 2, seed=8)
    res = ls.eigenpairs(A, k=2)
    assert res.n_restarts == 0 and res.converged


# -- determinism, start vector, residuals -------------------------------------------------------


def test_same_seed_same_result(mlp_case, ce):
    op = ls.HessianOperator(mlp_case.model, ce, (mlp_case.X, mlp_case.y))
    a = ls.eigenpairs(op, k=3, seed=11)
    b = ls.eigenpairs(op, k=3, seed=11)
    assert torch.equal(a.values, b.values)
    assert torch.equal(a.vectors, b.vectors)
    assert torch.equal(a.residuals, b.residuals)
    assert a.n_matvecs == b.n_matvecs
    c = ls.eigenpairs(op, k=3, seed=12)
    assert torch.allclose(c.values, a.values, rtol=VALUE_RTOL, atol=0)
    assert not torch.equal(c.vectors, a.vectors)  # the seed really seeds the start vector


def test_v0_is_honoured(mlp_case, ce, mlp_ce_H):
    op = ls.HessianOperator(mlp_case.model, ce, (mlp_case.X, mlp_case.y))
    _, U = reference_top(mlp_ce_H, 1, "LA")
    cold = ls.eigenpairs(op, k=1, tol=1e-8)
    warm = ls.eigenpairs(op, k=1, tol=1e-8, v0=U[:, 0])
    assert warm.n_matvecs <= 2 < cold.n_matvecs
    assert float(warm.values[0]) == pytest.approx(float(cold.values[0]), rel=1e-10)
    # a given v0 replaces the seeded start: the seed then seeds only the multiplicity probe
    v0 = torch.ones(op.dim, dtype=torch.float64)
    a = ls.eigenpairs(op, k=2, v0=v0, seed=0, check_multiplicity=False)
    b = ls.eigenpairs(op, k=2, v0=v0, seed=99, check_multiplicity=False)
    assert torch.equal(a.values, b.values) and torch.equal(a.vectors, b.vectors)
    assert not torch.equal(a.vectors, ls.eigenpairs(op, k=2, seed=0).vectors)
    probed = ls.eigenpairs(op, k=2, v0=v0, seed=99)
    assert torch.allclose(probed.values, a.values, rtol=1e-9, atol=0)
    # float32 v0 accepted
    c = ls.eigenpairs(op, k=2, v0=v0.float())
    assert torch.allclose(c.values, a.values, rtol=VALUE_RTOL, atol=0)


@pytest.mark.parametrize("which", ["LA", "SA"])
def test_residuals_agree_with_explicit_products(case, loss_fn, dense_H, which):
    op = ls.HessianOperator(case.model, loss_fn, (case.X, case.y))
    res = ls.eigenpairs(op, k=4, which=which)
    explicit = explicit_residuals(op, res)
    assert res.converged
    assert torch.all(res.residuals <= res.tol * res.scale)
    assert torch.all(explicit <= res.tol * res.scale)
    # Krylov-relation residuals equal the measured ones up to float64 rounding in the basis
    assert (res.residuals - explicit).abs().max() <= 1e-10 * res.scale
    assert torch.allclose(res.relative_residuals, res.residuals / res.scale)
    conf = ls.eigenpairs(op, k=4, which=which, confirm=True)
    assert conf.n_matvecs == res.n_matvecs + 4
    assert torch.equal(conf.values, res.values)
    assert (conf.residuals - explicit_residuals(op, conf)).abs().max() <= 1e-13 * res.scale


def test_residuals_after_restarts_agree_with_explicit():
    g = torch.Generator().manual_seed(9)
    lam = torch.cat([torch.tensor([50.0, 47.0, 45.0]), torch.rand(117, generator=g) * 40])
    A, _ = with_spectrum(lam, seed=10)
    op = ls.DenseOperator(A)
    res = ls.eigenpairs(op, k=3, max_basis=8)
    assert res.n_restarts > 0 and res.converged
    explicit = explicit_residuals(op, res)
    assert torch.all(explicit <= res.tol * res.scale)
    assert torch.all(res.residuals >= explicit - 1e-12 * res.scale)  # never optimistic
    assert (res.residuals - explicit).abs().max() <= 1e-9 * res.scale


def test_max_matvecs_gives_unconverged_result_with_warning(mlp_case, ce):
    op = ls.HessianOperator(mlp_case.model, ce, (mlp_case.X, mlp_case.y))
    with pytest.warns(RuntimeWarning, match="max_matvecs=6"):
        res = ls.eigenpairs(op, k=3, tol=1e-10, max_matvecs=6)
    assert not res.converged
    assert res.n_matvecs == 6
    assert torch.any(res.residuals > res.tol * res.scale)


def test_return_vectors_false_and_frozen_result(mlp_case, ce):
    op = ls.HessianOperator(mlp_case.model, ce, (mlp_case.X, mlp_case.y))
    res = ls.eigenpairs(op, k=2, return_vectors=False)
    assert res.vectors is None and res.k == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.values = torch.zeros(2)


def test_progress_callback_is_called(mlp_case, ce):
    op = ls.HessianOperator(mlp_case.model, ce, (mlp_case.X, mlp_case.y))
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = ls.eigenpairs(op, k=2, progress=lambda n, r: seen.append((n, r)))
    assert seen and seen[-1][0] == res.n_matvecs
    assert [n for n, _ in seen] == list(range(1, res.n_matvecs + 1))


def test_k_equal_dim_gives_full_spectrum():
    A, _ = with_spectrum(torch.tensor([3.0, 1.0, -2.0, 0.5, 4.0]), seed=11)
    res = ls.eigenpairs(A, k=5)
    assert torch.allclose(
        res.values, torch.tensor([4.0, 3.0, 1.0, 0.5, -2.0], dtype=torch.float64), atol=1e-12
    )


def test_hessian_changes_are_seen_by_eigenpairs(mlp_case, ce):
    """eigenpairs reads the live operator: after a parameter update it solves the new Hessian."""
    c = mlp_case
    op = ls.HessianOperator(c.model, ce, (c.X, c.y))
    before = ls.eigenpairs(op, k=1)
    with torch.no_grad():
        for p in c.model.parameters():
            p.mul_(1.5)
    after = ls.eigenpairs(op, k=1)
    ref, _ = reference_top(dense_hessian(c.model, ce, c.X, c.y), 1, "LA")
    assert abs(float(before.values[0] - ref[0])) > 1e-3
    assert float(after.values[0]) == pytest.approx(float(ref[0]), rel=VALUE_RTOL)


def test_float32_operator_residuals_include_its_rounding():
    """Below float64 the default adds what one explicit product shows the relation missed."""
    lam = torch.linspace(0.0, 5.0, 60).double()
    A, _ = with_spectrum(lam, seed=7)
    op = ls.DenseOperator(A.float())
    relation = ls.eigenpairs(op, k=3, confirm=False)
    default = ls.eigenpairs(op, k=3)
    explicit = ls.eigenpairs(op, k=3, confirm=True)
    assert default.n_matvecs == relation.n_matvecs + 1
    assert explicit.n_matvecs == relation.n_matvecs + 3
    assert torch.all(default.residuals >= relation.residuals)
    y, lam1 = default.vectors[:, 0], default.values[0]
    probed = float((op.matvec(y) - lam1 * y).norm())  # the one explicit product it took
    assert float(default.residuals[0]) == pytest.approx(max(probed, float(relation.residuals[0])))


def test_float32_rounding_above_tol_is_said_and_the_multiplicity_probe_still_runs():
    """A float32 product cannot verify tol 1e-9: converged=False with a message, probe kept.

    The Krylov relation converges to 1e-9, but one explicit float32 product is off by about 1e-7
    of λ₁, so the residuals cannot be verified. The solve says so (naming tol and the measured
    rounding) instead of flipping the flag silently, and the multiplicity probe, which runs
    after a converged solve, still runs: the copies of λ = 4 (three of them) are all found.
    """
    lam = torch.cat([torch.tensor([5.0, 4.0, 4.0, 4.0]), torch.linspace(0.0, 3.0, 56)]).double()
    A, _ = with_spectrum(lam, seed=8)
    op = ls.DenseOperator(A.float())
    with pytest.warns(RuntimeWarning, match=r"tol=1e-09.*off by [0-9.]+e-0[5-8].*rounding") as record:
        res = ls.eigenpairs(op, k=4, tol=1e-9)
    assert not any("max_matvecs" in str(w.message) for w in record)
    assert not res.converged and res.solver_converged
    assert 1e-9 * res.scale < res.rounding < 1e-5 * res.scale
    assert torch.allclose(res.values, torch.tensor([5.0, 4.0, 4.0, 4.0]).double(), rtol=0, atol=1e-5)
    with pytest.warns(RuntimeWarning, match="rounding"):
        unprobed = ls.eigenpairs(op, k=4, tol=1e-9, check_multiplicity=False)
    assert res.n_matvecs > unprobed.n_matvecs  # the probe's products
    bare = ls.eigenpairs(op, k=4, tol=1e-9, confirm=False)  # float64 relation only: no rounding
    assert bare.converged and bare.solver_converged and bare.rounding == 0.0
    # a tolerance the float32 product can verify: no message, converged; the rounding is measured
    # (1e-4 is below ROUNDING_MARGIN × eps) but small; above the margin it is not measured at all
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loose = ls.eigenpairs(op, k=4, tol=1e-4)
        looser = ls.eigenpairs(op, k=4, tol=1e-3)
    assert loose.converged and 0.0 <= loose.rounding < 1e-5 * loose.scale
    assert looser.converged and looser.rounding == 0.0


def test_float32_rounding_probe_only_where_rounding_can_matter():
    """Below float64 one explicit product measures the product's rounding, unless tol ≥ 1000 eps."""
    lam = torch.cat([torch.tensor([5.0, 3.0]), torch.linspace(0.0, 1.0, 48)])
    A, _ = with_spectrum(lam, seed=6)
    op32 = ls.DenseOperator(A.float())
    for tol, extra in ((1e-3, 0), (1e-2, 0), (1e-5, 1)):
        default = ls.eigenpairs(op32, k=1, tol=tol)
        bare = ls.eigenpairs(op32, k=1, tol=tol, confirm=False)
        assert default.n_matvecs == bare.n_matvecs + extra, tol


@pytest.mark.parametrize("which,wanted", [("LA", 2591.0), ("SA", -2591.0)])
def test_the_wanted_end_converges_when_the_other_end_dominates(which, wanted):
    """After a destructive step the spectrum's far end can dwarf the wanted one (λ_min ≈ −19,000
    against λ_max ≈ 2,600 on an MLP whose lr jumped 10⁵×). Residuals relative to ‖H‖ alone let
    four of five cold top-1 solves at tol 3e-2 stop at 5–14."""
    g = torch.Generator().manual_seed(0)
    bulk = (torch.rand(196, generator=g, dtype=torch.float64) - 0.5) * 20
    values = torch.cat([torch.tensor([2591.0, 1800.0, -19377.0, -15000.0], dtype=torch.float64), bulk])
    A, _ = with_spectrum(values if which == "LA" else -values, seed=1)
    for seed in range(6):
        res = ls.eigenpairs(A, k=1, which=which, tol=3e-2, seed=seed)
        assert res.values[0].item() == pytest.approx(wanted, rel=3e-2), seed


@pytest.mark.parametrize(
    "case, fallback",
    [
        ("random", False),
        ("inside the basis", True),
        ("1e-10 outside the basis", False),
        ("1e8 along it", False),
    ],
)
def test_orthogonalise_with_norm_is_the_explicit_norm(case, fallback):
    """One reduction less than orthogonalise + norm, and the same norm: Pythagoras after two
    passes, the explicit norm where the second pass's correction would make it cancel."""
    from landscope.curvature.linear import VectorLayout
    from landscope.curvature.ritz import orthogonalise, orthogonalise_with_norm

    g = torch.Generator().manual_seed(0)
    n, m = 500, 20
    Q = torch.linalg.qr(torch.randn(n, m, generator=g, dtype=torch.float64))[0].T.contiguous()
    inside = Q.T @ torch.randn(m, generator=g, dtype=torch.float64)
    noise = torch.randn(n, generator=g, dtype=torch.float64)
    w = {"random": noise, "inside the basis": inside, "1e-10 outside the basis": inside + 1e-10 * noise}
    w["1e8 along it"] = 1e8 * inside + noise
    layout = VectorLayout(n)
    ref, h_ref = orthogonalise(w[case].clone(), Q, layout)
    out, h, norm = orthogonalise_with_norm(w[case].clone(), Q, layout)
    assert torch.equal(out, ref) and torch.equal(h, h_ref)  # the same two passes
    first = w[case] - Q.T @ (Q @ w[case])
    correction = Q @ first
    assert (float(correction @ correction) > 0.5 * float(first @ first)) == fallback  # the branch taken
    assert norm == pytest.approx(float(out.norm()), rel=1e-12, abs=0)
