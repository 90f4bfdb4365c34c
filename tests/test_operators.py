"""Every curvature operator against an independent dense float64 reference (DESIGN §9.1)."""

from __future__ import annotations

import pytest
import torch
from reference import (
    LOSSES,
    dense_ggn,
    dense_hessian,
    flat_params,
    max_rel_err,
    reference_copy,
    with_spectrum,
)
from torch.func import functional_call, grad
from torch.utils.data import DataLoader, TensorDataset

import landscope as ls

TOL = 1e-10  # max |op − reference| / max |reference|


def _probes(dim: int, n: int = 3, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(dim, n, generator=g, dtype=torch.float64).to(dtype)


def _check_against(op: ls.CurvatureOperator, M: torch.Tensor, full: bool = True) -> None:
    """matvec, matmat and ``@`` of ``op`` equal the dense matrix ``M``.

    ``full``: also the whole matrix (``to_dense``, dim products); otherwise 6 random probes in one
    matmat, which catch any difference from ``M`` with probability one (for the slower variants).
    """
    assert op.dim == M.shape[0]
    assert op.shape == tuple(M.shape)
    V = _probes(op.dim, n=2 if full else 6)
    Hv = op.matvec(V[:, 0])
    assert Hv.shape == (op.dim,) and Hv.dtype == torch.float64
    assert max_rel_err(Hv, M @ V[:, 0], ref=M) <= TOL
    assert max_rel_err(op @ V[:, 1], M @ V[:, 1], ref=M) <= TOL
    HV = op.matmat(V)
    assert HV.shape == V.shape
    assert max_rel_err(HV, M @ V, ref=M) <= TOL
    # float32 vectors are accepted; the result has the input's dtype (float32 accuracy)
    v32 = V[:, 0].float()
    Hv32 = op.matvec(v32)
    assert Hv32.dtype == torch.float32 and Hv32.shape == (op.dim,)
    assert max_rel_err(Hv32, M @ v32.double(), ref=M) <= 1e-5
    HV32 = op.matmat(V.float())
    assert HV32.dtype == torch.float32
    assert max_rel_err(HV32, M @ V.float().double(), ref=M) <= 1e-5
    if full:
        assert max_rel_err(op @ torch.eye(op.dim, dtype=torch.float64), M) <= TOL


# -- the references themselves -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_reference_hessian_matches_finite_differences(cnn_case, ce, mode):
    """Central differences of the autograd gradient: guards the reference, not landscope."""
    c = cnn_case
    H = dense_hessian(c.model, ce, c.X, c.y, mode=mode)
    m = reference_copy(c.model, mode)
    names = c.names
    theta0 = flat_params(m)
    numels = [p.numel() for p in m.parameters()]
    shapes = [p.shape for p in m.parameters()]
    buffers = dict(m.named_buffers())

    def g(theta):
        d = {n: t.reshape(s) for n, t, s in zip(names, torch.split(theta, numels), shapes, strict=True)}
        return grad(lambda q: ce(functional_call(m, {**q, **buffers}, (c.X,)), c.y))(d)

    def flat_g(theta):
        gd = g(theta)
        return torch.cat([gd[n].reshape(-1) for n in names])

    h = 1e-5
    for i in (0, 10, 20, 60, 80):  # conv, BN weight, BN bias, BN weight, fc bias
        e = torch.zeros_like(theta0)
        e[i] = h
        fd = (flat_g(theta0 + e) - flat_g(theta0 - e)) / (2 * h)
        assert max_rel_err(fd, H[:, i], ref=H) <= 1e-7


# -- HessianOperator ----------------------------------------------------------------------------


@pytest.mark.parametrize("vmap_matmat", [False, True])
def test_hessian_eval_matches_dense(case, loss_fn, dense_H, vmap_matmat):
    op = ls.HessianOperator(case.model, loss_fn, (case.X, case.y), vmap_matmat=vmap_matmat)
    assert op.dim == case.dim
    assert op.dtype == torch.float64
    _check_against(op, dense_H)


def test_hessian_eval_is_default_mode(cnn_case, ce):
    """The default mode is eval (BN running statistics); train mode gives a different matrix."""
    c = cnn_case
    H_eval = dense_hessian(c.model, ce, c.X, c.y, mode="eval")
    H_train = dense_hessian(c.model, ce, c.X, c.y, mode="train")
    assert max_rel_err(H_eval, H_train) > 1e-3  # the fixture makes the modes distinguishable
    op = ls.HessianOperator(c.model, ce, (c.X, c.y))
    assert max_rel_err(op.to_dense(), H_eval) <= TOL


@pytest.mark.parametrize("chunk_size", [None, 7])
def test_hessian_train_mode_uses_batch_statistics_per_chunk(case, loss_fn, chunk_size):
    """model_mode="train": BN normalises each chunk with that chunk's statistics."""
    ref = dense_hessian(case.model, loss_fn, case.X, case.y, mode="train", chunk_size=chunk_size)
    op = ls.HessianOperator(case.model, loss_fn, (case.X, case.y), model_mode="train", chunk_size=chunk_size)
    _check_against(op, ref, full=chunk_size is None)
    if case.name == "cnn_bn" and chunk_size is not None:
        whole = dense_hessian(case.model, loss_fn, case.X, case.y, mode="train")
        assert max_rel_err(ref, whole) > 1e-3  # chunking matters in train mode: the test can fail


def test_hessian_train_mode_with_dropout_model(bn_dropout_case, ce):
    """Dropout stays off in train mode unless dropout=True; BN uses batch statistics."""
    c = bn_dropout_case
    ref = dense_hessian(c.model, ce, c.X, c.y, mode="train")
    op = ls.HessianOperator(c.model, ce, (c.X, c.y), model_mode="train")
    _check_against(op, ref)


@pytest.mark.parametrize("chunk_size", [None, 7])
def test_dropout_true_is_a_fixed_symmetric_matrix(bn_dropout_case, ce, chunk_size):
    """dropout=True fixes the masks by dropout_seed: a deterministic, symmetric matrix."""
    c = bn_dropout_case
    kw = dict(model_mode="train", dropout=True, chunk_size=chunk_size)
    op = ls.HessianOperator(c.model, ce, (c.X, c.y), **kw)
    V = _probes(op.dim, n=4)
    HV = op.matmat(V)
    assert torch.equal(HV, op.matmat(V))
    assert torch.equal(HV, ls.HessianOperator(c.model, ce, (c.X, c.y), **kw).matmat(V))
    # symmetric: uᵀ(Hw) == wᵀ(Hu) for every pair of probes
    G = V.T @ HV
    assert max_rel_err(G, G.T, ref=G) <= TOL
    no_dropout = dense_hessian(c.model, ce, c.X, c.y, mode="train", chunk_size=chunk_size)
    assert max_rel_err(HV, no_dropout @ V) > 1e-3  # the masks are really applied


def test_float32_vectors_accepted_result_in_input_dtype(case, loss_fn, dense_H):
    op = ls.HessianOperator(case.model, loss_fn, (case.X, case.y))
    V32 = _probes(case.dim, dtype=torch.float32)
    Hv = op.matvec(V32[:, 0])
    assert Hv.dtype == torch.float32
    assert max_rel_err(Hv, dense_H @ V32[:, 0].double(), ref=dense_H) <= 1e-5
    HV = op.matmat(V32)
    assert HV.dtype == torch.float32
    assert max_rel_err(HV, dense_H @ V32.double(), ref=dense_H) <= 1e-5


def test_float32_model_with_float64_dtype_override(mlp_case, ce):
    c = mlp_case
    model32 = c.model.float()
    X32 = c.X.float()
    ref = dense_hessian(reference_copy(model32).double(), ce, X32.double(), c.y)
    op = ls.HessianOperator(model32, ce, (X32, c.y), dtype=torch.float64)
    assert op.dtype == torch.float64
    assert max_rel_err(op.to_dense(), ref) <= TOL
    assert all(p.dtype == torch.float32 for p in model32.parameters())
    op32 = ls.HessianOperator(model32, ce, (X32, c.y))
    assert op32.dtype == torch.float32
    assert max_rel_err(op32.to_dense(), ref) <= 1e-5


def test_gradient_and_loss(case, loss_fn):
    op = ls.HessianOperator(case.model, loss_fn, (case.X, case.y), chunk_size=7)
    m = reference_copy(case.model)
    params = {n: p.detach() for n, p in m.named_parameters()}

    def f(p):
        return loss_fn(functional_call(m, p, (case.X,)), case.y)

    g = grad(f)(params)
    g_flat = torch.cat([g[n].reshape(-1) for n in case.names])
    assert max_rel_err(op.gradient(), g_flat) <= TOL
    assert op.loss() == pytest.approx(float(f(params)), rel=1e-12)


# -- chunking -----------------------------------------------------------------------------------


def test_chunked_equals_unchunked(case, loss_fn, dense_H):
    op = ls.HessianOperator(case.model, loss_fn, (case.X, case.y), chunk_size=7)
    _check_against(op, dense_H)


def test_list_of_unequal_batches_weighted_by_size(case, loss_fn, dense_H):
    X, y = case.X, case.y
    batches = [(X[:3], y[:3]), (X[3:11], y[3:11]), (X[11:], y[11:])]
    op = ls.HessianOperator(case.model, loss_fn, batches)
    assert op.n_samples == len(X)
    _check_against(op, dense_H, full=False)
    two = [(X[:13], y[:13]), (X[13:], y[13:])]  # two batches: not to be mistaken for (X, y)
    _check_against(ls.HessianOperator(case.model, loss_fn, two), dense_H, full=False)
    # the same list, further split into chunks of at most 7
    _check_against(ls.HessianOperator(case.model, loss_fn, batches, chunk_size=7), dense_H, full=False)


def test_unshuffled_dataloader(mlp_case, ce, mlp_ce_H):
    c = mlp_case
    loader = DataLoader(TensorDataset(c.X, c.y), batch_size=6, shuffle=False)
    _check_against(ls.HessianOperator(c.model, ce, loader), mlp_ce_H, full=False)


# -- GGNOperator --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_ggn_matches_jacobian_reference(case, loss_fn, mode):
    ref = dense_ggn(case.model, loss_fn, case.X, case.y, mode=mode)
    op = ls.GGNOperator(case.model, loss_fn, (case.X, case.y), model_mode=mode)
    _check_against(op, ref)
    # convex losses: positive semi-definite
    assert torch.linalg.eigvalsh(ref).min() >= -1e-12 * ref.abs().max()


def test_ggn_chunked_and_vmap(case, loss_fn):
    ref = dense_ggn(case.model, loss_fn, case.X, case.y)
    op = ls.GGNOperator(case.model, loss_fn, (case.X, case.y), chunk_size=7, vmap_matmat=True)
    _check_against(op, ref, full=False)


def test_ggn_of_mse_on_linear_model_equals_hessian():
    """For a model linear in its parameters and MSE loss, GGN == Hessian exactly."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(25, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (25,), generator=g)
    model = torch.nn.Linear(4, 3).double()
    H = ls.HessianOperator(model, LOSSES["mse"], (X, y)).to_dense()
    G = ls.GGNOperator(model, LOSSES["mse"], (X, y)).to_dense()
    assert max_rel_err(G, H) <= TOL


# -- PreconditionedOperator ---------------------------------------------------------------------


def _sorted_eigvals_of_product(Pinv_H: torch.Tensor) -> torch.Tensor:
    ev = torch.linalg.eigvals(Pinv_H)
    assert ev.imag.abs().max() <= 1e-8 * ev.abs().max()
    return ev.real.sort(descending=True).values


def test_preconditioned_random_diagonal(case, loss_fn, dense_H):
    g = torch.Generator().manual_seed(1)
    P = 0.1 + torch.rand(case.dim, generator=g, dtype=torch.float64) * 3
    op = ls.PreconditionedOperator(ls.HessianOperator(case.model, loss_fn, (case.X, case.y)), P)
    s = P.rsqrt()
    _check_against(op, s[:, None] * dense_H * s[None, :])
    ours = torch.linalg.eigvalsh(op.to_dense()).flip(0)
    ref = _sorted_eigvals_of_product(dense_H / P[:, None])
    assert (ours - ref).abs().max() <= 1e-9 * ref.abs().max()


def _adam_steps(model, loss_fn, X, y, n_steps=4, **kw):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, **kw)
    for _ in range(n_steps):
        opt.zero_grad()
        loss_fn(model(X), y).backward()
        opt.step()
    return opt


def _adam_formula(opt, params) -> torch.Tensor:
    parts = []
    for p in params:
        group = next(g for g in opt.param_groups if any(q is p for q in g["params"]))
        st = opt.state[p]
        t = float(st["step"])
        beta2, eps = group["betas"][1], group["eps"]
        parts.append(((st["exp_avg_sq"] / (1 - beta2**t)).sqrt() + eps).reshape(-1))
    return torch.cat(parts)


def test_adam_preconditioner_formula_and_eigenvalues(mlp_case, ce):
    c = mlp_case
    c.model.eval()
    opt = _adam_steps(c.model, ce, c.X, c.y, n_steps=5, betas=(0.9, 0.95), eps=1e-6)
    op = ls.HessianOperator(c.model, ce, (c.X, c.y))
    P = ls.adam_preconditioner(opt, op)
    assert P.shape == (op.dim,)
    expected = _adam_formula(opt, list(c.model.parameters()))
    assert torch.allclose(P.double(), expected.double(), rtol=1e-12, atol=0)
    # P = sqrt(v̂) + ε really is that formula: steps 5, beta2 0.95
    assert float(opt.state[c.model[0].weight]["step"]) == 5
    H = dense_hessian(c.model, ce, c.X, c.y)  # at the parameters after the Adam steps
    pre = ls.PreconditionedOperator(op, P)
    ours = torch.linalg.eigvalsh(pre.to_dense()).flip(0)
    ref = _sorted_eigvals_of_product(H / P[:, None].double())
    assert (ours - ref).abs().max() <= 1e-9 * ref.abs().max()
    top = ls.eigenpairs(pre, k=2)
    assert torch.allclose(top.values, ref[:2], rtol=1e-6, atol=0)


def test_adam_preconditioner_follows_parameter_subset(case, ce):
    c = case
    c.model.eval()
    opt = _adam_steps(c.model, ce, c.X, c.y, n_steps=3)
    sub = ls.HessianOperator(c.model, ce, (c.X, c.y), params=ls.layers(c.model, last=1))
    P = ls.adam_preconditioner(opt, sub)
    named = dict(c.model.named_parameters())
    expected = _adam_formula(opt, [named[n] for n in c.last_layer])
    assert P.shape == (sub.dim,)
    assert torch.allclose(P.double(), expected.double(), rtol=1e-12, atol=0)
    # None: every parameter of the optimiser, in order
    P_all = ls.adam_preconditioner(opt)
    assert torch.allclose(P_all.double(), _adam_formula(opt, list(c.model.parameters())), rtol=1e-12, atol=0)


# -- DenseOperator ------------------------------------------------------------------------------


def test_dense_operator():
    A, _ = with_spectrum(torch.linspace(-2, 5, 12), seed=3)
    op = ls.DenseOperator(A)
    _check_against(op, A)
    v32 = _probes(12, 1, dtype=torch.float32)[:, 0]
    out = op.matvec(v32)
    assert out.dtype == torch.float32
    assert torch.allclose(out.double(), A @ v32.double(), atol=1e-5)
    assert op.matmat(_probes(12, 2, dtype=torch.float32)).dtype == torch.float32


# -- live parameters (cache invalidation) --------------------------------------------------------


def test_operator_follows_in_place_parameter_updates(case, loss_fn):
    c = case
    c.model.eval()
    op = ls.HessianOperator(c.model, loss_fn, (c.X, c.y))
    H0 = op.to_dense()
    opt = torch.optim.SGD(c.model.parameters(), lr=0.5)
    opt.zero_grad()
    loss_fn(c.model(c.X), c.y).backward()
    opt.step()
    H1_ref = dense_hessian(c.model, loss_fn, c.X, c.y)
    assert max_rel_err(H0, H1_ref) > 1e-4  # the step really changed the Hessian
    assert max_rel_err(op.to_dense(), H1_ref) <= TOL
    assert max_rel_err(op.flat_params(), flat_params(c.model)) == 0
    # a manual in-place edit under no_grad too
    with torch.no_grad():
        next(c.model.parameters()).mul_(1.5)
    assert max_rel_err(op.to_dense(), dense_hessian(c.model, loss_fn, c.X, c.y)) <= TOL


def test_operator_follows_in_place_running_stat_updates(cnn_case, ce):
    """In eval mode BN running statistics are part of the function: changing them counts."""
    c = cnn_case
    op = ls.HessianOperator(c.model, ce, (c.X, c.y))
    H0 = op.to_dense()
    with torch.no_grad():
        c.model[2].running_var.mul_(3.0)
    ref = dense_hessian(c.model, ce, c.X, c.y)
    assert max_rel_err(H0, ref) > 1e-4
    assert max_rel_err(op.to_dense(), ref) <= TOL


def test_operator_follows_reassigned_parameter(mlp_case, ce):
    """A parameter replaced by a new tensor (e.g. load_state_dict(assign=True)) is read live."""
    c = mlp_case
    op = ls.HessianOperator(c.model, ce, (c.X, c.y))
    op.to_dense()
    state = {k: v * 1.3 for k, v in c.model.state_dict().items()}
    c.model.load_state_dict(state, assign=True)
    ref = dense_hessian(c.model, ce, c.X, c.y)
    assert max_rel_err(op.to_dense(), ref) <= TOL
