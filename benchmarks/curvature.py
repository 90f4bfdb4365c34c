"""Top-10 Hessian eigenvalues: landscope vs PyHessian, curvlinops (+ scipy eigsh), hessian-eigenthings.

Every library sees the same function: the same trained model (in eval mode, so BatchNorm uses its
running statistics), the same 4,000 MNIST-1D training samples as one full batch, and the mean
cross-entropy. Measured, all in one process with ``torch.set_num_threads(2)``:

* wall time of a top-10 solve (operator construction included; median and min of the timed
  repetitions after one warm-up), matvecs, and the largest relative error of the ten eigenvalues
  against an exact float64 reference (dense ``eigh``, or ``eigsh`` at tol 1e-10 when the dense
  matrix would take too long), whose residuals are re-checked with plain ``torch.autograd``
  double-backward products, independent of landscope;
* one Hessian-vector product against one gradient (``torch.autograd.grad`` of the mean loss);
* ``ls.EigenTracker`` along consecutive SGD steps against cold ``ls.eigenpairs`` solves;
* a tiny Hugging Face GPT-2 with a dict batch (``gpt2_case.py``): the top-10 solve against
  curvlinops (PyHessian and hessian-eigenthings cannot express its loss) and a product against a
  gradient. Needs ``transformers`` in the bench venv.

The peers live in their own venv. curvlinops declares backpack-for-pytorch, which declares
torchvision, which would pull a multi-GB CUDA torch: install them without dependencies and add the
pure-Python packages they import (backpack is not imported for the Hessian)::

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install torch==2.13.0          # first: the CPU build
    .venv-bench/bin/pip install -e . numpy scipy
    .venv-bench/bin/pip install --no-deps pyhessian==0.1 hessian-eigenthings==1.0.0a5 \
        curvlinops-for-pytorch==3.0.1
    .venv-bench/bin/pip install einops einconv opt-einsum tqdm linear_operator

Then, from the repository root::

    .venv-bench/bin/python benchmarks/curvature.py [--quick] [--out benchmarks/results]

It writes ``curvature.json`` (every raw number and the machine) and ``curvature.md`` (tables).
A peer that is missing or fails is recorded with its error message; the run goes on.

On a GPU, ``--device cuda --out-name curvature_gpu`` moves the models and the data to the GPU
(PyHessian gets ``cuda=True``; the other peers follow the parameters' device), synchronises CUDA
before every timer read, turns TF32 off (cuDNN would otherwise run the float32 convolutions in
TF32, whose ~1e-3 rounding no float32 solve could get below) and writes ``curvature_gpu.{json,md}``
beside the CPU results. scipy's ``eigsh`` (curvlinops, the reference) still runs on the CPU, each
product crossing to the GPU and back; the dense reference is built and diagonalised on the GPU.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import gc
import importlib
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import peers
import torch
from machine import cpu_name, gpu_info, markdown_table, median_time, select_device, sync, versions
from peers import Solve
from torch import nn

import landscope as ls
from landscope.data import load_mnist1d
from landscope.models import cnn1d, mlp

K = 10
TOL = 1e-6
LR = 0.1
TRAIN_STEPS = 200
N_TRAIN = 4000
THREADS = 2
REF_TOL = 1e-10
LOSS = nn.CrossEntropyLoss()  # reduction="mean"

# The issue's targets.
TARGET_REL_ERR = 1e-6
TARGET_VS_CURVLINOPS = 0.5  # landscope time <= 0.5x curvlinops+eigsh time
TARGET_VS_PYHESSIAN_SPEED = 4.0  # >= 4x faster than PyHessian ...
TARGET_VS_PYHESSIAN_ACC = 1000.0  # ... while >= 1000x more accurate
TARGET_HVP_OVER_GRAD = 2.5
TARGET_TRACKER = 1 / 3

PEER_DISTS = (
    "torch",
    "numpy",
    "scipy",
    "landscope",
    "PyHessian",
    "curvlinops-for-pytorch",
    "backpack-for-pytorch",
    "hessian-eigenthings",
    "einops",
    "einconv",
    "linear_operator",
    "rich",
)


# ------------------------------------------------------------------------------------------------
# Models and data
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """A benchmark model: how to build it, and whether the tracker runs on it."""

    name: str
    description: str
    make: Callable[[], nn.Module]
    tracker: bool


GPT2 = "gpt2-tiny"  # run by gpt2_case.py: a dict batch, which the MODELS' harness cannot take
MODELS = (
    ModelSpec("mlp-32", "tanh MLP 40-32-32-10", lambda: mlp(40, 10, width=32, depth=2), True),
    ModelSpec("mlp-256", "tanh MLP 40-256-256-10", lambda: mlp(40, 10, width=256, depth=2), True),
    ModelSpec("cnn-bn", "cnn1d(norm='batch'), eval mode", lambda: cnn1d(norm="batch"), False),
)


def sgd_steps(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, steps: int, opt: torch.optim.Optimizer | None = None
) -> float:
    """Full-batch SGD (lr 0.1) on the mean cross-entropy, in train mode; returns the last loss."""
    opt = opt or torch.optim.SGD(model.parameters(), lr=LR)
    model.train()
    loss = float("nan")
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        out = LOSS(model(X), y)
        out.backward()
        opt.step()
        loss = out.item()
    for p in model.parameters():
        p.grad = None
    model.eval()
    return loss


def train_model(spec: ModelSpec, X: torch.Tensor, y: torch.Tensor, steps: int) -> tuple[nn.Module, dict]:
    """Build the model from ``torch.manual_seed(0)`` and train it; returns it in eval mode."""
    torch.manual_seed(0)
    model = spec.make()
    t0 = time.perf_counter()
    model.to(X.device)
    loss = sgd_steps(model, X, y, steps)
    sync()
    dim = sum(p.numel() for p in model.parameters())
    return model, {
        "train_steps": steps,
        "train_time_s": time.perf_counter() - t0,
        "final_train_loss": loss,
        "dim": dim,
    }


# ------------------------------------------------------------------------------------------------
# Reference eigenvalues
# ------------------------------------------------------------------------------------------------


def autograd_hvp64(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> Callable:
    """Plain float64 double-backward HVP (independent of landscope), for checking residuals."""
    m64 = copy.deepcopy(model).double().eval()
    params = [p for p in m64.parameters() if p.requires_grad]
    loss = LOSS(m64(X.double()), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        parts = torch.split(v, [p.numel() for p in params])
        vs = [t.reshape(p.shape) for t, p in zip(parts, params, strict=True)]
        out = torch.autograd.grad(grads, params, vs, retain_graph=True)
        return torch.cat([o.reshape(-1) for o in out])

    return hvp


def scipy_operator(
    matvec: Callable[[torch.Tensor], torch.Tensor], dim: int, counter: list[int] | None = None
) -> Any:
    """A float64 scipy LinearOperator around a torch matvec (counting calls in ``counter``)."""

    def counted(v: torch.Tensor) -> torch.Tensor:
        if counter is not None:
            counter[0] += 1
        return matvec(v).detach().to(torch.float64)

    return ls.MatvecOperator(counted, dim).to_scipy()


def reference(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, dense_max_dim: int, dense_budget_s: float
) -> dict:
    """Exact top-k eigenvalues in float64: dense ``eigh`` if affordable, else ``eigsh`` at 1e-10.

    The dense matrix is built column by column with the float64 landscope operator (vmap over
    columns or a loop, whichever a 16-column probe says is faster). The residuals of the returned
    pairs are re-measured with :func:`autograd_hvp64`.
    """
    from scipy.sparse.linalg import eigsh

    t0 = time.perf_counter()
    out: dict[str, Any] = {}
    probes = {}
    dim = sum(p.numel() for p in model.parameters())
    if dim <= dense_max_dim:
        V = torch.randn(dim, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        for vm in (True, False):
            op = ls.HessianOperator(model, LOSS, (X, y), dtype=torch.float64, vmap_matmat=vm)
            op.matvec(V[:, 0])  # build the cache
            sync()
            t = time.perf_counter()
            op.matmat(V)
            sync()
            probes[vm] = (time.perf_counter() - t) / 16
        out["dense_probe_s_per_column"] = {"vmap": probes[True], "loop": probes[False]}
    vm = min(probes, key=probes.get) if probes else False
    est = probes[vm] * dim if probes else math.inf
    out["dense_estimate_s"] = est
    if dim <= dense_max_dim and est <= dense_budget_s:
        op = ls.HessianOperator(model, LOSS, (X, y), dtype=torch.float64, vmap_matmat=vm)
        H = op.to_dense(torch.float64)
        out["dense_asymmetry"] = float((H - H.T).abs().max() / H.abs().max())
        evals, evecs = torch.linalg.eigh(0.5 * (H + H.T))
        order = torch.argsort(evals, descending=True)[:K]
        values, vectors = evals[order], evecs[:, order]
        out["method"] = f"dense float64 Hessian ({'vmap' if vm else 'loop'} columns) + eigh"
        out["smallest_eigenvalue"] = float(evals.min())
        del H, evecs
    else:
        op = ls.HessianOperator(model, LOSS, (X, y), dtype=torch.float64)
        counter = [0]
        v0 = np.random.default_rng(0).standard_normal(dim)
        vals, vecs = eigsh(
            scipy_operator(op.matvec, dim, counter), k=K, which="LA", tol=REF_TOL, ncv=max(4 * K, 40), v0=v0
        )
        order = np.argsort(-vals)
        values = torch.from_numpy(vals[order].copy())
        vectors = torch.from_numpy(vecs[:, order].copy())
        out["method"] = (
            f"scipy eigsh(k={K}, which='LA', tol={REF_TOL:g}, ncv={max(4 * K, 40)})"
            " on the float64 landscope operator"
        )
        out["n_matvecs"] = counter[0]
    hvp = autograd_hvp64(model, X, y)
    values, vectors = values.to(X.device), vectors.to(X.device)
    res = torch.stack([(hvp(vectors[:, i]) - values[i] * vectors[:, i]).norm() for i in range(K)])
    out["values"] = values.tolist()
    out["check_rel_residuals"] = (res / values.abs().max()).tolist()
    out["time_s"] = time.perf_counter() - t0
    return out


# ------------------------------------------------------------------------------------------------
# Solvers: each builds its operator and returns the top-k eigenvalues and its matvec count
# ------------------------------------------------------------------------------------------------


def solve_landscope(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, dtype: torch.dtype | None = None
) -> Solve:
    """``ls.eigenpairs(ls.HessianOperator(...), k=10, tol=1e-6)``."""
    return peers.solve_landscope(model, LOSS, X, y, K, TOL, dtype=dtype)


def solve_pyhessian(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> Solve:
    """PyHessian's deflated power iteration with its defaults (maxIter 100, tol 1e-3)."""
    return peers.solve_pyhessian(model, LOSS, X, y, K)


def solve_curvlinops(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> Solve:
    """curvlinops ``HessianLinearOperator(...).to_scipy()`` + ``eigsh(tol=1e-6)``."""
    return peers.solve_curvlinops(model, LOSS, X, y, K, TOL)


def solve_eigenthings(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> Solve:
    """hessian-eigenthings ``lanczos(HessianOperator(...), k=10, which='LA')``, its defaults."""
    return peers.solve_eigenthings(model, LOSS, X, y, K)


def true_residuals(model: nn.Module, X: torch.Tensor, y: torch.Tensor, sol: Solve) -> float:
    """Max ``‖H v − λ v‖ / |λ_max|`` of returned pairs against the float64 Hessian (autograd)."""
    hvp = autograd_hvp64(model, X, y)
    V = sol.vectors.to(device=X.device, dtype=torch.float64)
    res = [float((hvp(V[:, i]) - sol.values[i] * V[:, i]).norm()) for i in range(V.shape[1])]
    return max(res) / max(abs(v) for v in sol.values)


@dataclass(frozen=True)
class Library:
    """A row of the solve table."""

    key: str
    label: str
    solve: Callable[[nn.Module, torch.Tensor, torch.Tensor], Solve]
    note: str


LIBRARIES = (
    Library("landscope", "landscope (float32)", solve_landscope, f"eigenpairs tol={TOL:g}, float32 operator"),
    Library(
        "landscope-f64",
        "landscope (float64)",
        lambda m, X, y: solve_landscope(m, X, y, dtype=torch.float64),
        f"eigenpairs tol={TOL:g}, HessianOperator(dtype=torch.float64)",
    ),
    Library(
        "landscope-noprobe",
        "landscope (float32, no probe)",
        lambda m, X, y: peers.solve_landscope(m, LOSS, X, y, K, TOL, check_multiplicity=False),
        f"eigenpairs tol={TOL:g}, check_multiplicity=False: no search for missing copies of "
        "repeated eigenvalues, as eigsh",
    ),
    Library(
        "curvlinops",
        "curvlinops + eigsh",
        solve_curvlinops,
        f"HessianLinearOperator.to_scipy() + eigsh(tol={TOL:g})",
    ),
    Library(
        "pyhessian",
        "PyHessian",
        solve_pyhessian,
        "hessian().eigenvalues(top_n=10): power iteration, tol 1e-3, maxIter 100",
    ),
    Library(
        "eigenthings",
        "hessian-eigenthings",
        solve_eigenthings,
        "lanczos(k=10, which='LA'), defaults: 20 steps, no restart",
    ),
)


def rel_error(values: Iterable[float], ref: list[float]) -> float:
    """Largest ``|λ_i − λ_i^ref| / |λ_i^ref|`` over the top ``k`` (both sorted descending)."""
    v = sorted(values, reverse=True)[: len(ref)]
    return max(abs(a - b) / abs(b) for a, b in zip(v, ref, strict=False))


def _try_solve(
    lib: Library, model: nn.Module, X: torch.Tensor, y: torch.Tensor
) -> tuple[Solve | None, float, str | None]:
    """One timed solve: ``(solve, seconds, error)``; errors are returned, never raised."""
    gc.collect()
    sync()
    t0 = time.perf_counter()
    try:
        sol = lib.solve(model, X, y)
        sync()
    except Exception as e:  # noqa: BLE001 - a failing peer is a result, not a crash
        return None, time.perf_counter() - t0, f"{type(e).__name__}: {e}\n" + traceback.format_exc(limit=4)
    return sol, time.perf_counter() - t0, None


def time_solves(
    libs: Iterable[Library],
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    ref: list[float] | None,
    reps: int,
    budget_s: float,
) -> dict[str, dict]:
    """Warm up every library once, then time ``reps`` rounds, the libraries interleaved.

    Interleaving spreads any load from other processes over all libraries alike. A library whose
    warm-up took ``first`` seconds gets ``min(reps, (budget_s − first) // first)`` (at least 1)
    timed runs; one whose warm-up took more than half of ``budget_s`` gets none and its warm-up is
    the measurement (``warmup: false``). Errors are recorded, never raised.
    """
    libs = list(libs)
    out: dict[str, dict[str, Any]] = {lib.key: {"label": lib.label, "note": lib.note} for lib in libs}
    sols: dict[str, Solve] = {}
    planned: dict[str, int] = {}
    times: dict[str, list[float]] = {lib.key: [] for lib in libs}
    for lib in libs:
        sol, first, err = _try_solve(lib, model, X, y)
        r = out[lib.key]
        if err is not None:
            r["error"], planned[lib.key] = err, 0
            continue
        sols[lib.key], r["first_s"] = sol, first
        if first > budget_s / 2 or reps == 0:
            planned[lib.key], r["warmup"] = 0, False
            times[lib.key].append(first)
        else:
            planned[lib.key] = max(1, min(reps, int((budget_s - first) // max(first, 1e-9))))
            r["warmup"] = True
    for rnd in range(max(planned.values(), default=0)):
        for lib in libs:
            if rnd >= planned[lib.key] or "error" in out[lib.key]:
                continue
            sol, t, err = _try_solve(lib, model, X, y)
            if err is not None:
                out[lib.key]["error"] = err
                continue
            sols[lib.key] = sol
            times[lib.key].append(t)
    for lib in libs:
        r, ts = out[lib.key], times[lib.key]
        if "error" in r or not ts:
            continue
        sol = sols[lib.key]
        r.update(
            {
                "times_s": ts,
                "median_s": statistics.median(ts),
                "min_s": min(ts),
                "reps": len(ts),
                "values": sol.values,
                "n_matvecs": sol.n_matvecs,
                "info": sol.info,
                "per_matvec_s": statistics.median(ts) / max(sol.n_matvecs, 1),
            }
        )
        if ref is not None:
            r["max_rel_err"] = rel_error(sol.values, ref)
        if sol.vectors is not None:
            try:
                r["true_max_rel_residual"] = true_residuals(model, X, y, sol)
            except Exception as e:  # noqa: BLE001
                r["true_max_rel_residual_error"] = f"{type(e).__name__}: {e}"
    return out


# ------------------------------------------------------------------------------------------------
# HVP vs gradient
# ------------------------------------------------------------------------------------------------


def guarded(fn: Callable[[], dict]) -> dict:
    """Run ``fn``; on error return ``{"error": ...}``."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001
        return {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=4)}


def product_functions(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, v: torch.Tensor
) -> tuple[dict[str, Callable[[], object]], dict, list]:
    """Zero-argument callables, one per product to time, and setup costs / errors per library.

    Returns ``(functions, setup, cleanups)``; a library that fails to set up is left out, with its
    error in ``setup``.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    sizes = [p.numel() for p in params]
    vs = [t.reshape(p.shape) for t, p in zip(torch.split(v, sizes), params, strict=True)]
    fns: dict[str, Callable[[], object]] = {
        "gradient": lambda: torch.autograd.grad(LOSS(model(X), y), params)
    }
    setup: dict[str, Any] = {}
    cleanups: list[Callable[[], None]] = []

    def add(key: str, make: Callable[[], dict[str, Callable[[], object]]]) -> None:
        t0 = time.perf_counter()
        try:
            fns.update(make())
            setup[key] = {"setup_s": time.perf_counter() - t0}
        except Exception as e:  # noqa: BLE001
            setup[key] = {"error": f"{type(e).__name__}: {e}"}

    def landscope() -> dict:
        op = ls.HessianOperator(model, LOSS, (X, y))

        def first() -> None:
            op.clear_cache()
            op.matvec(v)

        return {"landscope": lambda: op.matvec(v), "landscope_first": first}

    def landscope64() -> dict:
        op = ls.HessianOperator(model, LOSS, (X, y), dtype=torch.float64)
        v64 = v.double()
        return {"landscope-f64": lambda: op.matvec(v64)}

    def curvlinops() -> dict:
        from curvlinops import HessianLinearOperator

        op = HessianLinearOperator(model, LOSS, params, [(X, y)], check_deterministic=False)
        A, vn = op.to_scipy(), v.double().cpu().numpy()
        return {"curvlinops": lambda: op @ v, "curvlinops_scipy": lambda: A.matvec(vn)}

    def pyhessian() -> dict:
        ph = importlib.import_module("pyhessian.hessian")
        for p in params:
            p.grad = None
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*create_graph=True.*")
            h = ph.hessian(model, LOSS, data=(X, y), cuda=X.device.type == "cuda")

        def clear() -> None:
            for p in params:
                p.grad = None

        cleanups.append(clear)
        return {"pyhessian": lambda: ph.hessian_vector_product(h.gradsH, h.params, vs)}

    def eigenthings() -> dict:
        from hessian_eigenthings import HessianOperator, supervised_loss

        op = HessianOperator(model, [(X, y)], supervised_loss(LOSS))
        return {"eigenthings": lambda: op.matvec(v)}

    for key, make in (
        ("landscope", landscope),
        ("landscope-f64", landscope64),
        ("curvlinops", curvlinops),
        ("pyhessian", pyhessian),
        ("eigenthings", eigenthings),
    ):
        add(key, make)
    return fns, setup, cleanups


def hvp_costs(model: nn.Module, X: torch.Tensor, y: torch.Tensor, reps: int, amortise_over: int = 30) -> dict:
    """Per-product times of every library against one gradient of the mean loss.

    All products are timed round-robin (``reps`` rounds after one untimed call each), so load
    from other processes hits them alike; median and min are kept. ``landscope_first`` is a
    matvec right after ``clear_cache()``: the linearisation (forward + backward with the graph
    kept) plus one product.
    """
    model.eval()
    dim = sum(p.numel() for p in model.parameters() if p.requires_grad)
    v = torch.randn(dim, generator=torch.Generator().manual_seed(2)).to(X.device)
    fns, setup, cleanups = product_functions(model, X, y, v)
    times: dict[str, list[float]] = {k: [] for k in fns}
    try:
        for f in fns.values():
            f()
        for _ in range(reps):
            for key, f in fns.items():
                sync()
                t0 = time.perf_counter()
                f()
                sync()
                times[key].append(time.perf_counter() - t0)
    finally:
        for c in cleanups:
            c()
    med = {k: statistics.median(t) for k, t in times.items()}
    out: dict[str, Any] = {
        "reps": reps,
        "setup": setup,
        "median_s": med,
        "min_s": {k: min(t) for k, t in times.items()},
        "times_s": times,
    }
    if "landscope" in med:
        g, warm, first = med["gradient"], med["landscope"], med["landscope_first"]
        out["cache_build_s"] = first - warm
        out["amortised_s"] = (first + (amortise_over - 1) * warm) / amortise_over
        out["amortised_over"] = amortise_over
        out["ratio_warm"] = warm / g
        out["ratio_amortised"] = out["amortised_s"] / g
        out["ratio_warm_min"] = out["min_s"]["landscope"] / out["min_s"]["gradient"]
    return out


# ------------------------------------------------------------------------------------------------
# EigenTracker along training
# ------------------------------------------------------------------------------------------------


def tracker_run(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    cold_every: int,
    budget_s: float = math.inf,
    ks: tuple[int, ...] = (1, 10),
) -> dict:
    """Train ``steps`` more SGD steps on a copy; after each, update one EigenTracker per k.

    Step 0 is the starting point (the trackers' first, cold, solve; excluded from the warm mean).
    At steps ``0, cold_every, 2·cold_every, …`` a cold ``ls.eigenpairs`` solve (seed = step) on a
    freshly built operator is taken as well, and its values compared with the tracker's (whose
    operator lives through the steps and must notice the in-place parameter updates). Stops early
    (``steps`` < ``steps_planned``) once ``budget_s`` is spent.
    """
    m = copy.deepcopy(model)
    opt = torch.optim.SGD(m.parameters(), lr=LR)
    op = ls.HessianOperator(m, LOSS, (X, y))
    trackers = {k: ls.EigenTracker(k=k, tol=TOL) for k in ks}
    rec: dict[int, dict[str, list]] = {
        k: {
            "warm_matvecs": [],
            "warm_time_s": [],
            "overlap": [],
            "top": [],
            "converged": [],
            "cold_steps": [],
            "cold_matvecs": [],
            "cold_time_s": [],
            "warm_vs_cold_rel_diff": [],
        }
        for k in ks
    }
    losses = []
    t_start = time.perf_counter()
    steps_done = 0
    for step in range(steps + 1):
        if step > 0 and time.perf_counter() - t_start > budget_s:
            break
        steps_done = step
        if step > 0:
            losses.append(sgd_steps(m, X, y, 1, opt))
        for k, trk in trackers.items():
            r = rec[k]
            sync()
            t0 = time.perf_counter()
            res = trk.update(op)
            sync()
            r["warm_time_s"].append(time.perf_counter() - t0)
            r["warm_matvecs"].append(res.n_matvecs)
            r["overlap"].append(res.overlap)
            r["top"].append(float(res.values[0]))
            r["converged"].append(bool(res.converged))
            if step % cold_every == 0:
                sync()
                t0 = time.perf_counter()
                fresh = ls.HessianOperator(m, LOSS, (X, y))  # also checks the cache refresh
                cold = ls.eigenpairs(fresh, k=k, which="LA", tol=TOL, seed=step)
                sync()
                r["cold_time_s"].append(time.perf_counter() - t0)
                r["cold_steps"].append(step)
                r["cold_matvecs"].append(cold.n_matvecs)
                r["warm_vs_cold_rel_diff"].append(rel_error(res.values.tolist(), cold.values.tolist()))
    out: dict[str, Any] = {
        "steps": steps_done,
        "steps_planned": steps,
        "budget_s": budget_s,
        "cold_every": cold_every,
        "train_losses": losses,
        "time_s": time.perf_counter() - t_start,
        "per_k": {},
    }
    for k in ks:
        r = rec[k]
        warm = r["warm_matvecs"][1:]  # step 0 is a cold start by construction
        cold = r["cold_matvecs"]
        summary = {
            "mean_warm_matvecs": statistics.mean(warm) if warm else math.nan,
            "mean_cold_matvecs": statistics.mean(cold),
            "mean_warm_time_s": statistics.mean(r["warm_time_s"][1:]) if warm else math.nan,
            "mean_cold_time_s": statistics.mean(r["cold_time_s"]),
            "max_warm_vs_cold_rel_diff": max(r["warm_vs_cold_rel_diff"]),
            "all_converged": all(r["converged"]),
            "min_overlap": min((o for o in r["overlap"] if o is not None), default=math.nan),
        }
        summary["ratio"] = summary["mean_warm_matvecs"] / summary["mean_cold_matvecs"]
        summary["pass"] = summary["ratio"] <= TARGET_TRACKER
        out["per_k"][str(k)] = {"summary": summary, "raw": r}
    return out


# ------------------------------------------------------------------------------------------------
# Targets, machine, output
# ------------------------------------------------------------------------------------------------


def targets(model_res: dict) -> dict:
    """Pass/fail of the issue's targets for one model (``None`` where a number is missing)."""
    s = model_res["solves"]
    ls_ = s.get("landscope", {})
    cv, ph = s.get("curvlinops", {}), s.get("pyhessian", {})
    out: dict[str, Any] = {}
    if "max_rel_err" in ls_:
        acc = ls_["max_rel_err"] <= TARGET_REL_ERR
        speed = ls_["median_s"] / cv["median_s"] if "median_s" in cv else None
        bare = s.get("landscope-noprobe", {})
        out["vs_curvlinops"] = {
            "landscope_max_rel_err": ls_["max_rel_err"],
            "time_ratio": speed,
            "pass": (acc and speed <= TARGET_VS_CURVLINOPS) if speed is not None else None,
            "time_ratio_no_probe": (
                bare["median_s"] / cv["median_s"] if "median_s" in cv and "median_s" in bare else None
            ),
        }
        if "median_s" in ph:
            faster = ph["median_s"] / ls_["median_s"]
            acc_ratio = ph["max_rel_err"] / max(ls_["max_rel_err"], 1e-300)
            out["vs_pyhessian"] = {
                "speedup": faster,
                "accuracy_ratio": acc_ratio,
                "pass": faster >= TARGET_VS_PYHESSIAN_SPEED and acc_ratio >= TARGET_VS_PYHESSIAN_ACC,
            }
    hv = model_res.get("hvp", {})
    if "ratio_warm" in hv:
        out["hvp"] = {
            "ratio_warm": hv["ratio_warm"],
            "ratio_amortised": hv["ratio_amortised"],
            "pass_warm": hv["ratio_warm"] <= TARGET_HVP_OVER_GRAD,
            "pass_amortised": hv["ratio_amortised"] <= TARGET_HVP_OVER_GRAD,
        }
    tr = model_res.get("tracker", {})
    if "per_k" in tr:
        out["tracker"] = {
            k: {"ratio": v["summary"]["ratio"], "pass": v["summary"]["pass"]} for k, v in tr["per_k"].items()
        }
    return out


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages (other processes share the cores)."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def calibrate() -> float:
    """GFLOP/s of a 1024² float32 matmul (median of 7): shows other load on the machine."""
    a = torch.randn(1024, 1024, generator=torch.Generator().manual_seed(3))
    return 2 * 1024**3 / median_time(lambda: a @ a, 7) / 1e9


def cpu_ticks() -> tuple[float, float, float] | None:
    """``(wall s, busy ticks of all CPUs, ticks of this process)`` from /proc (Linux only)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        mine = sum(int(x) for x in own[11:15])  # utime stime cutime cstime
    except (OSError, ValueError, IndexError):
        return None
    return time.perf_counter(), float(user + nice + system + irq + softirq + steal), float(mine)


def others_load(start: tuple[float, float, float] | None) -> float | None:
    """Average number of cores that *other* processes kept busy since ``start`` (0 = quiet)."""
    end = cpu_ticks()
    if start is None or end is None:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    return ((end[1] - start[1]) - (end[2] - start[2])) / hz / max(end[0] - start[0], 1e-9)


def machine_info(device: torch.device | None = None) -> dict:
    """What the numbers were measured on (GPU details too for a CUDA device)."""
    out = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_model": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average_start": load_average(),
        "matmul_gflops_start": calibrate(),
        "versions": versions(PEER_DISTS),
    }
    if device is not None and device.type == "cuda":
        out["device"] = str(device)
        out.update(gpu_info(device))
    return out


def notes(results: dict, args: argparse.Namespace) -> list[str]:
    """Caveats computed from the results: load, short repetitions, how each peer was run."""
    out = []
    loads = {n: m.get("other_processes_cores") for n, m in results["models"].items()}
    busy = {n: v for n, v in loads.items() if v is not None and v > 0.1}
    if busy:
        out.append(
            "Other processes were busy during this run (average cores they used: "
            + ", ".join(f"{n} {v:.2f}" for n, v in busy.items())
            + " of "
            f"{os.cpu_count()}). Timings under such load are inflated, unevenly: torch's "
            "2-thread kernels wait at OpenMP barriers for a descheduled thread. Repetitions "
            "are interleaved across libraries so that the load hits them alike; compare "
            "the min columns too."
        )
    short = [
        f"{n}/{r['label']} ({r['reps']})"
        for n, m in results["models"].items()
        for r in m.get("solves", {}).values()
        if "reps" in r and r["reps"] < args.reps
    ]
    if short:
        out.append(
            f"Fewer than {args.reps} timed repetitions (budget {args.budget_s:g} s per "
            "cell; '(no warm-up)' = the single run is the first): " + ", ".join(short)
        )
    if getattr(args, "device", "cpu") != "cpu":
        out.append(
            f"Device {args.device}: models, data, every operator and PyHessian (cuda=True) "
            "on the GPU; curvlinops' and the reference's scipy eigsh iterate on the CPU, "
            "each product crossing to the GPU and back (float64 vectors); hessian-"
            "eigenthings and the trackers stay on the GPU. TF32 is off. A peer that fails "
            "on the GPU is listed as 'not run' with its error."
        )
    out.append(
        "PyHessian: deflated power iteration, default maxIter=100 and tol=1e-3 on the "
        "relative change of the Rayleigh quotient between iterations; it finds the "
        "largest-magnitude eigenvalues in the order it converges to them, sorted here "
        "before the comparison."
    )
    out.append(
        "curvlinops: HessianLinearOperator in the model's float32 with "
        "check_deterministic=False (one fixed tensor batch), exposed to scipy via "
        f"to_scipy() (float64 vectors); eigsh(k={K}, which='LA', tol={TOL:g}, ncv default "
        "2k+1, v0 fixed)."
    )
    out.append(
        "hessian-eigenthings: lanczos() with its defaults (max_iter = 2k = 20 Lanczos "
        "steps, no restart, full reorthogonalisation), the documented usage; its error "
        "reflects the 20-step Krylov space, not a bug."
    )
    for n, m in results["models"].items():
        tr = m.get("tracker", {}).get("per_k", {})
        if str(K) in tr:
            cold = tr[str(K)]["summary"]["mean_cold_matvecs"]
            out.append(
                f"{n}: a Lanczos solve for k={K} pairs takes at least {K} products (each "
                f"of the {K} residuals needs one), so warm/cold ≥ {K}/{cold:.1f} = "
                f"{K / cold:.2f} however good the warm start."
            )
    for n, m in results["models"].items():
        tr = m.get("tracker", {})
        if "steps" in tr and tr["steps"] < tr["steps_planned"]:
            out.append(
                f"{n}: tracker stopped after {tr['steps']} of {tr['steps_planned']} steps "
                f"(time budget {tr['budget_s']:g} s)."
            )
    return out


def fmt(x: float | None, spec: str = ".3g") -> str:
    """Format a number for a table ('—' for missing)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return format(x, spec)


def yes_no(x: bool | None) -> str:
    """Pass/fail cell."""
    return "—" if x is None else ("PASS" if x else "FAIL")


HVP_LABELS = {
    "gradient": "gradient: autograd.grad of the mean loss (forward + backward)",
    "landscope": "landscope matvec, cache warm",
    "landscope_first": "landscope matvec after clear_cache() (linearise + 1 product)",
    "landscope-f64": "landscope float64 operator, cache warm",
    "curvlinops": "curvlinops `op @ v` (torch)",
    "curvlinops_scipy": "curvlinops `to_scipy().matvec` (float64 in/out)",
    "pyhessian": "PyHessian hessian_vector_product (graph kept)",
    "eigenthings": "hessian-eigenthings matvec (recomputes forward + double backward)",
}


def hvp_intro(hv: dict) -> str:
    """Sentence above the HVP table."""
    setup = "; ".join(
        f"{k} setup {v['setup_s'] * 1e3:.3g} ms" if "setup_s" in v else f"{k}: {v['error'][:80]}"
        for k, v in hv["setup"].items()
    )
    return (
        f"One product vs one gradient, {hv['reps']} interleaved rounds. landscope including "
        f"the cache build amortised over {hv.get('amortised_over', 30)} products: "
        f"{fmt(hv.get('amortised_s', math.nan) * 1e3)} ms = "
        f"{fmt(hv.get('ratio_amortised'), '.2f')}× gradient (cache build "
        f"{fmt(hv.get('cache_build_s', math.nan) * 1e3)} ms). Setup: {setup}."
    )


def hvp_rows(hv: dict) -> list[list[str]]:
    """Rows of the HVP table."""
    g, gmin = hv["median_s"]["gradient"], hv["min_s"]["gradient"]
    return [
        [
            HVP_LABELS.get(k, k),
            f"{t * 1e3:.3g} ms",
            f"{t / g:.2f}×",
            f"{hv['min_s'][k] * 1e3:.3g} ms",
            f"{hv['min_s'][k] / gmin:.2f}×",
        ]
        for k, t in hv["median_s"].items()
    ]


def solve_rows(model_res: dict) -> list[list[str]]:
    """Rows of the solve table of one model."""
    rows = []
    base = model_res["solves"].get("landscope", {}).get("median_s")
    for r in model_res["solves"].values():
        if "error" in r:
            rows.append([r["label"], "not run: " + r["error"].splitlines()[0][:90], "", "", "", "", ""])
            continue
        ratio = r["median_s"] / base if base else None
        reps = f"{r['reps']}" + ("" if r.get("warmup") else " (no warm-up)")
        rows.append(
            [
                r["label"],
                fmt(r["median_s"]),
                fmt(r["min_s"]),
                fmt(ratio, ".2f"),
                str(r["n_matvecs"]),
                fmt(r.get("max_rel_err"), ".1e"),
                reps,
            ]
        )
    return rows


SOLVE_HEADER = ["library", "median s", "min s", "× landscope", "matvecs", "max rel err", "reps"]


def command_line(results: dict) -> str:
    """The command that produced ``results`` (the options that change what is measured)."""
    st = results["settings"]
    flags = " --quick" if results["quick"] else ""
    if st.get("device", "cpu") != "cpu":
        flags += f" --device {st['device']}"
    if st.get("out_name", "curvature") != "curvature":
        flags += f" --out-name {st['out_name']}"
    if float(st.get("tracker_budget_s", 240.0)) != 240.0:
        flags += f" --tracker-budget-s {float(st['tracker_budget_s']):g}"
    return f"python benchmarks/curvature.py{flags}"


def markdown(results: dict) -> str:
    """The Markdown report."""
    mi = results["machine"]
    gpu = (
        f" GPU: {mi['gpu']} ({mi['gpu_memory_gib']:.0f} GiB), CUDA {mi['cuda']}, cuDNN "
        f"{mi['cudnn']}, TF32 {'on' if mi['cudnn_allow_tf32'] else 'off'}; models, data and "
        "products on the GPU, timers read after torch.cuda.synchronize()."
        if "gpu" in mi
        else ""
    )
    lines = [
        "# Curvature benchmark: top-10 Hessian eigenvalues",
        "",
        f"Generated by `{command_line(results)}`"
        f" on {mi['date']} — {mi['cpu_model']}, {mi['cpu_count']} cores, torch "
        f"{mi['torch']} with {mi['torch_threads']} threads, load average at start "
        f"{mi['load_average_start']} / end {mi.get('load_average_end')}, other processes "
        f"kept {fmt(mi.get('other_processes_cores'), '.2f')} cores busy on average. Total "
        f"run {results['total_time_s']:.0f} s." + gpu,
        "",
        "Same function for every library: the trained model in eval mode, the 4,000 "
        "MNIST-1D training samples as one batch, mean cross-entropy. Times include building "
        "the operator. `max rel err` = max over the top 10 of |λ − λ_ref| / |λ_ref|.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in mi["versions"].items() if v),
        "",
    ]

    def table(header: list[str], rows: list[list[str]]) -> None:
        lines.extend(markdown_table(header, rows))

    for name, mr in results["models"].items():
        ref = mr.get("reference", {})
        lines += [
            f"## {name}: {mr['description']} (dim {mr['train']['dim']})",
            "",
            f"Trained {mr['train']['train_steps']} full-batch SGD steps (lr {LR}), final "
            f"train loss {mr['train']['final_train_loss']:.4f}. Reference: "
            f"{ref.get('method', 'none: ' + ref.get('error', ''))}"
            + (f", {ref['n_matvecs']} float64 matvecs" if "n_matvecs" in ref else "")
            + (
                f"; independent autograd residual check max {max(ref['check_rel_residuals']):.1e}"
                if "check_rel_residuals" in ref
                else ""
            )
            + (f". λ_ref = {', '.join(f'{v:.5g}' for v in ref['values'])}." if "values" in ref else "."),
            "",
        ]
        table(SOLVE_HEADER, solve_rows(mr))
        for r in mr["solves"].values():
            if "true_max_rel_residual" in r:
                lines += [
                    f"{r['label']}: reported max relative residual "
                    f"{r['info']['max_rel_residual']:.2e} (converged="
                    f"{r['info']['converged']}); measured against the float64 Hessian "
                    f"with autograd: {r['true_max_rel_residual']:.2e}.",
                    "",
                ]
        hv = mr.get("hvp")
        if hv and "median_s" in hv:
            lines += [hvp_intro(hv), ""]
            table(["product", "median", "× gradient", "min", "× gradient (min)"], hvp_rows(hv))
        elif hv:
            lines += [f"HVP timing failed: {hv.get('error')}", ""]
        tr = mr.get("tracker")
        if tr and "per_k" in tr:
            rows = []
            for k, v in tr["per_k"].items():
                s = v["summary"]
                rows.append(
                    [
                        k,
                        fmt(s["mean_warm_matvecs"], ".1f"),
                        fmt(s["mean_cold_matvecs"], ".1f"),
                        fmt(s["ratio"], ".2f"),
                        fmt(s["mean_warm_time_s"]),
                        fmt(s["mean_cold_time_s"]),
                        fmt(s["min_overlap"], ".4f"),
                        fmt(s["max_warm_vs_cold_rel_diff"], ".1e"),
                        yes_no(s["pass"]),
                    ]
                )
            lines += [
                f"EigenTracker over {tr['steps']} SGD steps (measured after every step; "
                f"cold solves every {tr['cold_every']} steps; tol {TOL:g}):",
                "",
            ]
            table(
                [
                    "k",
                    "warm matvecs",
                    "cold matvecs",
                    "warm/cold",
                    "warm s",
                    "cold s",
                    "min overlap",
                    "max |warm−cold| rel",
                    f"≤ {TARGET_TRACKER:.2f}",
                ],
                rows,
            )
        elif tr and "error" in tr:
            lines += [f"EigenTracker: error {tr['error']}", ""]
    lines += ["## Targets", ""]
    rows = []
    for name, mr in results["models"].items():
        t = mr.get("targets", {})
        cv, ph, hv = t.get("vs_curvlinops", {}), t.get("vs_pyhessian", {}), t.get("hvp", {})
        tr = t.get("tracker", {})
        rows.append(
            [
                name,
                f"{fmt(cv.get('landscope_max_rel_err'), '.1e')} / "
                f"{fmt(cv.get('time_ratio'), '.2f')}× → {yes_no(cv.get('pass'))} "
                f"(no probe, as eigsh: {fmt(cv.get('time_ratio_no_probe'), '.2f')}×)",
                f"{fmt(ph.get('speedup'), '.1f')}× / {fmt(ph.get('accuracy_ratio'), '.2g')}× "
                f"→ {yes_no(ph.get('pass'))}",
                f"{fmt(hv.get('ratio_warm'), '.2f')}× → {yes_no(hv.get('pass_warm'))}; "
                f"amortised {fmt(hv.get('ratio_amortised'), '.2f')}× → "
                f"{yes_no(hv.get('pass_amortised'))}",
                "; ".join(f"k={k}: {fmt(v['ratio'], '.2f')} → {yes_no(v['pass'])}" for k, v in tr.items())
                or "—",
            ]
        )
    table(
        [
            "model",
            f"err ≤ {TARGET_REL_ERR:g} and time ≤ {TARGET_VS_CURVLINOPS}× curvlinops",
            f"≥ {TARGET_VS_PYHESSIAN_SPEED:g}× faster / ≥ {TARGET_VS_PYHESSIAN_ACC:g}× more "
            "accurate than PyHessian",
            f"HVP ≤ {TARGET_HVP_OVER_GRAD}× gradient",
            "tracker ≤ 1/3 cold",
        ],
        rows,
    )
    if "gpt2" in results:
        if "error" in results["gpt2"]:
            lines += ["## Tiny GPT-2", "", f"Not run: {results['gpt2']['error']}", ""]
        else:
            from gpt2_case import markdown_rows

            lines += markdown_rows(results["gpt2"])
    if results.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in results["notes"]] + [""]
    return "\n".join(lines)


def print_tables(results: dict) -> None:
    """Print the solve tables (rich if available)."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        Console = None  # noqa: N806
    for name, mr in results["models"].items():
        rows = solve_rows(mr)
        if Console is None:
            print(f"\n{name}")
            print(" | ".join(SOLVE_HEADER))
            for r in rows:
                print(" | ".join(r))
            continue
        t = Table(title=f"{name}: {mr['description']} (dim {mr['train']['dim']})")
        for h in SOLVE_HEADER:
            t.add_column(h)
        for r in rows:
            t.add_row(*r)
        Console().print(t)
    for name, mr in results["models"].items():
        print(name, json.dumps(mr.get("targets", {}), default=str))


def log(msg: str, t_start: float) -> None:
    """Progress line with elapsed time."""
    print(f"[{time.perf_counter() - t_start:7.1f}s] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------


def run_model(
    spec: ModelSpec, X: torch.Tensor, y: torch.Tensor, args: argparse.Namespace, t_start: float
) -> dict:
    """Everything measured on one model."""
    ticks = cpu_ticks()
    model, train_info = train_model(spec, X, y, args.train_steps)
    log(f"{spec.name}: trained ({train_info['train_time_s']:.1f}s, dim {train_info['dim']})", t_start)
    mr: dict[str, Any] = {
        "description": spec.description,
        "train": train_info,
        "load_average": load_average(),
        "matmul_gflops": calibrate(),
    }
    mr["reference"] = guarded(lambda: reference(model, X, y, args.dense_max_dim, args.dense_budget_s))
    ref = mr["reference"].get("values")
    log(f"{spec.name}: reference {mr['reference'].get('method', mr['reference'].get('error'))}", t_start)
    libs = [lib for lib in LIBRARIES if lib.key not in args.skip]
    mr["solves"] = time_solves(libs, model, X, y, ref, args.reps, args.budget_s)
    for r in mr["solves"].values():
        log(
            f"{spec.name}: {r['label']}: "
            + (
                r["error"].splitlines()[0]
                if "error" in r
                else f"{r['median_s']:.3f}s, {r['n_matvecs']} matvecs, err {r.get('max_rel_err', 0):.1e}"
            ),
            t_start,
        )
    mr["hvp"] = guarded(lambda: hvp_costs(model, X, y, args.hvp_reps))
    log(f"{spec.name}: hvp/grad {mr['hvp'].get('ratio_warm', mr['hvp'].get('error'))}", t_start)
    if spec.tracker and args.tracker_steps > 0:
        steps = args.tracker_steps if spec.name == "mlp-32" else args.tracker_steps_large
        if steps > 0:
            mr["tracker"] = guarded(
                lambda: tracker_run(model, X, y, steps, args.cold_every, args.tracker_budget_s)
            )
            log(f"{spec.name}: tracker done", t_start)
    mr["targets"] = targets(mr)
    mr["other_processes_cores"] = others_load(ticks)
    mr["time_s"] = time.perf_counter() - ticks[0] if ticks else None
    return mr


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` shrinks everything for a smoke test."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick", action="store_true", help="smoke test: mlp-32 only, 1 timed rep, 10 tracker steps"
    )
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument(
        "--models", nargs="*", default=None, help="subset of " + ", ".join([*(s.name for s in MODELS), GPT2])
    )
    p.add_argument(
        "--skip",
        nargs="*",
        default=[],
        help="library keys to skip: " + ", ".join(lib.key for lib in LIBRARIES),
    )
    p.add_argument("--reps", type=int, default=3, help="timed repetitions after the warm-up")
    p.add_argument(
        "--budget-s",
        type=float,
        default=60.0,
        help="time budget of one (model, library) cell; fewer reps when exceeded",
    )
    p.add_argument("--hvp-reps", type=int, default=7)
    p.add_argument("--train-steps", type=int, default=TRAIN_STEPS)
    p.add_argument("--tracker-steps", type=int, default=100, help="tracker steps on mlp-32")
    p.add_argument("--tracker-steps-large", type=int, default=100, help="tracker steps on mlp-256")
    p.add_argument(
        "--tracker-budget-s",
        type=float,
        default=240.0,
        help="stop a tracker run early after this many seconds (recorded)",
    )
    p.add_argument("--cold-every", type=int, default=10)
    p.add_argument("--dense-max-dim", type=int, default=6000)
    p.add_argument(
        "--dense-budget-s",
        type=float,
        default=120.0,
        help="use eigsh for the reference when the dense Hessian would take longer",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="'cpu' (default) or 'cuda' / 'cuda:N': where models, data and products live",
    )
    p.add_argument(
        "--out-name", default="curvature", help="stem of the output files: OUT/NAME.json and OUT/NAME.md"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.models = args.models or ["mlp-32"]
        args.reps, args.hvp_reps, args.tracker_steps = 1, 3, 10
        args.tracker_steps_large, args.cold_every = 5, 5
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark and write ``NAME.json`` and ``NAME.md`` (``--out-name``)."""
    args = parse_args(argv)
    device = select_device(args.device)
    torch.set_num_threads(THREADS)
    t_start = time.perf_counter()
    ticks = cpu_ticks()
    results: dict[str, Any] = {
        "quick": args.quick,
        "machine": machine_info(device),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "models": {},
        "notes": [],
    }
    ds = load_mnist1d(n_train=N_TRAIN, n_test=1000)
    X, y = ds.X_train.to(device), ds.y_train.to(device)
    for spec in MODELS:
        if args.models and spec.name not in args.models:
            continue
        results["models"][spec.name] = run_model(spec, X, y, args, t_start)
    if device.type == "cpu" and (not args.models or GPT2 in args.models):
        log("tiny GPT-2 (dict batch, its own .loss)", t_start)
        try:
            from gpt2_case import gpt2_case

            results["gpt2"] = gpt2_case(args.reps, args.hvp_reps)
        except ImportError as e:  # transformers is in the monitor extra
            results["gpt2"] = {"error": f"{type(e).__name__}: {e}"}
    results["machine"]["load_average_end"] = load_average()
    results["machine"]["matmul_gflops_end"] = calibrate()
    results["machine"]["torchvision_imported"] = "torchvision" in sys.modules
    results["total_time_s"] = time.perf_counter() - t_start
    results["machine"]["other_processes_cores"] = others_load(ticks)
    results["notes"] = notes(results, args)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out / f"{args.out_name}.json", args.out / f"{args.out_name}.md"
    json_path.write_text(json.dumps(results, indent=1, default=str))
    md_path.write_text(markdown(results))
    print_tables(results)
    log(f"wrote {json_path} and {md_path}", t_start)
    return results


if __name__ == "__main__":
    main()
