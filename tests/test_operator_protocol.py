"""The public operator protocol: checked attributes, the algebra, SciPy, and the model-based base class.

Each algebraic case is compared with the same expression on dense float64 matrices; SciPy's
``eigsh`` on ``to_scipy()`` is compared with ``torch.linalg.eigh``.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from reference import dense_hessian, run_readme_example

import landscope as ls
from landscope.models import mlp


def _sym(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=torch.float64)
    return (A + A.T) / 2


N = 7
A, B = _sym(N, 0), _sym(N, 1)
D = torch.linspace(-2.0, 3.0, N, dtype=torch.float64)
I = torch.eye(N, dtype=torch.float64)

CASES = {  # name: (operator expression, the same on dense matrices)
    "sum": (lambda a, b, d: a + b, A + B),
    "difference": (lambda a, b, d: a - b, A - B),
    "scaled": (lambda a, b, d: 2.5 * a, 2.5 * A),
    "scaled right": (lambda a, b, d: a * -0.5, -0.5 * A),
    "divided": (lambda a, b, d: a / 4, A / 4),
    "negated": (lambda a, b, d: -a, -A),
    "shift": (lambda a, b, d: a - 1.5 * ls.IdentityOperator.like(a), A - 1.5 * I),
    "nested": (
        lambda a, b, d: 0.5 * (a + 2 * (b - d)) + d,
        0.5 * (A + 2 * (B - torch.diag(D))) + torch.diag(D),
    ),
    "diagonal": (lambda a, b, d: d, torch.diag(D)),
    "preconditioned": (
        lambda a, b, d: ls.PreconditionedOperator(a + b, D.abs() + 1),
        torch.diag((D.abs() + 1).rsqrt()) @ (A + B) @ torch.diag((D.abs() + 1).rsqrt()),
    ),
    "matvec function": (lambda a, b, d: ls.MatvecOperator(lambda v: B @ v, N), B),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_algebra_matches_dense_matrices(name):
    build, dense = CASES[name]
    op = build(ls.DenseOperator(A), ls.DenseOperator(B), ls.DiagonalOperator(D))
    assert isinstance(op, ls.CurvatureOperator) and op.shape == (N, N)
    torch.testing.assert_close(op.to_dense(), dense, rtol=0, atol=1e-12)
    V = torch.randn(N, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(op @ V, dense @ V, rtol=0, atol=1e-12)
    torch.testing.assert_close(op @ V[:, 0].float(), (dense @ V[:, 0]).float(), rtol=1e-5, atol=1e-5)


def test_nested_combinations_are_flattened_and_keep_the_widest_dtype():
    a, b = ls.DenseOperator(A.float()), ls.DenseOperator(B)
    op = 2 * (a + b) - a
    assert isinstance(op, ls.LinearCombination) and len(op.terms) == 3
    assert [c for c, _ in op.terms] == [2.0, 2.0, -1.0]
    assert op.dtype == torch.float64
    assert pickle.loads(pickle.dumps(op)).to_dense().equal(op.to_dense())


def test_to_scipy_gives_scipy_solvers_the_operator():
    from scipy.sparse.linalg import LinearOperator, eigsh

    op = ls.DenseOperator(A) + ls.DiagonalOperator(D)
    lin = op.to_scipy()
    assert isinstance(lin, LinearOperator) and lin.shape == (N, N) and lin.dtype == np.float64
    x = np.arange(N, dtype=np.float64)
    np.testing.assert_allclose(lin @ x, (A + torch.diag(D)).numpy() @ x, atol=1e-12)
    np.testing.assert_allclose(lin.rmatvec(x), lin @ x)
    np.testing.assert_allclose(lin.matmat(np.eye(N)), (A + torch.diag(D)).numpy(), atol=1e-12)
    top = eigsh(lin, k=2, which="LA", tol=1e-12)[0]
    np.testing.assert_allclose(
        np.sort(top), torch.linalg.eigvalsh(A + torch.diag(D))[-2:].numpy(), rtol=1e-10
    )
    assert op.to_scipy(np.float32).dtype == np.float32


def test_the_solvers_take_a_combination_and_a_shift_moves_the_spectrum():
    op = ls.DenseOperator(A)
    exact = torch.linalg.eigvalsh(A)
    res = ls.eigenpairs(op - 10.0 * ls.IdentityOperator.like(op), k=2, which="SA", tol=1e-10)
    torch.testing.assert_close(res.values.sort().values, exact[:2] - 10, rtol=0, atol=1e-8)


class _NoDevice(ls.CurvatureOperator):
    def __init__(self):
        self.dim, self.dtype = 3, torch.float64

    def _matvec(self, v):
        return v


@pytest.mark.parametrize(
    "make,match",
    [
        (_NoDevice, r"_NoDevice is a CurvatureOperator without 'device'"),
        (
            lambda: ls.MatvecOperator(lambda v: v, dim=0),
            r"MatvecOperator.dim must be a positive integer, got 0",
        ),
        (
            lambda: ls.MatvecOperator(lambda v: v, dim=3, dtype=torch.int64),
            r"MatvecOperator.dtype must be a floating torch dtype, got torch.int64",
        ),
        (lambda: ls.MatvecOperator(lambda v: v, dim=3, device="moon"), r"must be a torch device, got 'moon'"),
        (lambda: ls.MatvecOperator("not callable", dim=3), r"needs a callable"),
        (lambda: ls.DenseOperator(A) + ls.DiagonalOperator(D[:3]), r"dimensions 7 and 3"),
        (lambda: ls.DenseOperator(A) / 0, r"divided by 0"),
        (lambda: ls.DiagonalOperator(torch.tensor([1.0, float("nan")])), r"NaN or inf"),
        (lambda: ls.DiagonalOperator(torch.ones(2, 2)), r"non-empty vector, got \(2, 2\)"),
    ],
)
def test_an_operator_that_is_wrong_says_what_is_wrong(make, match):
    with pytest.raises(ls.InputError, match=match):
        make() @ torch.ones(3, dtype=torch.float64)


def test_a_matvec_function_that_returns_the_wrong_shape_is_named():
    op = ls.MatvecOperator(lambda v: v[:2], dim=3)
    with pytest.raises(ls.InputError, match=r"returned \(2,\) for a vector of shape \(3,\)"):
        op @ torch.ones(3, dtype=torch.float64)


def test_operators_do_not_combine_with_arrays_or_booleans():
    op = ls.DenseOperator(A)
    for bad in (True, np.ones(N), "2"):
        with pytest.raises(TypeError):
            op * bad  # noqa: B018
    with pytest.raises(TypeError):
        op + 1.0  # noqa: B018 - a scalar is not an operator: shift with IdentityOperator


def test_model_operators_are_public_model_curvature_operators():
    torch.manual_seed(0)
    model = mlp(4, 3, width=5, depth=1).double()
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(12, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (12,), generator=g)
    loss = torch.nn.functional.cross_entropy
    for cls in (ls.HessianOperator, ls.GGNOperator):
        op = cls(model, loss, (X, y))
        assert isinstance(op, ls.ModelCurvatureOperator)
        assert op.dim == sum(p.numel() for p in model.parameters())
        assert op.dtype == torch.float64 and op.device == torch.device("cpu")
    H = ls.HessianOperator(model, loss, (X, y))
    ref = dense_hessian(model, loss, X, y)
    # the algebra on a model operator: the Hessian minus the GGN is the residual term, and a
    # shifted Hessian equals the dense one shifted
    torch.testing.assert_close(
        (H - 0.25 * ls.IdentityOperator.like(H)).to_dense(),
        ref - 0.25 * torch.eye(H.dim, dtype=torch.float64),
        rtol=0,
        atol=1e-10,
    )


def test_the_docs_worked_example_runs_and_its_fisher_is_the_dense_one():
    ns = run_readme_example("A worked example: the empirical Fisher", file="docs/operators.md")
    F, model, X, y, loss_fn = ns["F"], ns["model"], ns["X"], ns["y"], ns["loss_fn"]
    params = list(model.parameters())
    dense = torch.zeros(F.dim, F.dim, dtype=torch.float64)
    for i in range(len(X)):  # sample by sample, plain autograd
        g = torch.autograd.grad(loss_fn(model(X[i : i + 1]), y[i : i + 1]), params)
        flat = torch.cat([t.reshape(-1) for t in g])
        dense += torch.outer(flat, flat) / len(X)
    torch.testing.assert_close(F.to_dense(), dense, rtol=1e-10, atol=1e-12)
    exact = torch.linalg.eigvalsh(dense)
    torch.testing.assert_close(ns["top"].values, exact.flip(0)[:3], rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(ns["damped"].to_dense(), dense + 1e-3 * torch.eye(F.dim, dtype=torch.float64))
