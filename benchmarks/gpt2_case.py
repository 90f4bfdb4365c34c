"""The tiny GPT-2 case of ``benchmarks/curvature.py``: a top-10 solve and a product's cost.

Random-init Hugging Face ``GPT2LMHeadModel`` (2 layers, default SDPA attention, dropout 0.1
configured and the model left in train mode, as in a training loop), one dict batch of 8
sequences of 32 tokens with padding and ``labels``, the model's own ``.loss``. Measured:

* a top-10 solve (tol 1e-6, eval mode: dropout off) by landscope and, where installed, by
  curvlinops + scipy ``eigsh`` (it takes dict inputs); PyHessian and hessian-eigenthings take
  ``(X, y)`` tensors and a loss of ``(output, y)`` only, so they cannot express this model's loss
  without user code, and are reported as such;
* the error of the ten values against a float64 reference (``eigsh`` at tol 1e-10 on a plain
  autograd double-backward product of a float64 copy, math attention kernel, dropout off);
* a product against a gradient (``transformer_products.measure``).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformer_products import SIZES, batch_for, measure
from transformers import GPT2Config, GPT2LMHeadModel

import landscope as ls

K, TOL, REF_TOL = 10, 1e-6, 1e-10


def build() -> tuple[GPT2LMHeadModel, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    cfg = GPT2Config(**SIZES["gpt2-tiny"], bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg)
    model.train()
    return model, batch_for(cfg, 8, 32)


def autograd_hvp64(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[Callable, int]:
    """Float64 double-backward product of the dropout-free ``.loss`` (independent of landscope)."""
    m64 = copy.deepcopy(model).double().eval()
    params = list(m64.parameters())
    with sdpa_kernel([SDPBackend.MATH]):
        grads = torch.autograd.grad(m64(**batch).loss, params, create_graph=True)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        parts = torch.split(v, [p.numel() for p in params])
        vs = [t.reshape(p.shape) for t, p in zip(parts, params, strict=True)]
        out = torch.autograd.grad(grads, params, vs, retain_graph=True)
        return torch.cat([o.reshape(-1) for o in out])

    return hvp, sum(p.numel() for p in params)


def _eigsh(matvec: Callable[[torch.Tensor], torch.Tensor], dim: int, tol: float) -> tuple[np.ndarray, int]:
    from scipy.sparse.linalg import LinearOperator, eigsh

    count = [0]

    def mv(x: np.ndarray) -> np.ndarray:
        count[0] += 1
        v = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64).reshape(-1))
        return matvec(v).detach().to(torch.float64).numpy()

    vals = eigsh(
        LinearOperator((dim, dim), matvec=mv, dtype=np.float64),
        k=K,
        which="LA",
        tol=tol,
        ncv=max(4 * K, 40),
        v0=np.random.default_rng(0).standard_normal(dim),
        return_eigenvectors=False,
    )
    return np.sort(vals)[::-1], count[0]


def _curvlinops(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[list[float], int]:
    """curvlinops' Hessian of the same loss: shifted logits against shifted labels, CE mean."""
    from curvlinops import HessianLinearOperator

    inputs = {k: v for k, v in batch.items() if k != "labels"}
    targets = batch["labels"][:, 1:].reshape(-1)

    class ShiftedLogits(nn.Module):  # curvlinops calls a Module functionally
        def __init__(self) -> None:
            super().__init__()
            self.lm = model

        def forward(self, X: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.lm(**X).logits[:, :-1].reshape(-1, model.config.vocab_size)

    model_func = ShiftedLogits()
    was = model.training
    model.eval()
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            op = HessianLinearOperator(
                model_func,
                nn.CrossEntropyLoss(),
                list(model_func.parameters()),
                [(inputs, targets)],
                batch_size_fn=lambda X: 1,
                check_deterministic=False,
            ).to_scipy()
            dim = op.shape[0]
            vals, n = _eigsh(lambda v: torch.as_tensor(op @ v.numpy()), dim, TOL)
    finally:
        model.train(was)
    return vals.tolist(), n


def gpt2_case(reps: int, product_reps: int) -> dict[str, Any]:
    """Everything the GPT-2 row of the benchmark reports (errors recorded, never raised)."""
    model, batch = build()
    hvp, dim = autograd_hvp64(model, batch)
    t0 = time.perf_counter()
    ref, n_ref = _eigsh(hvp, dim, REF_TOL)
    out: dict[str, Any] = {
        "dim": dim,
        "reference": {"values": ref.tolist(), "n_matvecs": n_ref, "seconds": time.perf_counter() - t0},
    }
    flags = [m.training for m in model.modules()]

    def landscope_solve() -> tuple[list[float], int]:
        res = ls.eigenpairs(ls.HessianOperator(model, data=batch), k=K, tol=TOL, seed=0)
        return res.values.tolist(), res.n_matvecs

    libs: dict[str, Callable[[], tuple[list[float], int]]] = {
        "landscope": landscope_solve,
        "curvlinops": lambda: _curvlinops(model, batch),
    }
    for name, solve in libs.items():
        try:
            times, (values, n) = [], ([], 0)
            for _ in range(reps):
                tic = time.perf_counter()
                values, n = solve()
                times.append(time.perf_counter() - tic)
            err = float(np.max(np.abs(np.array(values) - ref) / np.abs(ref)))
            out[name] = {
                "seconds": float(np.median(times)),
                "n_matvecs": n,
                "rel_error": err,
                "values": values,
            }
        except Exception as e:  # a missing or failing peer is a result, the run goes on
            out[name] = {"error": f"{type(e).__name__}: {e}"}
    for name in ("pyhessian", "hessian-eigenthings"):
        out[name] = {"error": "not expressible: takes (X, y) tensors and loss(output, y) only"}
    out["training_flags_unchanged"] = flags == [m.training for m in model.modules()]
    out["products"] = measure("gpt2-tiny", product_reps)
    return out


def markdown_rows(case: dict[str, Any]) -> list[str]:
    """The GPT-2 section of ``curvature.md``."""
    from machine import markdown_table

    rows = []
    for name in ("landscope", "curvlinops", "pyhessian", "hessian-eigenthings"):
        r = case[name]
        if "error" in r:
            rows.append([name, "-", "-", "-", r["error"][:90]])
        else:
            rows.append([name, f"{r['seconds']:.2f}", str(r["n_matvecs"]), f"{r['rel_error']:.1e}", ""])
    p = case["products"]
    lines = [
        "## Tiny GPT-2 (Hugging Face, dict batch, SDPA attention, dropout configured)",
        "",
        f"{case['dim']} parameters; top-{K} at tol {TOL:g}, errors against float64 `eigsh` at "
        f"{REF_TOL:g} on plain autograd products ({case['reference']['n_matvecs']} products). "
        f"Training flags unchanged by the solves: {case['training_flags_unchanged']}.",
        "",
        *markdown_table(["library", "solve (s)", "products", "max rel. error", "note"], rows),
        "",
        f"A product against a gradient ({p['gradient_s'] * 1e3:.2f} ms): landscope "
        f"{p['landscope_cached']['ratio_to_gradient']:.2f}× (linearisation cached), "
        f"{p['landscope_with_linearisation']['ratio_to_gradient']:.2f}× with it; plain autograd "
        f"double backward {p['autograd_double_backward']['ratio_to_gradient']:.2f}×.",
        "",
    ]
    return lines
