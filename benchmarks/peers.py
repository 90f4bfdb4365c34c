"""The peers' top-k Hessian eigensolvers, each with its defaults and its products counted.

Shared by ``curvature.py`` (CPU, MLPs and a CNN) and ``gpu_resnet.py`` (ResNet-lite on a GPU), so
that both compare with the same adapters. Every adapter returns a :class:`Solve`; the libraries are
in the ``bench`` extra (``pip install -e ".[bench]"`` in a separate venv: they pull their own torch).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

import landscope as ls


@dataclass
class Solve:
    """What one solve returns."""

    values: list[float]
    n_matvecs: int
    info: dict = field(default_factory=dict)
    vectors: torch.Tensor | None = None  # (dim, k), where the library returns them


def solve_landscope(
    model: nn.Module,
    loss: Callable,
    X: torch.Tensor,
    y: torch.Tensor,
    k: int,
    tol: float,
    dtype: torch.dtype | None = None,
    model_mode: str = "eval",
    check_multiplicity: bool | None = None,
) -> Solve:
    """``ls.eigenpairs(ls.HessianOperator(...), k, tol)``."""
    op = ls.HessianOperator(model, loss, (X, y), model_mode=model_mode, dtype=dtype)  # type: ignore[arg-type]
    res = ls.eigenpairs(op, k=k, which="LA", tol=tol, seed=0, check_multiplicity=check_multiplicity)
    info = {
        "converged": bool(res.converged),
        "n_restarts": res.n_restarts,
        "max_rel_residual": float(res.relative_residuals.max()),
    }
    return Solve(res.values.tolist(), res.n_matvecs, info, res.vectors)


def solve_pyhessian(model: nn.Module, loss: Callable, X: torch.Tensor, y: torch.Tensor, k: int) -> Solve:
    """PyHessian's deflated power iteration with its defaults (maxIter 100, tol 1e-3).

    Products are counted by wrapping ``pyhessian.hessian.hessian_vector_product``. PyHessian's
    constructor accumulates a create_graph gradient into ``p.grad``: cleared before and after.
    """
    ph = importlib.import_module("pyhessian.hessian")  # the package re-exports the class
    counter = [0]
    original = ph.hessian_vector_product

    def counted(gradsH: Any, params: Any, v: Any) -> Any:
        counter[0] += 1
        return original(gradsH, params, v)

    for p in model.parameters():
        p.grad = None
    ph.hessian_vector_product = counted
    try:
        torch.manual_seed(0)  # PyHessian draws its start vectors from the global RNG
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*create_graph=True.*")
            h = ph.hessian(model, loss, data=(X, y), cuda=X.device.type == "cuda")
            values, _ = h.eigenvalues(top_n=k)
        del h
    finally:
        ph.hessian_vector_product = original
        for p in model.parameters():
            p.grad = None
        model.eval()
    ordered = sorted((float(v) for v in values), reverse=True)
    return Solve(ordered, counter[0], {"raw_order": [float(v) for v in values]})


def solve_curvlinops(
    model: nn.Module, loss: Callable, X: torch.Tensor, y: torch.Tensor, k: int, tol: float
) -> Solve:
    """curvlinops ``HessianLinearOperator(...).to_scipy()`` + ``scipy.sparse.linalg.eigsh``.

    The operator runs in the model's dtype; ``to_scipy()`` exposes it with scipy's default
    float64, so ARPACK works in float64. ``check_deterministic=False``: the data is one fixed tensor
    batch (landscope does not check it either).
    """
    from curvlinops import HessianLinearOperator
    from scipy.sparse.linalg import LinearOperator, eigsh

    params = [p for p in model.parameters() if p.requires_grad]
    op = HessianLinearOperator(model, loss, params, [(X, y)], check_deterministic=False)
    A = op.to_scipy()
    counter = [0]

    def mv(x: np.ndarray) -> np.ndarray:
        counter[0] += 1
        return A.matvec(x)

    counted = LinearOperator(A.shape, matvec=mv, dtype=A.dtype)
    v0 = np.random.default_rng(0).standard_normal(A.shape[0])
    vals = eigsh(counted, k=k, which="LA", tol=tol, v0=v0, return_eigenvectors=False)
    return Solve(
        sorted(vals.tolist(), reverse=True),
        counter[0],
        {
            "operator_dtype": str(op.dtype),
            "scipy_dtype": str(A.dtype),
            "eigsh": f"k={k}, which='LA', tol={tol:g}, ncv default",
        },
    )


def solve_eigenthings(
    model: nn.Module, loss: Callable, X: torch.Tensor, y: torch.Tensor, k: int, max_iter: int | None = None
) -> Solve:
    """hessian-eigenthings 1.0: ``lanczos(HessianOperator(...), k, which='LA')``.

    With ``max_iter=None`` its default of ``2k`` Lanczos steps (no restarts; full
    reorthogonalisation only up to 50 steps). Products are counted by wrapping the operator.
    """
    from hessian_eigenthings import HessianOperator, LambdaOperator, lanczos, supervised_loss

    op = HessianOperator(model, [(X, y)], supervised_loss(loss))
    counter = [0]

    def mv(v: torch.Tensor) -> torch.Tensor:
        counter[0] += 1
        return op.matvec(v)

    counted = LambdaOperator(mv, op.size, op.device, op.dtype)
    kwargs: dict[str, Any] = {} if max_iter is None else {"max_iter": max_iter, "reorthogonalize": True}
    res = lanczos(counted, k=k, which="LA", seed=0, **kwargs)
    return Solve(
        sorted(res.eigenvalues.double().tolist(), reverse=True),
        counter[0],
        {
            "n_converged_own_criterion": int(res.converged.sum()),
            "own_tol": 1e-4,
            "iterations": res.iterations,
            "max_iter": max_iter or 2 * k,
        },
    )
