"""Bad input raises one clear error (a ValueError subclass) whose message names the bad value."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import landscope as ls


def raises(exc=ls.InputError, match: str | None = None):
    """``pytest.raises`` that also pins the hierarchy: every landscope error is a ValueError."""
    assert issubclass(exc, ValueError) and issubclass(exc, ls.LandscopeError)
    return pytest.raises(exc, match=match)


@pytest.fixture
def op(mlp_case, ce):
    return ls.HessianOperator(mlp_case.model, ce, (mlp_case.X, mlp_case.y))


@pytest.fixture
def dense11():
    return ls.DenseOperator(torch.eye(11, dtype=torch.float64))


# -- k ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["lanczos", "power", "dense"])
def test_k_exceeds_dim(dense11, method):
    with raises(match=r"k=12 exceeds .*11"):
        ls.eigenpairs(dense11, k=12, method=method)


def test_k_exceeds_model_dim(op):
    with raises(match=r"k=58 exceeds .*57"):
        ls.eigenpairs(op, k=58)


@pytest.mark.parametrize("k", [0, -3, 2.5, True, "4"])
def test_k_not_a_positive_int(dense11, k):
    with raises(match=f"k must be a positive integer, got {k!r}".replace(".", r"\.")):
        ls.eigenpairs(dense11, k=k)


def test_power_iteration_k(dense11):
    with raises(match="got 0"):
        ls.power_iteration(dense11, k=0)


# -- which / method / tol / v0 / max_basis -------------------------------------------------------


@pytest.mark.parametrize("which", ["la", "BE", "largest", None])
def test_bad_which(dense11, which):
    with raises(match=repr(which)):
        ls.eigenpairs(dense11, k=2, which=which)


@pytest.mark.parametrize("method", ["arnoldi", "Lanczos", ""])
def test_bad_method(dense11, method):
    with raises(match=f"method.*{method!r}"):
        ls.eigenpairs(dense11, k=2, method=method)


@pytest.mark.parametrize(
    "tol,shown", [(0, "0"), (-1e-6, "-1e-06"), (math.nan, "nan"), (math.inf, "inf"), ("1e-6", "'1e-6'")]
)
def test_bad_tol(dense11, tol, shown):
    with raises(match=f"tol.*{shown}"):
        ls.eigenpairs(dense11, k=2, tol=tol)


def test_power_refuses_sa(dense11):
    with raises(match="SA"):
        ls.eigenpairs(dense11, k=1, which="SA", method="power")


def test_v0_wrong_length(op):
    with raises(match=r"v0 must be a vector of length 57, got \(56,\)"):
        ls.eigenpairs(op, k=2, v0=torch.ones(56, dtype=torch.float64))
    with raises(match=r"length 57, got \(57, 1\)"):
        ls.eigenpairs(op, k=2, v0=torch.ones(57, 1, dtype=torch.float64))


def test_v0_zero_or_nan(dense11):
    with raises(match="non-zero"):
        ls.eigenpairs(dense11, k=1, v0=torch.zeros(11, dtype=torch.float64))
    with raises(match="finite"):
        ls.eigenpairs(dense11, k=1, v0=torch.full((11,), math.nan, dtype=torch.float64))


def test_max_basis_not_larger_than_k(dense11):
    with raises(match=r"max_basis.*k=3.*got 3"):
        ls.eigenpairs(dense11, k=3, max_basis=3)


def test_not_an_operator():
    with raises(match="list"):
        ls.eigenpairs([[1.0, 0.0], [0.0, 1.0]], k=1)


# -- matvec / matmat ------------------------------------------------------------------------------


def test_matvec_wrong_length(op):
    with raises(match=r"length 57, got shape \(56,\)"):
        op.matvec(torch.ones(56, dtype=torch.float64))
    with raises(match=r"length 57, got shape \(57, 1\)"):
        op.matvec(torch.ones(57, 1, dtype=torch.float64))
    with raises(match=r"length 57, got shape \(58,\)"):
        op @ torch.ones(58, dtype=torch.float64)


def test_matmat_wrong_shape(op):
    with raises(match=r"\(57, b\), got shape \(56, 2\)"):
        op.matmat(torch.ones(56, 2, dtype=torch.float64))
    with raises(match=r"\(57, b\), got shape \(57,\)"):
        op.matmat(torch.ones(57, dtype=torch.float64))


def test_matvec_integer_or_non_tensor(op):
    with raises(match="int64"):
        op.matvec(torch.ones(57, dtype=torch.int64))
    with raises(match="list"):
        op.matvec([1.0] * 57)


def test_dense_operator_bad_matrix():
    with raises(match=r"square.*\(3, 4\)"):
        ls.DenseOperator(torch.ones(3, 4))
    with raises(match="not symmetric"):
        ls.DenseOperator(torch.tensor([[1.0, 2.0], [0.0, 1.0]]))
    with raises(match="NaN"):
        ls.DenseOperator(torch.tensor([[math.nan, 0.0], [0.0, 1.0]]))


def test_preconditioner_bad_vector(op):
    with raises(match=r"length 57.*\(56,\)"):
        ls.PreconditionedOperator(op, torch.ones(56, dtype=torch.float64))
    P = torch.ones(57, dtype=torch.float64)
    P[4] = -0.5
    with raises(match="-0.5"):
        ls.PreconditionedOperator(op, P)


def test_adam_preconditioner_without_adam_state(mlp_case, op):
    sgd = torch.optim.SGD(mlp_case.model.parameters(), lr=0.1)
    with raises(match="Adam"):
        ls.adam_preconditioner(sgd, op)
    adam = torch.optim.Adam(mlp_case.model.parameters())
    with raises(match="no step"):
        ls.adam_preconditioner(adam, op)


# -- data ---------------------------------------------------------------------------------------


def test_empty_data(mlp_case, ce):
    X, y = mlp_case.X, mlp_case.y
    with raises(ls.DataError, match="0 samples"):
        ls.HessianOperator(mlp_case.model, ce, (X[:0], y[:0]))
    with raises(ls.DataError, match="empty|no batches"):
        ls.HessianOperator(mlp_case.model, ce, [])
    with raises(ls.DataError, match=r"batch 1.*0 samples"):
        ls.HessianOperator(mlp_case.model, ce, [(X[:5], y[:5]), (X[:0], y[:0])])


def test_length_mismatch(mlp_case, ce):
    X, y = mlp_case.X, mlp_case.y
    with raises(ls.DataError, match="X has 20 samples but y has 19"):
        ls.HessianOperator(mlp_case.model, ce, (X, y[:19]))
    with raises(ls.DataError, match=r"batch 1.*X has 5 samples but y has 4"):
        ls.HessianOperator(mlp_case.model, ce, [(X[:5], y[:5]), (X[5:10], y[5:9])])


def test_generator_is_not_re_iterable(mlp_case, ce):
    X, y = mlp_case.X, mlp_case.y
    gen = ((X[i : i + 5], y[i : i + 5]) for i in range(0, 20, 5))
    with raises(ls.DataError, match="generator"):
        ls.HessianOperator(mlp_case.model, ce, gen)
    with raises(ls.DataError, match="list_iterator"):
        ls.HessianOperator(mlp_case.model, ce, iter([(X, y)]))


class _ShufflingBatches:
    """Re-iterable, but every pass deals the samples into batches in a new order."""

    def __init__(self, X, y, batch_size=5):
        self.X, self.y, self.batch_size, self.passes = X, y, batch_size, 0

    def __iter__(self):
        g = torch.Generator().manual_seed(self.passes)
        self.passes += 1
        perm = torch.randperm(len(self.X), generator=g)
        for s in range(0, len(perm), self.batch_size):
            idx = perm[s : s + self.batch_size]
            yield self.X[idx], self.y[idx]


def test_shuffling_reiterable(mlp_case, ce):
    X, y = mlp_case.X, mlp_case.y
    with raises(ls.DataError, match=r"batch \d+ differs between two passes"):
        ls.HessianOperator(mlp_case.model, ce, _ShufflingBatches(X, y))
    loader = DataLoader(
        TensorDataset(X, y), batch_size=5, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    with raises(ls.DataError, match=r"batch \d+ differs between two passes"):
        ls.HessianOperator(mlp_case.model, ce, loader)


def test_nan_in_inputs(mlp_case, ce):
    X, y = mlp_case.X.clone(), mlp_case.y
    X[3, 2] = math.nan
    with raises(ls.DataError, match=r"X contains NaN.*\[3, 2\]"):
        ls.HessianOperator(mlp_case.model, ce, (X, y))
    with raises(ls.DataError, match=r"batch 1: X contains NaN.*\[0, 2\]"):
        ls.HessianOperator(mlp_case.model, ce, [(X[:3], y[:3]), (X[3:], y[3:])])
    X2 = mlp_case.X.clone()
    X2[0, 0] = math.inf
    with raises(ls.DataError, match=r"X contains NaN or inf.*\[0, 0\]"):
        ls.HessianOperator(mlp_case.model, ce, (X2, y))


def test_nan_in_regression_targets(mlp_case):
    y = torch.zeros(20, 3, dtype=torch.float64)
    y[7, 1] = math.nan
    with raises(ls.DataError, match=r"y contains NaN.*\[7, 1\]"):
        ls.HessianOperator(mlp_case.model, lambda o, t: F.mse_loss(o, t), (mlp_case.X, y))


def test_data_of_wrong_kind(mlp_case, ce):
    with raises(ls.DataError, match="single tensor"):
        ls.HessianOperator(mlp_case.model, ce, mlp_case.X)
    with raises(ls.DataError, match="int"):
        ls.HessianOperator(mlp_case.model, ce, 5)
    with raises(ls.DataError, match=r"batch 0.*pair.*length 3"):
        ls.HessianOperator(mlp_case.model, ce, [(mlp_case.X, mlp_case.y, mlp_case.y)])


def test_model_fails_on_data(mlp_case, ce):
    with raises(ls.DataError, match=r"\(20, 4\)"):
        ls.HessianOperator(mlp_case.model, ce, (mlp_case.X[:, :4], mlp_case.y))


@pytest.mark.parametrize("chunk_size", [0, -2, 2.5, True])
def test_bad_chunk_size(mlp_case, ce, chunk_size):
    with raises(ls.DataError, match=f"chunk_size.*{chunk_size!r}"):
        ls.HessianOperator(mlp_case.model, ce, (mlp_case.X, mlp_case.y), chunk_size=chunk_size)


# -- loss ---------------------------------------------------------------------------------------


def test_non_scalar_loss(mlp_case):
    def loss(out, y):
        return F.cross_entropy(out, y, reduction="none")

    with raises(match=r"scalar.*\(20,\)"):
        ls.HessianOperator(mlp_case.model, loss, (mlp_case.X, mlp_case.y))


@pytest.mark.parametrize("kind", ["HessianOperator", "GGNOperator"])
def test_sum_reduced_loss_gives_the_curvature_of_the_mean(mlp_case, kind):
    """``reduction="sum"`` is recognised and divided by each chunk's size (documented)."""

    def loss(out, y):
        return F.cross_entropy(out, y, reduction="sum")

    cls = getattr(ls, kind)
    c = mlp_case
    summed = cls(c.model, loss, (c.X, c.y), chunk_size=7)
    mean = cls(c.model, F.cross_entropy, (c.X, c.y))
    assert summed.loss_reduction == "sum" and mean.loss_reduction == "mean"
    v = torch.randn(mean.dim, dtype=mean.dtype, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(summed.matvec(v), mean.matvec(v), rtol=1e-10, atol=1e-12)


def test_loss_neither_mean_nor_sum(mlp_case):
    def loss(out, y):
        return F.cross_entropy(out, y, reduction="sum") ** 2

    with raises(match=r"4\.000.*reduction='mean'"):
        ls.HessianOperator(mlp_case.model, loss, (mlp_case.X, mlp_case.y))


def test_loss_not_callable(mlp_case):
    with raises(match="str"):
        ls.HessianOperator(mlp_case.model, "mse", (mlp_case.X, mlp_case.y))


# -- operator options ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["evall", "Train", "test", None])
def test_model_mode_typo(mlp_case, ce, mode):
    with raises(match=f"model_mode.*{mode!r}"):
        ls.HessianOperator(mlp_case.model, ce, (mlp_case.X, mlp_case.y), model_mode=mode)


def test_bad_params_pattern(mlp_case, ce):
    with raises(match=r"'0\.wieght'"):
        ls.HessianOperator(mlp_case.model, ce, (mlp_case.X, mlp_case.y), params="0.wieght")
    with raises(match=r"'layer\*'"):
        ls.GGNOperator(mlp_case.model, ce, (mlp_case.X, mlp_case.y), params=["0.weight", "layer*"])


def test_bad_dtype_and_model(mlp_case, ce):
    with raises(match="int32"):
        ls.HessianOperator(mlp_case.model, ce, (mlp_case.X, mlp_case.y), dtype=torch.int32)
    with raises(match="function"):
        ls.HessianOperator(lambda x: x, ce, (mlp_case.X, mlp_case.y))


def test_train_mode_chunk_of_one_sample_with_batchnorm(bn_dropout_case, ce):
    """chunk_size=19 on 20 samples leaves a last chunk of 1 sample: BatchNorm in train mode cannot
    normalise it. That must be a landscope error naming the chunk, not a torch error deep inside
    a matvec (or a Lanczos run)."""
    c = bn_dropout_case
    with raises(match="chunk|sample"):
        op = ls.HessianOperator(c.model, ce, (c.X, c.y), model_mode="train", chunk_size=19)
        op.matvec(torch.ones(op.dim, dtype=torch.float64))
