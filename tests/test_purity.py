"""State purity (DESIGN §3): the curvature engine never changes the model or the global RNG.

On models with BatchNorm (and Dropout): parameters, ``.grad``, BN running statistics and
``num_batches_tracked``, every module's ``training`` flag and ``torch.get_rng_state()`` are
bitwise unchanged by constructing an operator and by matvec / matmat / eigenpairs / densities,
whatever mode the model starts in and whatever ``model_mode`` / ``dropout`` the operator uses.
"""

from __future__ import annotations

import pytest
import torch
from reference import assert_same_state, dense_hessian, max_rel_err, model_state
from torch import nn

import landscope as ls

START_MODES = ["train", "eval", "mixed"]
OPERATOR_MODES = [  # (model_mode, dropout, chunk_size)
    ("eval", False, None),
    ("train", False, None),
    ("train", True, None),
    ("train", True, 7),
]


def _prepare(model: nn.Module, start: str) -> None:
    """Put the model in a start mode and give some parameters a non-None .grad."""
    if start == "train":
        model.train()
    elif start == "eval":
        model.eval()
    else:  # mixed: train overall, but BN and Dropout flags flipped individually
        model.train()
        for m in model.modules():
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Dropout)):
                m.eval()
                break
    g = torch.Generator().manual_seed(0)
    for i, p in enumerate(model.parameters()):
        if i % 2 == 0:
            p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
    torch.manual_seed(1234)  # a known global RNG state to compare against


@pytest.mark.parametrize("start", START_MODES)
@pytest.mark.parametrize("model_mode,dropout,chunk_size", OPERATOR_MODES)
def test_hessian_operator_is_pure(bn_case, ce, start, model_mode, dropout, chunk_size):
    c = bn_case
    _prepare(c.model, start)
    before = model_state(c.model)
    op = ls.HessianOperator(
        c.model, ce, (c.X, c.y), model_mode=model_mode, dropout=dropout, chunk_size=chunk_size
    )
    assert_same_state(before, c.model)
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    Hv = op.matvec(v)
    assert_same_state(before, c.model)
    op.matmat(torch.stack([v, 2 * v], dim=1))
    assert_same_state(before, c.model)
    ls.eigenpairs(op, k=2, tol=1e-3)
    assert_same_state(before, c.model)
    op.gradient()
    op.loss()
    assert_same_state(before, c.model)
    if not dropout:
        # the start mode of the model does not leak into the operator either
        ref = dense_hessian(c.model, ce, c.X, c.y, mode=model_mode, chunk_size=chunk_size)
        assert max_rel_err(Hv, ref @ v, ref=ref) <= 1e-10
        assert_same_state(before, c.model)


@pytest.mark.parametrize("start", ["train", "eval"])
def test_algorithms_are_pure(bn_dropout_case, ce, start):
    c = bn_dropout_case
    _prepare(c.model, start)
    before = model_state(c.model)
    op = ls.HessianOperator(c.model, ce, (c.X, c.y), model_mode="train", dropout=True)
    ls.eigenpairs(op, k=2, which="SA", tol=1e-3)
    ls.eigenpairs(op, k=1, method="power", tol=1e-3)
    ls.spectral_density(op, n_probes=2, n_steps=5)
    ls.hutchinson_trace(op, n_probes=4)
    trk = ls.EigenTracker(k=1, tol=1e-4)
    trk.update(op)
    trk.update(op)
    assert_same_state(before, c.model)


@pytest.mark.parametrize("start", ["train", "eval"])
@pytest.mark.parametrize("model_mode", ["eval", "train"])
def test_ggn_and_preconditioned_are_pure(bn_case, ce, start, model_mode):
    c = bn_case
    _prepare(c.model, start)
    before = model_state(c.model)
    ggn = ls.GGNOperator(c.model, ce, (c.X, c.y), model_mode=model_mode, dropout=True)
    v = torch.ones(ggn.dim, dtype=torch.float64)
    ggn.matvec(v)
    pre = ls.PreconditionedOperator(ggn, torch.full((ggn.dim,), 2.0, dtype=torch.float64))
    pre.matmat(torch.stack([v, v], dim=1))
    ls.eigenpairs(pre, k=1, tol=1e-3)
    assert_same_state(before, c.model)


def test_list_batches_are_pure(bn_dropout_case, ce):
    """Data as a list of batches (no cache: every matvec re-runs the forward passes)."""
    c = bn_dropout_case
    _prepare(c.model, "train")
    before = model_state(c.model)
    batches = [(c.X[:8], c.y[:8]), (c.X[8:], c.y[8:])]
    op = ls.HessianOperator(c.model, ce, batches, model_mode="train", dropout=True)
    op.matvec(torch.ones(op.dim, dtype=torch.float64))
    ls.eigenpairs(op, k=1, tol=1e-3)
    assert_same_state(before, c.model)


def test_no_grad_context_does_not_break_products(cnn_case, ce):
    """Measurements are often taken inside torch.no_grad(): the operator must still work."""
    c = cnn_case
    ref = dense_hessian(c.model, ce, c.X, c.y)
    v = torch.randn(ref.shape[0], generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        op = ls.HessianOperator(c.model, ce, (c.X, c.y))
        Hv = op.matvec(v)
    assert max_rel_err(Hv, ref @ v, ref=ref) <= 1e-10
    assert torch.is_grad_enabled()
