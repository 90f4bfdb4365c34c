"""``method="block"`` (block Rayleigh–Ritz, :mod:`landscope.curvature.block`) and the block tracker.

Every value is checked against an independent float64 reference (``torch.linalg.eigh`` of the
matrix, or of the autograd Hessian of ``reference.dense_hessian``) with bounds that follow from the
residuals the test recomputes itself, not from the solver's own report:

* values (Kahan): ``|θᵢ − λᵢ| ≤ ‖R‖_F`` for orthonormal Ritz vectors ``V`` with ``R = AV − VΘ``;
* vectors (Davis–Kahan): ``1 − overlap(V, U) ≤ (‖R‖_F / δ)² / k`` with ``δ`` the distance of the
  Ritz values to the unwanted eigenvalues (``Θ`` and ``Λ_⊥`` diagonal, so no interval condition).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from reference import LOSSES, dense_hessian, random_orthogonal, with_spectrum

from landscope.curvature import DenseOperator, EigenTracker, HessianOperator, eigenpairs
from landscope.curvature.block import DEFAULT_GUARDS, block_solve
from landscope.errors import InputError

ROUNDING = 1e-12  # float64 rounding allowance, relative to the spectral radius


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sym(M: torch.Tensor) -> torch.Tensor:
    return 0.5 * (M + M.T)


def wanted(A: torch.Tensor, k: int, which: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(values, vectors, unwanted values)`` of the dense reference; wanted values descending."""
    evals, evecs = torch.linalg.eigh(A)
    key = {"LA": -evals, "SA": evals, "LM": -evals.abs()}[which]
    idx = torch.argsort(key, stable=True)
    top, rest = idx[:k], idx[k:]
    order = torch.argsort(evals[top], descending=True)
    return evals[top][order], evecs[:, top][:, order], evals[rest]


def overlap(U: torch.Tensor, V: torch.Tensor) -> float:
    """``‖UᵀV‖²_F / k``, written out here (not ``landscope.curvature.subspace_overlap``)."""
    return float(((U.T @ V) ** 2).sum() / min(U.shape[1], V.shape[1]))


def assert_matches_dense(A: torch.Tensor, res, k: int, which: str, method: str = "block") -> None:
    """Everything a converged block result must satisfy against ``eigh`` of the matrix ``A``."""
    lam, U, rest = wanted(A, k, which)
    radius = float(torch.linalg.eigvalsh(A).abs().max())
    V, theta = res.vectors, res.values
    assert res.method == method and res.which == which and res.converged
    assert theta.dtype == V.dtype == torch.float64
    assert theta.shape == (k,) and V.shape == (A.shape[0], k)
    assert torch.all(theta[:-1] >= theta[1:]), f"values not sorted descending: {theta}"
    assert torch.allclose(V.T @ V, torch.eye(k, dtype=torch.float64), atol=1e-12, rtol=0)
    assert float(theta.abs().max()) <= res.scale <= radius * (1 + ROUNDING) + 1e-300
    R = A @ V - V * theta  # recomputed with the matrix itself, not with op.matmat
    r = R.norm(dim=0)
    floor = ROUNDING * radius
    assert torch.all(r <= res.tol * res.scale + floor), (r / max(res.scale, 1e-300), res.tol)
    assert torch.allclose(res.residuals, r, rtol=0, atol=floor + 1e-300), (res.residuals, r)
    r_f = float(R.norm())
    err = (theta - lam).abs()
    assert torch.all(err <= r_f + floor), f"values {theta} vs eigh {lam}: |Δ| {err} > ‖R‖_F {r_f}"
    delta = float((theta[:, None] - rest[None, :]).abs().min()) if len(rest) else 0.0
    if delta > 1e-6 * radius:  # else a wanted value is degenerate with an unwanted one: no vectors
        bound = (r_f / delta) ** 2 / k
        assert 1 - overlap(U, V) <= bound + 1e-12, (1 - overlap(U, V), bound)


# -- 1. dense matrices against eigh -------------------------------------------------------------


def _random_symmetric(n: int = 60) -> torch.Tensor:
    M = torch.randn(n, n, generator=_gen(11), dtype=torch.float64)
    return _sym(M) / math.sqrt(n)


def _psd_gap() -> torch.Tensor:
    bulk = torch.rand(56, generator=_gen(12), dtype=torch.float64) * 10
    return with_spectrum(torch.cat([torch.tensor([50.0, 40.0, 30.0, 20.0]).double(), bulk]), seed=1)[0]


def _clustered_top() -> torch.Tensor:
    top = torch.tensor([10.0, 10.0 - 1e-3, 10.0 - 2e-3, 10.0 - 3e-3, 10.0 - 4e-3]).double()
    bulk = torch.rand(55, generator=_gen(13), dtype=torch.float64) * 9 - 9
    return with_spectrum(torch.cat([top, bulk]), seed=2)[0]


def _repeated_top() -> torch.Tensor:
    top = torch.tensor([7.0, 7.0, 7.0]).double()  # exactly repeated: multiplicity 3 = k
    return with_spectrum(torch.cat([top, torch.linspace(-6.0, 6.0, 57).double()]), seed=3)[0]


def _indefinite() -> torch.Tensor:
    ends = torch.tensor([-12.0, -9.0, 8.0, 6.5, -7.0]).double()
    return with_spectrum(torch.cat([ends, torch.linspace(-5.0, 5.0, 55).double()]), seed=4)[0]


MATRICES = {
    "random-symmetric": _random_symmetric,
    "psd-gap": _psd_gap,
    "clustered-top": _clustered_top,
    "repeated-top-x3": _repeated_top,
    "indefinite": _indefinite,
}


@pytest.mark.parametrize("basis", [None, 16], ids=["default-basis", "basis-16-restarts"])
@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
@pytest.mark.parametrize("matrix", list(MATRICES))
def test_block_matches_eigh_on_dense_matrices(matrix, which, basis):
    A = MATRICES[matrix]()
    k, tol = 3, 1e-8
    res = eigenpairs(DenseOperator(A), k=k, which=which, tol=tol, method="block", max_basis=basis)
    assert_matches_dense(A, res, k, which)
    if basis is not None:
        assert res.n_restarts > 0, "a basis of 16 for a block of 5 must compress"


def test_repeated_top_eigenvalue_all_copies_found():
    """A single start vector sees one copy of 7; the block (k + 2 vectors) sees all three."""
    A = _repeated_top()
    res = eigenpairs(A, k=3, method="block", tol=1e-10)
    assert torch.allclose(res.values, torch.full((3,), 7.0, dtype=torch.float64), rtol=0, atol=1e-9)
    _, U, _ = wanted(A, 3, "LA")
    assert overlap(U, res.vectors) >= 1 - 1e-12


@pytest.mark.parametrize("which", ["LA", "SA"])
def test_confirm_true_measures_residuals_explicitly(which):
    A = _indefinite()
    op = DenseOperator(A)
    rel = eigenpairs(op, k=3, which=which, method="block", confirm=False)
    conf = eigenpairs(op, k=3, which=which, method="block", confirm=True)
    assert conf.n_matvecs == rel.n_matvecs + 3
    assert torch.equal(conf.values, rel.values)
    explicit = (A @ conf.vectors - conf.vectors * conf.values).norm(dim=0)
    assert torch.allclose(conf.residuals, explicit, rtol=0, atol=1e-13 * conf.scale)


# -- 2. a real model: the Hessian of a tiny MLP --------------------------------------------------

MODEL_CASES = [("mse", "LA", 4), ("ce", "LA", 4), ("mse", "SA", 2), ("ce", "LM", 3)]


@pytest.mark.parametrize("loss,which,k", MODEL_CASES, ids=[f"{a}-{b}-k{c}" for a, b, c in MODEL_CASES])
def test_block_matches_autograd_hessian(mlp_case, loss, which, k):
    """The 5-6-3 tanh MLP (57 parameters, float64) against ``torch.autograd.functional.hessian``."""
    c, loss_fn = mlp_case, LOSSES[loss]
    H = _sym(dense_hessian(c.model, loss_fn, c.X, c.y))
    op = HessianOperator(c.model, loss_fn, (c.X, c.y))
    res = eigenpairs(op, k=k, which=which, tol=1e-8, method="block")
    assert_matches_dense(H, res, k, which)


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_float32_model_residuals_do_not_understate(mlp_case, loss):
    """Below float64 the reported residuals include the operator's rounding.

    The truth is the residual of the returned pair under the float64 Hessian *of the float32
    parameters* (``dtype=torch.float64``), and under the float32 operator's own product; the
    report may be lower than either by one float32 rounding of the scale at most.
    """
    c, loss_fn = mlp_case, LOSSES[loss]
    model32 = copy.deepcopy(c.model).float()
    data = (c.X.float(), c.y)
    op32 = HessianOperator(model32, loss_fn, data)
    op64 = HessianOperator(model32, loss_fn, data, dtype=torch.float64)
    res = eigenpairs(op32, k=3, tol=1e-5, method="block")
    relation = eigenpairs(op32, k=3, tol=1e-5, method="block", confirm=False)
    assert res.converged and res.values.dtype == torch.float64
    # one explicit probe product, which the iteration makes (it stops at the rounding it shows)
    # and finish reuses: no second one; with confirm=False it is not added to the residuals
    assert res.n_matvecs == relation.n_matvecs and res.rounding > 0 and relation.rounding == 0
    assert torch.equal(res.residuals, relation.residuals + res.rounding)
    V, theta = res.vectors, res.values
    slack = float(torch.finfo(torch.float32).eps) * res.scale
    for truth_op in (op64, op32):
        truth = torch.stack([(truth_op.matvec(V[:, i]) - theta[i] * V[:, i]).norm() for i in range(3)])
        assert truth.dtype == torch.float64
        assert torch.all(res.residuals >= truth - slack), (res.residuals, truth)
    H = dense_hessian(copy.deepcopy(model32).double(), loss_fn, c.X, c.y)
    ref = torch.linalg.eigvalsh(_sym(H)).flip(0)[:3]
    assert torch.allclose(theta, ref, rtol=1e-4, atol=0)


def test_float32_below_its_rounding_stops_at_epsilon_not_at_the_budget():
    """tol 1e-8 on a float32 operator cannot be verified: a few products and a warning, not 1,000.

    The explicit residuals of float32 products stall near their rounding (here 2e-8 of the
    scale): the solve stops at the dtype's epsilon and says why; the values match float64's.
    """
    X = torch.randn(200, 40, generator=_gen(0))
    y = torch.randint(0, 10, (200,), generator=_gen(1))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(40, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10))
    loss_fn = torch.nn.CrossEntropyLoss()
    op32 = HessianOperator(model, loss_fn, (X, y))
    op64 = HessianOperator(model, loss_fn, (X, y), dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="below what torch.float32 products resolve|its own rounding"):
        res = eigenpairs(op32, k=3, tol=1e-8, method="block", max_matvecs=1000)
    assert not res.converged and res.n_matvecs < 300, res.n_matvecs
    ref = eigenpairs(op64, k=3, tol=1e-11)
    assert torch.allclose(res.values, ref.values, rtol=1e-6, atol=0)


# -- 3. warm starts ------------------------------------------------------------------------------


def _warm_matrix() -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, U)``: a 60 × 60 matrix with a clustered top and its eigenvectors, descending."""
    lam = torch.cat(
        [torch.tensor([9.0, 8.9, 8.8, 8.7, 8.6, 8.5]).double(), torch.linspace(0.0, 8.0, 54).double()]
    )
    A, _ = with_spectrum(lam, seed=21)
    evals, evecs = torch.linalg.eigh(A)
    return A, evecs.flip(1)


@pytest.mark.parametrize(
    "k,guards", [(1, 0), (3, 0), (3, 2), (3, 3), (4, DEFAULT_GUARDS)], ids=lambda v: str(v)
)
def test_exact_start_costs_exactly_the_initial_block(k, guards):
    A, U = _warm_matrix()
    b = k + guards
    solve = block_solve(DenseOperator(A), k, "LA", 1e-8, start=U[:, :b], guards=guards, seed=5)
    res = solve.result
    assert res.n_matvecs == b, f"{res.n_matvecs} products from an exact start of {b} columns"
    assert res.n_restarts == 0
    assert_matches_dense(A, res, k, "LA")
    assert solve.guards.shape == (A.shape[0], guards) and solve.guards.dtype == torch.float64
    if guards:
        G = solve.guards
        assert torch.allclose(G.T @ G, torch.eye(guards, dtype=torch.float64), atol=1e-12, rtol=0)
        assert (res.vectors.T @ G).abs().max() <= 1e-12
        assert overlap(U[:, k:b], G) >= 1 - 1e-12  # the next Ritz vectors: eigenvectors k..b-1


def _dup_start(U: torch.Tensor) -> torch.Tensor:
    u1, u2 = U[:, 0], U[:, 1]
    return torch.stack([u1, u1, 2.0 * u1, u2, u1 + u2], dim=1)


def _zero_and_dup_start(U: torch.Tensor) -> torch.Tensor:
    z = torch.zeros_like(U[:, 0])
    return torch.stack([z, U[:, 0], -U[:, 0], z, U[:, 2]], dim=1)


def _rank_one_start(U: torch.Tensor) -> torch.Tensor:
    return U[:, :1].repeat(1, 5)


def _more_columns(U: torch.Tensor) -> torch.Tensor:
    return U[:, :9]  # the block is k + guards = 5: only the first five are used


START_CASES = {
    "duplicates": _dup_start,
    "zero-columns": _zero_and_dup_start,
    "one-direction-x5": _rank_one_start,
    "more-columns-than-block": _more_columns,
}


@pytest.mark.parametrize("start", list(START_CASES))
def test_dependent_start_columns_still_work(start):
    A, U = _warm_matrix()
    S = START_CASES[start](U)
    solve = block_solve(DenseOperator(A), 3, "LA", 1e-8, start=S, seed=1)
    res = solve.result
    assert_matches_dense(A, res, 3, "LA")
    assert res.n_matvecs >= 5  # a full block of independent columns was formed
    if start == "more-columns-than-block":
        assert res.n_matvecs == 5
    G = solve.guards
    assert G.shape == (60, DEFAULT_GUARDS)
    assert torch.allclose(G.T @ G, torch.eye(DEFAULT_GUARDS, dtype=torch.float64), atol=1e-10, rtol=0)


@pytest.mark.parametrize("k", [1, 3])
def test_short_start_is_filled_to_the_block(k):
    """``k`` exact columns: random (seeded) guards fill the block, nothing more is needed."""
    A, U = _warm_matrix()
    solve = block_solve(DenseOperator(A), k, "LA", 1e-8, start=U[:, :k], seed=3)
    assert solve.result.n_matvecs == k + DEFAULT_GUARDS
    assert solve.guards.shape == (60, DEFAULT_GUARDS)
    assert_matches_dense(A, solve.result, k, "LA")
    # the fill is seeded: another seed, other guards, same values
    other = block_solve(DenseOperator(A), k, "LA", 1e-8, start=U[:, :k], seed=4)
    assert not torch.allclose(other.guards.abs(), solve.guards.abs())
    assert torch.allclose(other.result.values, solve.result.values, rtol=1e-12, atol=0)


def test_eigenpairs_v0_is_the_first_block_column():
    A, U = _warm_matrix()
    res = eigenpairs(DenseOperator(A), k=1, tol=1e-8, method="block", v0=U[:, 0])
    assert res.n_matvecs == 1 + DEFAULT_GUARDS
    assert float(res.values[0]) == pytest.approx(9.0, rel=1e-12)
    cold = eigenpairs(DenseOperator(A), k=1, tol=1e-8, method="block")
    assert cold.n_matvecs > res.n_matvecs


# -- 4. the block tracker ------------------------------------------------------------------------


def rotating(n_steps: int, dt: float, n: int = 80, seed: int = 4) -> list[torch.Tensor]:
    """``A_t = R_t D R_tᵀ`` with ``R_t = exp(t·dt·S) R₀`` (``S`` skew, ‖S‖₂ = 1): a slow rotation."""
    g = _gen(seed)
    top = torch.tensor([10.0, 9.8, 9.6, 9.4, 9.2]).double()
    lam = torch.cat([top, torch.rand(n - 5, generator=g, dtype=torch.float64) * 9])
    R0 = random_orthogonal(n, seed + 1)
    S = torch.randn(n, n, generator=g, dtype=torch.float64)
    S = (S - S.T) / 2
    S = S / torch.linalg.matrix_norm(S, ord=2)
    out = []
    for t in range(n_steps):
        R = torch.linalg.matrix_exp((t * dt) * S) @ R0
        out.append(_sym((R * lam) @ R.T))
    return out


def test_block_tracker_follows_a_rotation_with_fewer_products():
    k, tol = 3, 1e-6
    trk = EigenTracker(k=k, tol=tol, method="block")
    assert trk.method == "block"
    previous = None
    for t, A in enumerate(rotating(5, dt=1e-3)):
        res = trk.update(DenseOperator(A))
        cold = eigenpairs(DenseOperator(A), k=k, tol=tol, method="lanczos")
        assert_matches_dense(A, res, k, "LA", method="lanczos" if t == 0 else "block")
        if t == 0:
            assert res.overlap is None
        else:
            assert 0.0 <= res.overlap <= 1.0
            assert res.overlap == pytest.approx(overlap(previous, res.vectors), abs=1e-12)
            assert res.overlap >= 1 - 1e-5  # a rotation by 1e-3 rad per step
            assert res.n_matvecs < cold.n_matvecs, (t, res.n_matvecs, cold.n_matvecs)
        previous = res.vectors
    assert trk.n_updates == 5


def test_block_tracker_overlap_sees_a_swap():
    """Top-2 subspace replaced by an orthogonal one: overlap ≈ 0 (and still in [0, 1])."""
    A, Q = with_spectrum(torch.cat([torch.tensor([10.0, 9.0]), torch.linspace(0, 1, 28)]), seed=6)
    B = _sym(Q[:, [2, 3]] @ torch.diag(torch.tensor([10.0, 9.0]).double()) @ Q[:, [2, 3]].T)
    trk = EigenTracker(k=2, tol=1e-8, method="block")
    trk.update(DenseOperator(A))
    res = trk.update(DenseOperator(B))
    assert 0.0 <= res.overlap <= 1e-8
    assert_matches_dense(B, res, 2, "LA")


def _old_checkpoint(state: dict) -> dict:
    state = dict(state)
    del state["guards"]  # what state_dict returned before the block method existed
    return state


@pytest.mark.parametrize("checkpoint", ["current", "without-guards-key"])
def test_block_tracker_state_dict_round_trip(checkpoint):
    ops = [DenseOperator(A) for A in rotating(4, dt=1e-3, n=60)]
    trk = EigenTracker(k=3, tol=1e-7, method="block", seed=2)
    for op in ops[:2]:
        trk.update(op)
    state = copy.deepcopy(trk.state_dict())
    assert state["guards"].shape == (60, DEFAULT_GUARDS)
    if checkpoint == "current":
        ref = trk.update(ops[2])
    else:
        state = _old_checkpoint(state)
        # an old checkpoint resumes as a block start from the k previous vectors alone, the
        # guards filled by the random columns of the tracker's seed for its third solve
        ref = block_solve(ops[2], 3, "LA", 1e-7, start=state["history"][-1], seed=2 + 2).result
    resumed = EigenTracker(k=3, tol=1e-7, method="block", seed=2)
    resumed.load_state_dict(copy.deepcopy(state))
    got = resumed.update(ops[2])
    assert torch.equal(got.values, ref.values) and torch.equal(got.vectors, ref.vectors)
    assert got.n_matvecs == ref.n_matvecs
    assert got.overlap == pytest.approx(overlap(state["history"][-1], got.vectors), abs=1e-12)
    assert resumed.n_updates == 3
    assert_matches_dense(ops[2].matrix, got, 3, "LA")
    cold = eigenpairs(ops[2], k=3, tol=1e-7, method="block", seed=2 + 2)
    assert got.n_matvecs < cold.n_matvecs  # resumed warm, not cold


def test_block_tracker_reset_makes_the_next_update_cold():
    ops = [DenseOperator(A) for A in rotating(3, dt=1e-3, n=60)]
    trk = EigenTracker(k=3, tol=1e-7, method="block", seed=7)
    trk.update(ops[0])
    warm = trk.update(ops[1])
    trk.reset()
    seed = trk.seed + trk.n_updates  # the tracker's seed for its next solve
    again = trk.update(ops[1])
    cold = eigenpairs(ops[1], k=3, tol=1e-7, method="lanczos", seed=seed)  # cold: Lanczos
    assert again.overlap is None and again.method == "lanczos"
    assert again.n_matvecs == cold.n_matvecs > warm.n_matvecs
    assert torch.equal(again.values, cold.values)
    assert trk.state_dict()["guards"].shape == (60, DEFAULT_GUARDS)  # guards of the cold solve


def _crossing(lam4: float, t: int, dt: float, n: int = 60) -> torch.Tensor:
    """10, 9, 8 fixed, the fourth eigenvalue ``lam4``, 6.5, a bulk in [0, 5]; rotating by ``dt``."""
    lam = torch.cat(
        [torch.tensor([10.0, 9.0, 8.0, lam4, 6.5]).double(), torch.linspace(0.0, 5.0, n - 5).double()]
    )
    S = torch.randn(n, n, generator=_gen(31), dtype=torch.float64)
    S = (S - S.T) / torch.linalg.matrix_norm(S - S.T, ord=2)
    R = torch.linalg.matrix_exp((dt * t) * S) @ random_orthogonal(n, 32)
    return _sym((R * lam) @ R.T)


@pytest.mark.parametrize("dt", [0.0, 1e-3], ids=["fixed-vectors", "rotating"])
def test_block_tracker_sees_an_eigenvalue_rise_into_the_top_k(dt):
    """The fourth eigenvalue rises through the third (7.0 → 9.4 while 8 stays), k = 3, tol 1e-6.

    A single-vector warm start (``method="lanczos"``: Lanczos from the sum of the last top-3
    vectors plus a 1e-4 random part) holds the rising direction only through the previous
    vectors' errors and the random part, so it can converge to the stale top 3 with small
    residuals and no sign of the miss. Measured on these sequences: it reports the stale 8.0 at
    the crossing step (fixed vectors) and on both steps after it (rotating); so does the block
    tracker with ``guards=0`` on the fixed vectors. The block start carries the previous fourth
    and fifth Ritz vectors as guards, so the rising direction is in it.
    """
    trk = EigenTracker(k=3, tol=1e-6, method="block")
    for t, lam4 in enumerate([7.0, 7.6, 8.4, 9.4]):
        A = _crossing(lam4, t, dt)
        res = trk.update(DenseOperator(A))
        assert_matches_dense(A, res, 3, "LA", method="lanczos" if t == 0 else "block")
        expected = sorted([10.0, 9.0, 8.0, lam4], reverse=True)[:3]
        assert torch.allclose(res.values, torch.tensor(expected).double(), rtol=0, atol=1e-5), (
            t,
            res.values,
            expected,
        )


def test_guards_are_what_catch_a_crossing_from_an_invariant_start():
    """From the exact old top 3 alone the stale answer is exact and converged (any method).

    Old spectrum 10, 9, 8, 7, 6.5; new one: the fourth is 8.5, same eigenvectors. The old top-3
    vectors span an invariant subspace of the new matrix: Rayleigh–Ritz on it has zero residuals.
    With the old fourth and fifth vectors as guards the block sees 8.5.
    """
    n = 60
    Q = random_orthogonal(n, 41)
    lam = torch.cat(
        [torch.tensor([10.0, 9.0, 8.0, 8.5, 6.5]).double(), torch.linspace(0.0, 5.0, n - 5).double()]
    )
    A = _sym((Q * lam) @ Q.T)
    stale = block_solve(DenseOperator(A), 3, "LA", 1e-8, start=Q[:, :3], guards=0).result
    assert stale.converged and torch.allclose(stale.values, torch.tensor([10.0, 9.0, 8.0]).double())
    fresh = block_solve(DenseOperator(A), 3, "LA", 1e-8, start=Q[:, :5], guards=2).result
    assert fresh.n_matvecs == 5
    assert_matches_dense(A, fresh, 3, "LA")
    assert float(fresh.values[2]) == pytest.approx(8.5, rel=1e-12)


# -- 5. bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw,bad",
    [
        (dict(method="bogus"), "bogus"),
        (dict(guards=-1), "-1"),
        (dict(guards=1.5), "1.5"),
        (dict(guards=True), "True"),
    ],
    ids=["method-bogus", "guards-negative", "guards-float", "guards-bool"],
)
def test_tracker_rejects_bad_method_and_guards(kw, bad):
    with pytest.raises(InputError, match=bad):
        EigenTracker(k=3, **kw)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(check_multiplicity=True), "check_multiplicity"),
        (dict(max_basis=3), "max_basis.*got 3"),
        (dict(max_basis=1), "max_basis.*got 1"),
        (dict(max_basis=4.5), "max_basis.*got 4.5"),
    ],
    ids=["check-multiplicity", "max-basis-eq-k", "max-basis-lt-k", "max-basis-float"],
)
def test_eigenpairs_block_rejects_bad_options(kw, match):
    A = _psd_gap()
    with pytest.raises(InputError, match=match):
        eigenpairs(DenseOperator(A), k=3, method="block", **kw)


# -- 6. max_matvecs ------------------------------------------------------------------------------


@pytest.mark.parametrize("max_matvecs", [2, 6, 12])
def test_max_matvecs_warns_and_reports_unconverged(max_matvecs):
    A = _clustered_top()
    with pytest.warns(RuntimeWarning, match=f"max_matvecs={max_matvecs}"):
        res = eigenpairs(DenseOperator(A), k=3, tol=1e-12, method="block", max_matvecs=max_matvecs)
    assert not res.converged
    assert torch.any(res.residuals > res.tol * res.scale)
    explicit = (A @ res.vectors - res.vectors * res.values).norm(dim=0)
    assert torch.allclose(res.residuals, explicit, rtol=0, atol=1e-12 * res.scale)  # honest


@pytest.mark.parametrize("max_matvecs,expected", [(2, 3), (3, 3), (6, 6), (7, 7)])
def test_max_matvecs_is_not_exceeded(max_matvecs, expected):
    """The budget holds exactly, except that the first block is at least the k = 3 wanted vectors."""
    A = _clustered_top()
    with pytest.warns(RuntimeWarning):
        res = eigenpairs(DenseOperator(A), k=3, tol=1e-12, method="block", max_matvecs=max_matvecs)
    assert res.n_matvecs == expected
    assert not res.converged


# -- 7. edges ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spectrum,k",
    [
        ([2.5], 1),
        ([3.0, -1.0, 2.0], 1),
        ([3.0, -1.0, 2.0], 2),
        ([3.0, -1.0, 2.0], 3),
        ([1.0, 1.0, -4.0, 0.5], 3),
    ],
    ids=["dim1-k1", "dim3-k1", "dim3-k2", "dim3-k3", "dim4-k3"],
)
@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_dim_not_larger_than_the_block_is_exact(spectrum, k, which):
    """``dim ≤ k + guards``: the first block is the whole space, the answer exact."""
    A, _ = with_spectrum(torch.tensor(spectrum), seed=51)
    solve = block_solve(DenseOperator(A), k, which, 1e-10)
    res = solve.result
    exp, _, _ = wanted(A, k, which)
    assert torch.allclose(res.values, exp, rtol=0, atol=1e-13 * max(abs(s) for s in spectrum))
    assert res.n_matvecs == len(spectrum)
    assert solve.guards.shape == (len(spectrum), min(k + DEFAULT_GUARDS, len(spectrum)) - k)
    assert_matches_dense(A, res, k, which)


def test_tracker_on_an_operator_smaller_than_its_block():
    A, _ = with_spectrum(torch.tensor([3.0, -1.0, 2.0]), seed=52)
    trk = EigenTracker(k=2, tol=1e-10, method="block")
    for _ in range(2):
        res = trk.update(DenseOperator(A))
        assert torch.allclose(res.values, torch.tensor([3.0, 2.0]).double(), rtol=0, atol=1e-13)


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_zero_operator(which):
    res = eigenpairs(
        DenseOperator(torch.zeros(20, 20, dtype=torch.float64)), k=3, which=which, method="block"
    )
    assert torch.equal(res.values, torch.zeros(3, dtype=torch.float64))
    assert res.converged and res.method == "block"
    assert torch.all(res.residuals == 0)
    assert torch.allclose(res.vectors.T @ res.vectors, torch.eye(3, dtype=torch.float64), atol=1e-12)


RANK_ONE_CASES = [(1, "LA"), (3, "LA"), (3, "LM"), (2, "SA")]


@pytest.mark.parametrize("k,which", RANK_ONE_CASES, ids=[f"k{k}-{w}" for k, w in RANK_ONE_CASES])
def test_rank_one_operator(k, which):
    """``u uᵀ``: one expansion puts ``u`` in the basis, which is then invariant: b + 1 products.

    For ``SA`` the first block already holds exact null vectors (the Ritz vectors orthogonal to
    the projection of ``u``): converged with the b products of the first block.
    """
    u = torch.randn(25, generator=_gen(123), dtype=torch.float64)  # not the solver's seed-0 stream
    A = torch.outer(u, u)
    res = eigenpairs(DenseOperator(A), k=k, which=which, method="block", tol=1e-10)
    norm2 = float(u @ u)
    expected = torch.zeros(k, dtype=torch.float64)
    if which != "SA":
        expected[0] = norm2
    assert torch.allclose(res.values, expected, rtol=0, atol=1e-12 * norm2), res.values
    assert res.converged
    assert res.n_matvecs == k + DEFAULT_GUARDS + (which != "SA")
    assert_matches_dense(A, res, k, which)


@pytest.mark.parametrize(
    "k, tol, method",
    [(1, 1e-6, "block"), (1, 1e-3, "lanczos"), (10, 1e-6, "lanczos"), (3, 1e-3, "block"), (2, 1e-4, "block")],
)
def test_auto_picks_the_method_measured_cheaper(k, tol, method):
    """benchmarks/results/tracking.md: the block below 1e-4 for k = 1, at or above it for k ≥ 2."""
    assert EigenTracker(k=k, tol=tol).method == method


def test_a_float32_tracker_below_its_rounding_stops_at_the_rounding_a_product_shows():
    """A BatchNorm CNN's float32 products near the top vector are inconsistent by ~5e-7 of λ₁.

    The stored residuals stall at 1.4e-7, above the dtype's epsilon, so a k = 1 tracker at
    tol 1e-8 (warm solves: the block method) ran each solve to its 7,844-product budget. The
    solver's one rounding probe now sets where it stops; that probe mixes in the next Ritz vector,
    since here the warm start's Ritz vector is a stored row to the bit and a product of it alone
    shows no rounding (which also ran to the budget).
    """
    X = torch.randn(300, 1, 8, 8, generator=_gen(0))
    y = (X.mean(dim=(1, 2, 3)) * 10).long().clamp(-4, 5) + 4
    torch.manual_seed(5)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 3, padding=1),
        torch.nn.BatchNorm2d(6),
        torch.nn.GELU(),
        torch.nn.Flatten(),
        torch.nn.Linear(6 * 64, 10),
    )
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(40):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    loss_fn = torch.nn.CrossEntropyLoss()
    op = HessianOperator(model, loss_fn, (X, y))
    tracker = EigenTracker(k=1, tol=1e-8)
    with pytest.warns(RuntimeWarning):
        tracker.update(op)
    with pytest.warns(RuntimeWarning, match="below what torch.float32 products resolve"):
        res = tracker.update(op)
    assert res.method == "block" and not res.converged and res.n_matvecs < 50, res.n_matvecs
    assert res.rounding > 1e-7 * res.scale  # the probe's measure, in the reported residuals
    ref = eigenpairs(HessianOperator(model, loss_fn, (X, y), dtype=torch.float64), k=1, tol=1e-10)
    assert torch.allclose(res.values, ref.values, rtol=1e-6, atol=0)
