"""Top-10 Hessian eigenvalues of a ResNet-lite or a ResNet-18 on CIFAR-10-shaped data, on a GPU.

The model (``--arch``) is either ResNet-lite, ``landscope.models.build_model("resnet_lite",
(3, 32, 32), 10, width=16, depth=3, norm="batch", seed=0)`` (tanh, BatchNorm; 78,042 parameters),
or the CIFAR ResNet-18, ``landscope.models.resnet.resnet_lite((3, 32, 32), 10, width=64, stages=4,
blocks_per_stage=2, norm="batch", activation="relu")`` built from the CPU generator seeded 0
(11,173,962
parameters: a model of the size users run). Either is trained for a few mini-batch SGD steps so
that it is not at its initialisation. The data is synthetic and CIFAR-10-shaped: inputs
``(N, 3, 32, 32)`` drawn from a seeded ``torch.Generator``, labels in 10 classes from a fixed
random linear teacher on 4×4-pooled inputs (so SGD has something to learn). The function is the
mean cross-entropy over the first ``N`` samples with the model in **eval mode** (BatchNorm uses its
running statistics: PyHessian always calls ``model.eval()``, so every library sees the same
function). For each ``N`` (2,048 and 8,192 by default), all in float32 with TF32 off:

* landscope: ``ls.eigenpairs(ls.HessianOperator(model, loss, (X, y), model_mode="eval"), k=10,
  tol=1e-6)``: wall time (operator construction included), products, peak GPU memory
  (``torch.cuda.max_memory_allocated``), and the true residuals of its pairs against the float64
  Hessian;
* PyHessian ``hessian(model, loss, data=(X, y), cuda=True).eigenvalues(top_n=10)`` with its
  defaults (deflated power iteration, maxIter 100, tol 1e-3);
* hessian-eigenthings 1.0 ``lanczos(HessianOperator(...), k=10, which="LA")`` with its defaults
  (20 Lanczos steps);
* one product of each library against one gradient (``torch.autograd.grad`` of the mean loss),
  beside issue 17's candidates for the product's cost: PyTorch's double-backward formulas
  (``kernels="torch"``), forward over reverse (``jvp`` of ``grad``; ``--compile`` adds its
  ``torch.compile``), ``cudnn.benchmark`` and ``channels_last``; ``--profile`` adds the kernels
  that take a product's time (torch.profiler);

each library's error is measured against landscope's float64 solution (``HessianOperator(...,
dtype=torch.float64)``, ``tol=1e-10``, on the same device). Every timer is read after
``torch.cuda.synchronize()``; each library is run once untimed (warm-up) on a small batch first.

Usage, from the repository root (peers as in ``benchmarks/curvature.py``)::

    python benchmarks/gpu_resnet.py [--device cuda] [--sizes 2048 8192] [--out benchmarks/results]
    python benchmarks/gpu_resnet.py --arch resnet18 --sizes 512 --skip pyhessian eigenthings \
        --out-name gpu_resnet18
    bash benchmarks/gpu_run.sh OUT_DIR   # both, as one prepared GPU run
    .venv-bench/bin/python benchmarks/gpu_resnet.py --device cpu --quick   # smoke test on a CPU

It writes ``gpu_resnet.json`` (every number, the machine) and ``gpu_resnet.md`` (tables), after
every size, so an interrupted run keeps what it finished. A missing or failing peer (out of
memory, say) is recorded with its error; the run goes on.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import peers
import torch
from machine import gpu_info, markdown_table, select_device, versions
from peers import Solve
from torch import nn

import landscope as ls
from landscope.models import build_model
from landscope.models.resnet import resnet_lite

K = 10
TOL = 1e-6
REF_TOL = 1e-10
LOSS = nn.CrossEntropyLoss()  # reduction="mean"
INPUT_SHAPE = (3, 32, 32)
N_CLASSES = 10
MODEL_MODE = "eval"
DISTS = ("torch", "numpy", "landscope", "PyHessian", "hessian-eigenthings")


# ------------------------------------------------------------------------------------------------
# Device, timing, memory
# ------------------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a timer read after this sees it done)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured(fn: Callable[[], Any], device: torch.device) -> tuple[Any, dict]:
    """``fn()`` with its wall time and, on CUDA, the peak memory it allocated.

    ``peak_gib`` is ``torch.cuda.max_memory_allocated`` during the call (everything live: model,
    data and the call's own tensors); ``extra_gib`` is that peak minus what was allocated just
    before the call.
    """
    gc.collect()
    info: dict[str, Any] = {}
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    info["time_s"] = time.perf_counter() - t0
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        info["peak_gib"] = peak / 2**30
        info["extra_gib"] = (peak - base) / 2**30
    return out, info


def error_text(e: BaseException) -> str:
    """One line naming the error, then a short traceback."""
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}\n" + traceback.format_exc(limit=3)


def free(device: torch.device) -> None:
    """Release what a finished (or failed) solve left in the caching allocator."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------
# Data and model
# ------------------------------------------------------------------------------------------------


def make_data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` CIFAR-10-shaped inputs and labels from a seeded generator (on the CPU)."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, *INPUT_SHAPE, generator=gen)
    feats = nn.functional.avg_pool2d(X, 4).flatten(1)  # (n, 3·8·8)
    W = torch.randn(feats.shape[1], N_CLASSES, generator=gen)
    y = (feats @ W).argmax(dim=1)
    return X, y


def mean_loss(model: nn.Module, X: torch.Tensor, y: torch.Tensor, chunk: int = 2048) -> float:
    """Eval-mode mean cross-entropy over ``(X, y)`` (no gradient)."""
    model.eval()
    with torch.no_grad():
        total = sum(
            float(LOSS(model(X[i : i + chunk]), y[i : i + chunk])) * len(X[i : i + chunk])
            for i in range(0, len(X), chunk)
        )
    return total / len(X)


def train(model: nn.Module, X: torch.Tensor, y: torch.Tensor, steps: int, batch: int, lr: float) -> dict:
    """``steps`` mini-batch SGD steps in train mode (batches drawn from a seeded generator)."""
    gen = torch.Generator().manual_seed(1)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    before = mean_loss(model, X, y)
    model.train()
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(X), (batch,), generator=gen).to(X.device)
        opt.zero_grad(set_to_none=True)
        out = LOSS(model(X[idx]), y[idx])
        out.backward()
        opt.step()
        losses.append(out.item())
    for p in model.parameters():
        p.grad = None
    model.eval()
    return {
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "momentum": 0.9,
        "eval_loss_before": before,
        "eval_loss_after": mean_loss(model, X, y),
        "train_batch_losses": losses,
    }


# ------------------------------------------------------------------------------------------------
# Solvers: the shared peer adapters (peers.py), with this benchmark's k, tol, loss and mode
# ------------------------------------------------------------------------------------------------


def solve_landscope(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, dtype: torch.dtype | None = None, tol: float = TOL
) -> Solve:
    """``ls.eigenpairs(ls.HessianOperator(..., model_mode="eval"), k=10, tol=tol)``."""
    return peers.solve_landscope(model, LOSS, X, y, K, tol, dtype=dtype, model_mode=MODEL_MODE)


def solve_pyhessian(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> Solve:
    """PyHessian ``hessian(...).eigenvalues(top_n=10)`` with its defaults; products counted."""
    return peers.solve_pyhessian(model, LOSS, X, y, K)


def solve_eigenthings(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> Solve:
    """hessian-eigenthings ``lanczos(HessianOperator(...), k=10, which="LA")``, its defaults."""
    model.eval()  # its operator runs the model as it is: BatchNorm on running statistics, as the others
    return peers.solve_eigenthings(model, LOSS, X, y, K)


LIBRARIES: dict[str, tuple[str, Callable[..., Solve], str]] = {
    "landscope": (
        "landscope (float32)",
        solve_landscope,
        f"eigenpairs(k={K}, tol={TOL:g}), float32 operator",
    ),
    "pyhessian": ("PyHessian", solve_pyhessian, f"eigenvalues(top_n={K}); defaults maxIter=100, tol=1e-3"),
    "eigenthings": (
        "hessian-eigenthings",
        solve_eigenthings,
        f"lanczos(k={K}, which='LA'); default 2k = 20 steps, no restart",
    ),
}


def rel_error(values: list[float], ref: list[float]) -> float:
    """Largest ``|λ_i − λ_i^ref| / |λ_i^ref|`` over the top ``k`` (both sorted descending)."""
    v = sorted(values, reverse=True)[: len(ref)]
    return max(abs(a - b) / abs(b) for a, b in zip(v, ref, strict=False))


def rel_error_lm(values: list[float], ref_lm: list[float]) -> float:
    """:func:`rel_error` with both lists ordered by magnitude (for largest-magnitude solvers)."""
    v = sorted(values, key=abs, reverse=True)[: len(ref_lm)]
    r = sorted(ref_lm, key=abs, reverse=True)
    return max(abs(a - b) / abs(b) for a, b in zip(v, r, strict=False))


def run_library(
    key: str,
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    reps: int,
    budget_s: float,
    device: torch.device,
) -> tuple[dict, torch.Tensor | None]:
    """Run one library ``reps`` times (fewer if the first run took more than ``budget_s``).

    Returns its record (median/min wall time, products, the peak memory of the first run) and
    the eigenvectors of the last run, if the library returns them.
    """
    label, solve, note = LIBRARIES[key]
    rec: dict[str, Any] = {"label": label, "note": note}
    times, vectors = [], None
    for rep in range(reps):
        try:
            sol, meas = measured(lambda: solve(model, X, y), device)
            values, n_mv, info, vecs = sol.values, sol.n_matvecs, sol.info, sol.vectors
        except Exception as e:  # noqa: BLE001 - a failing peer is a result, not a crash
            rec["error"] = error_text(e)
            free(device)
            break
        times.append(meas["time_s"])
        if rep == 0:
            rec.update(
                {
                    "values": values,
                    "n_matvecs": n_mv,
                    "info": info,
                    **{k: v for k, v in meas.items() if k != "time_s"},
                }
            )
        vectors = vecs
        del vecs
        free(device)
        if sum(times) > budget_s:
            break
    if times:
        rec.update(
            {"times_s": times, "median_s": statistics.median(times), "min_s": min(times), "reps": len(times)}
        )
        rec["s_per_matvec"] = rec["median_s"] / max(rec["n_matvecs"], 1)
    return rec, vectors


# ------------------------------------------------------------------------------------------------
# One product vs one gradient
# ------------------------------------------------------------------------------------------------


def forward_over_reverse(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, vs: list[torch.Tensor]
) -> Callable[[], object]:
    """One product as ``jvp`` of ``grad`` (PyTorch's formulas; forward and backward every time).

    Issue 17's first candidate: it differentiates the backward pass forwards, so the double
    backward of a convolution (whose weight term runs a feature-map-sized kernel) never runs.
    """
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    fixed = dict(model.named_buffers())
    tangents = dict(zip(params, vs, strict=True))

    def loss_of(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return LOSS(torch.func.functional_call(model, {**p, **fixed}, (X,)), y)

    return lambda: torch.func.jvp(torch.func.grad(loss_of), (params,), (tangents,))[1]


PROFILED = ("landscope", "landscope_torch_kernels", "forward_over_reverse")


def profile_products(fns: dict[str, Callable[[], object]], device: torch.device, top: int = 12) -> dict:
    """The kernels that take a product's time (two products each): which double-backward kernels run."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    out: dict[str, Any] = {"clock": "device" if cuda else "cpu"}
    for key in PROFILED:
        if key not in fns:
            continue
        with profile(activities=activities) as prof:
            for _ in range(2):
                fns[key]()
                sync(device)
        attr = "self_device_time_total" if cuda else "self_cpu_time_total"
        events = sorted(prof.key_averages(), key=lambda e: getattr(e, attr, 0.0), reverse=True)
        total = sum(getattr(e, attr, 0.0) for e in events)
        out[key] = {
            "total_ms_per_product": total / 2e3,
            "top": [
                {
                    "name": e.key,
                    "ms_per_product": getattr(e, attr, 0.0) / 2e3,
                    "calls_per_product": e.count / 2,
                }
                for e in events[:top]
            ],
        }
    return out


def product_times(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    reps: int,
    device: torch.device,
    skip: list[str],
    compile_fwd: bool = False,
    profile: bool = False,
) -> dict:
    """Median time of one product of each library and of one gradient, interleaved rounds."""
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    dim = sum(p.numel() for p in params)
    v = torch.randn(dim, generator=torch.Generator().manual_seed(2)).to(device)
    vs = [
        t.reshape(p.shape) for t, p in zip(torch.split(v, [p.numel() for p in params]), params, strict=True)
    ]
    fns: dict[str, Callable[[], object]] = {
        "gradient": lambda: torch.autograd.grad(LOSS(model(X), y), params)
    }
    errors: dict[str, str] = {}
    op = ls.HessianOperator(model, LOSS, (X, y), model_mode=MODEL_MODE)

    def first() -> None:
        op.clear_cache()
        op.matvec(v)

    fns["landscope"] = lambda: op.matvec(v)
    fns["landscope_first"] = first
    keep: list[Any] = []
    # Issue 17's candidates for the 13.5x on CUDA, each timed in the same interleaved rounds:
    # PyTorch's own double-backward formulas (what every library ran before), cudnn.benchmark,
    # and channels_last. Profiling on CPU showed the cause: the double backward of a conv runs
    # a forward conv whose kernel is the whole feature map (curvature/kernels.py).
    plain = ls.HessianOperator(model, LOSS, (X, y), model_mode=MODEL_MODE, kernels="torch")
    fns["landscope_torch_kernels"] = lambda: plain.matvec(v)
    if device.type == "cuda":

        def benchmarked(o: ls.HessianOperator) -> Callable[[], object]:
            def run() -> object:
                with torch.backends.cudnn.flags(
                    enabled=True, benchmark=True, allow_tf32=torch.backends.cudnn.allow_tf32
                ):
                    return o.matvec(v)

            return run

        fns["landscope_cudnn_benchmark"] = benchmarked(op)
        fns["landscope_torch_kernels_cudnn_benchmark"] = benchmarked(plain)
    fns["forward_over_reverse"] = forward_over_reverse(model, X, y, vs)
    if compile_fwd:  # torch.compile of that product (compiled in the untimed first call)
        fns["forward_over_reverse_compiled"] = torch.compile(fns["forward_over_reverse"])
    if X.dim() == 4:
        model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        X_cl = X.contiguous(memory_format=torch.channels_last)
        for name, kern in (
            ("landscope_channels_last", "landscope"),
            ("landscope_torch_kernels_channels_last", "torch"),
        ):
            o = ls.HessianOperator(model_cl, LOSS, (X_cl, y), model_mode=MODEL_MODE, kernels=kern)
            keep.append(o)
            fns[name] = lambda o=o: o.matvec(v)
    if "pyhessian" not in skip:
        try:
            ph = importlib.import_module("pyhessian.hessian")
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*create_graph=True.*")
                h = ph.hessian(model, LOSS, data=(X, y), cuda=device.type == "cuda")
            keep.append(h)
            fns["pyhessian"] = lambda: ph.hessian_vector_product(h.gradsH, h.params, vs)
        except Exception as e:  # noqa: BLE001
            errors["pyhessian"] = error_text(e)
    if "eigenthings" not in skip:
        try:
            from hessian_eigenthings import HessianOperator, supervised_loss

            eop = HessianOperator(model, [(X, y)], supervised_loss(LOSS))
            fns["eigenthings"] = lambda: eop.matvec(v)
        except Exception as e:  # noqa: BLE001
            errors["eigenthings"] = error_text(e)
    times: dict[str, list[float]] = {k: [] for k in fns}
    kernels = None
    try:
        for key, f in list(fns.items()):
            try:
                f()
            except Exception as e:  # noqa: BLE001
                errors[key] = error_text(e)
                del fns[key], times[key]
        for _ in range(reps):
            for key, f in fns.items():
                sync(device)
                t0 = time.perf_counter()
                f()
                sync(device)
                times[key].append(time.perf_counter() - t0)
        kernels = profile_products(fns, device) if profile else None
    finally:
        for p in params:
            p.grad = None
        keep.clear()
        op.clear_cache()
        plain.clear_cache()
        model.eval()
    med = {k: statistics.median(t) for k, t in times.items()}
    out: dict[str, Any] = {
        "reps": reps,
        "median_s": med,
        "min_s": {k: min(t) for k, t in times.items()},
        "errors": errors,
    }
    if kernels is not None:
        out["kernels"] = kernels
    g = med["gradient"]
    out["ratio_to_gradient"] = {k: t / g for k, t in med.items()}
    if "landscope" in med:
        out["cache_build_s"] = med["landscope_first"] - med["landscope"]
    return out


# ------------------------------------------------------------------------------------------------
# One size
# ------------------------------------------------------------------------------------------------


def run_size(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    args: argparse.Namespace,
    device: torch.device,
    log: Callable[[str], None],
    save: Callable[[dict], None] = lambda out: None,
) -> dict:
    """Everything measured on the first ``N`` samples (``save(partial)`` after every step)."""
    n = len(X)
    out: dict[str, Any] = {"n": n, "solves": {}}
    keys = [k for k in LIBRARIES if k not in args.skip]
    landscope_vectors = None
    for key in keys:
        rec, vecs = run_library(key, model, X, y, args.reps, args.budget_s, device)
        if key == "landscope":
            landscope_vectors = vecs
        out["solves"][key] = rec
        log(
            f"N={n} {rec['label']}: "
            + (
                rec["error"].splitlines()[0]
                if "error" in rec
                else f"{rec['median_s']:.3f}s, {rec['n_matvecs']} products, peak "
                f"{rec.get('peak_gib', math.nan):.2f} GiB"
            )
        )
        save(out)
    # Reference: landscope in float64 on the same device, and the true residuals of the float32
    # pairs against it (ten float64 products through the same cached operator).
    ref_tol = args.ref_tol
    ref: dict[str, Any] = {
        "method": f"landscope eigenpairs(k={K}, tol={ref_tol:g}) on "
        "HessianOperator(dtype=torch.float64), same device"
    }
    try:
        if "reference" in args.skip:
            raise RuntimeError("skipped (--skip reference)")
        op64 = ls.HessianOperator(model, LOSS, (X, y), model_mode=MODEL_MODE, dtype=torch.float64)
        res, meas = measured(lambda: ls.eigenpairs(op64, k=K, which="LA", tol=ref_tol, seed=0), device)
        ref.update(
            {
                "values": res.values.tolist(),
                "n_matvecs": res.n_matvecs,
                "converged": bool(res.converged),
                "max_rel_residual": float(res.relative_residuals.max()),
                **meas,
            }
        )
        del res
        if landscope_vectors is not None:
            V = landscope_vectors.to(device=device, dtype=torch.float64)
            lam = torch.tensor(out["solves"]["landscope"]["values"], dtype=torch.float64, device=device)
            R = op64.matmat(V) - V * lam
            out["solves"]["landscope"]["true_max_rel_residual"] = float(R.norm(dim=0).max() / lam.abs().max())
            del V, R
        # PyHessian's power iteration finds the largest-magnitude eigenvalues: where it returned
        # negative ones, the top-10 by magnitude (which="LM") is its reference.
        if any(v < 0 for v in out["solves"].get("pyhessian", {}).get("values", [])):
            lm, meas_lm = measured(lambda: ls.eigenpairs(op64, k=K, which="LM", tol=ref_tol, seed=0), device)
            ref["values_lm"] = lm.values.tolist()
            ref["lm"] = {"n_matvecs": lm.n_matvecs, "converged": bool(lm.converged), **meas_lm}
        op64 = None  # free its cached float64 graph before the product timings
    except Exception as e:  # noqa: BLE001
        ref["error"] = error_text(e)
    free(device)
    out["reference"] = ref
    log(
        f"N={n} reference: "
        + (
            ref["error"].splitlines()[0]
            if "error" in ref
            else f"{ref['time_s']:.2f}s, {ref['n_matvecs']} float64 products"
        )
    )
    if "values" in ref:
        for rec in out["solves"].values():
            if "values" in rec:
                rec["max_rel_err"] = rel_error(rec["values"], ref["values"])
    ph = out["solves"].get("pyhessian", {})
    if "values_lm" in ref and "values" in ph:
        ph["max_rel_err_vs_top_algebraic"] = ph["max_rel_err"]
        ph["max_rel_err"] = rel_error_lm(ph["values"], ref["values_lm"])
        ph["error_reference"] = "top-10 by magnitude"
    save(out)
    try:
        if "products" in args.skip:
            raise RuntimeError("skipped (--skip products)")
        out["products"] = product_times(
            model, X, y, args.product_reps, device, args.skip, args.compile, args.profile
        )
    except Exception as e:  # noqa: BLE001
        out["products"] = {"error": error_text(e)}
    free(device)
    log(f"N={n} products/gradient: {out['products'].get('ratio_to_gradient', out['products'])}")
    return out


# ------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------


def fmt(x: float | None, spec: str = ".3g") -> str:
    """A number for a table ('—' where missing)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return format(x, spec)


PRODUCT_LABELS = {
    "gradient": "gradient: autograd.grad of the mean loss",
    "landscope": "landscope matvec, cache warm",
    "landscope_first": "landscope matvec after clear_cache() (linearise + 1 product)",
    "landscope_torch_kernels": "landscope matvec, kernels='torch' (PyTorch's double-backward formulas)",
    "landscope_cudnn_benchmark": "landscope matvec, cudnn.benchmark=True",
    "landscope_torch_kernels_cudnn_benchmark": "landscope matvec, kernels='torch', cudnn.benchmark=True",
    "landscope_channels_last": "landscope matvec, channels_last model and inputs",
    "landscope_torch_kernels_channels_last": "landscope matvec, kernels='torch', channels_last",
    "forward_over_reverse": "forward over reverse: torch.func jvp of grad (PyTorch's formulas, no cache)",
    "forward_over_reverse_compiled": "forward over reverse, torch.compile",
    "pyhessian": "PyHessian hessian_vector_product (graph kept)",
    "eigenthings": "hessian-eigenthings matvec (forward + double backward each time)",
}


def markdown(results: dict) -> str:
    """The Markdown report."""
    mi, st = results["machine"], results["settings"]
    where = (
        f"{mi['gpu']} ({mi['gpu_memory_gib']:.0f} GiB), CUDA {mi['cuda']}, TF32 "
        f"{'on' if mi['cudnn_allow_tf32'] else 'off'}"
        if "gpu" in mi
        else f"CPU ({mi['cpu_count']} cores, {mi['torch_threads']} torch threads)"
    )
    tr = results.get("train", {})
    commands = results.get("commands") or [results["command"]]
    lines = [
        f"# {ARCH_TITLES[st.get('arch', 'resnet_lite')]} on CIFAR-10-shaped data: top-10 Hessian eigenvalues",
        "",
        "Generated by "
        + "; ".join(f"`python benchmarks/gpu_resnet.py {c}`" for c in commands)
        + f" on {mi['date']} — {where}, torch {mi['torch']}. Total run "
        f"{results.get('total_time_s', math.nan):.0f} s.",
        "",
        f"Model: {model_text(st, results['dim'])}, "
        f"{tr.get('steps')} SGD steps (batch {tr.get('batch')}, lr {tr.get('lr')}, momentum "
        f"0.9; eval loss {fmt(tr.get('eval_loss_before'), '.4f')} → "
        f"{fmt(tr.get('eval_loss_after'), '.4f')}). Synthetic inputs (N, 3, 32, 32) from a "
        "seeded generator, labels from a random linear teacher. Function: mean cross-entropy "
        f"over N samples, model in {MODEL_MODE} mode (BatchNorm running statistics) for every "
        "library, float32. Times include building the operator; memory is "
        "`torch.cuda.max_memory_allocated` during the solve (model and data included; "
        "'extra' = above what was allocated before it). `max rel err` = max over the top 10 "
        "of |λ − λ_ref| / |λ_ref|, λ_ref from landscope in float64 on the same device (its "
        "tolerance is in each reference line).",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in mi["versions"].items() if v),
        "",
    ]

    def table(header: list[str], rows: list[list[str]]) -> None:
        if rows:
            lines.extend(markdown_table(header, rows))

    for n, sr in results["sizes"].items():
        ref = sr.get("reference", {})
        lines += [f"## N = {n}", ""]
        if "values" in ref:
            lines += [
                f"Reference: {ref['method']}: {ref['n_matvecs']} float64 products, "
                f"{ref['time_s']:.3g} s, peak {fmt(ref.get('peak_gib'), '.2f')} GiB, "
                f"converged={ref['converged']} (max relative residual "
                f"{ref['max_rel_residual']:.1e}). λ_ref = "
                + ", ".join(f"{v:.6g}" for v in ref["values"])
                + "."
                + (
                    ' Top 10 by magnitude (which="LM", PyHessian\'s reference, '
                    f"{ref['lm']['n_matvecs']} more products): "
                    + ", ".join(f"{v:.6g}" for v in ref["values_lm"])
                    + "."
                    if "values_lm" in ref
                    else ""
                ),
                "",
            ]
        else:
            why = (ref.get("error") or "not computed").splitlines()[0]
            lines += [f"Reference {'not run' if 'skipped' in why else 'failed'}: {why}", ""]
        rows = []
        base = sr["solves"].get("landscope", {}).get("median_s")
        for r in sr["solves"].values():
            if "error" in r:
                rows.append([r["label"], "not run: " + r["error"].splitlines()[0][:100]] + [""] * 7)
                continue
            rows.append(
                [
                    r["label"],
                    fmt(r["median_s"]),
                    fmt(r["median_s"] / base, ".2f") if base else "—",
                    str(r["n_matvecs"]),
                    fmt(r["s_per_matvec"] * 1e3),
                    fmt(r.get("peak_gib"), ".2f"),
                    fmt(r.get("extra_gib"), ".2f"),
                    fmt(r.get("max_rel_err"), ".1e") + (" (by magnitude)" if "error_reference" in r else ""),
                    str(r["reps"]),
                ]
            )
        if not rows:
            lines += ["No eigensolves in this run (`--skip`).", ""]
        table(
            [
                "library",
                "wall s (median)",
                "× landscope",
                "products",
                "ms / product",
                "peak GiB",
                "extra GiB",
                "max rel err",
                "reps",
            ],
            rows,
        )
        ph = sr["solves"].get("pyhessian", {})
        if "error_reference" in ph:
            lines += [
                f"PyHessian returned negative eigenvalues (it finds the largest in "
                f"magnitude): its error is against the top 10 by magnitude; against the top "
                f"10 algebraic it is {ph['max_rel_err_vs_top_algebraic']:.1e}. Its values: "
                + ", ".join(f"{v:.5g}" for v in ph["info"]["raw_order"])
                + ".",
                "",
            ]
        ls_ = sr["solves"].get("landscope", {})
        if "info" in ls_:
            lines += [
                f"landscope (float32): converged={ls_['info']['converged']}, reported max "
                f"relative residual {ls_['info']['max_rel_residual']:.2e}; against the "
                f"float64 Hessian: {fmt(ls_.get('true_max_rel_residual'), '.2e')}.",
                "",
            ]
        pr = sr.get("products", {})
        if "median_s" in pr:
            g = pr["median_s"]["gradient"]
            lines += [
                f"One product vs one gradient ({pr['reps']} interleaved rounds, medians; "
                f"landscope's cache build = first − warm = "
                f"{fmt(pr.get('cache_build_s', math.nan) * 1e3)} ms):",
                "",
            ]
            table(
                ["operation", "median ms", "× gradient", "min ms"],
                [
                    [PRODUCT_LABELS.get(k, k), fmt(t * 1e3), f"{t / g:.2f}×", fmt(pr["min_s"][k] * 1e3)]
                    for k, t in pr["median_s"].items()
                ],
            )
            for k, e in pr.get("errors", {}).items():
                lines += [f"{k}: product not timed: {e.splitlines()[0]}", ""]
            kern = pr.get("kernels", {})
            for k in PROFILED:
                if k not in kern:
                    continue
                lines += [
                    f"Kernels of one product, {PRODUCT_LABELS.get(k, k)} (torch.profiler, self "
                    f"{kern['clock']} time, {fmt(kern[k]['total_ms_per_product'])} ms in all):",
                    "",
                ]
                table(
                    ["kernel", "ms / product", "calls / product"],
                    [
                        [f"`{e['name'][:90]}`", fmt(e["ms_per_product"]), fmt(e["calls_per_product"])]
                        for e in kern[k]["top"]
                    ],
                )
        elif "error" in pr:
            lines += [f"Product timing failed: {pr['error'].splitlines()[0]}", ""]
    if results.get("notes"):
        lines += ["## Notes", ""] + [f"- {x}" for x in results["notes"]] + [""]
    return "\n".join(lines)


def machine_info(device: torch.device) -> dict:
    """What the numbers were measured on."""
    out: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(device),
        "versions": versions(DISTS),
    }
    if device.type == "cuda":
        out.update(gpu_info(device))
    return out


NOTES = [
    "PyHessian: deflated power iteration with its defaults (maxIter=100, tol=1e-3 on the relative "
    "change of the Rayleigh quotient); it finds largest-magnitude eigenvalues in the order it "
    "converges to them, sorted here before the comparison. Its constructor calls model.eval().",
    "hessian-eigenthings: lanczos() with its defaults (max_iter = 2k = 20 Lanczos steps, no "
    "restart); every product re-runs the forward pass and a double backward.",
    "landscope's float32 residual is measured against the float64 operator: ‖H₆₄v − λv‖ / |λ_max| "
    "over the ten returned pairs.",
]


ARCH_TITLES = {"resnet_lite": "ResNet-lite", "resnet18": "ResNet-18"}


def make_model(arch: str, width: int, depth: int) -> nn.Module:
    """ResNet-lite (tanh, one block per stage) or ResNet-18 (ReLU, two per stage), seeded 0."""
    if arch == "resnet_lite":
        return build_model(
            "resnet_lite", INPUT_SHAPE, N_CLASSES, width=width, depth=depth, norm="batch", seed=0
        )
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(0)
        return resnet_lite(
            INPUT_SHAPE,
            N_CLASSES,
            width=width,
            stages=depth,
            blocks_per_stage=2,
            norm="batch",
            activation="relu",
        )


def model_text(settings: dict, dim: int) -> str:
    """How the report names the model it measured."""
    width, depth = settings["width"], settings["depth"]
    if settings.get("arch", "resnet_lite") == "resnet_lite":
        return (
            f'`build_model("resnet_lite", (3, 32, 32), 10, width={width}, depth={depth}, '
            f'norm="batch", seed=0)` (tanh, dim {dim})'
        )
    return (
        f'`resnet_lite((3, 32, 32), 10, width={width}, stages={depth}, blocks_per_stage=2, norm="batch", '
        f'activation="relu")` from the CPU generator seeded 0 (the ResNet-18 layout, dim {dim})'
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` shrinks everything for a smoke test."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="'cuda' (default), 'cuda:N' or 'cpu'")
    p.add_argument(
        "--quick", action="store_true", help="smoke test: N = 8 and 16, width 4, 3 SGD steps, 1 rep"
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192])
    p.add_argument(
        "--arch",
        choices=tuple(ARCH_TITLES),
        default="resnet_lite",
        help="resnet_lite (78k parameters; default) or resnet18 (CIFAR ResNet-18, 11.2M)",
    )
    p.add_argument("--width", type=int, default=None, help="base width (16 for resnet_lite, 64 for resnet18)")
    p.add_argument("--depth", type=int, default=None, help="stages (3 for resnet_lite, 4 for resnet18)")
    p.add_argument("--train-steps", type=int, default=30)
    p.add_argument("--train-batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--reps", type=int, default=2, help="timed runs of each solve")
    p.add_argument(
        "--budget-s", type=float, default=30.0, help="no further runs of a solve once its runs took this long"
    )
    p.add_argument("--product-reps", type=int, default=10)
    p.add_argument("--ref-tol", type=float, default=REF_TOL, help="tolerance of the float64 reference solve")
    p.add_argument(
        "--skip",
        nargs="*",
        default=[],
        help="of: " + ", ".join(LIBRARIES) + ", reference (the float64 solve), products",
    )
    p.add_argument(
        "--allow-tf32",
        action="store_true",
        help="leave cuDNN's TF32 convolutions on (off by default: ~1e-3 rounding)",
    )
    p.add_argument(
        "--compile", action="store_true", help="also time torch.compile of the forward-over-reverse product"
    )
    p.add_argument(
        "--profile", action="store_true", help="profile the kernels of a product (torch.profiler tables)"
    )
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--out-name", default="gpu_resnet")
    args = p.parse_args(argv)
    default_width, default_depth = (64, 4) if args.arch == "resnet18" else (16, 3)
    args.width = default_width if args.width is None else args.width
    args.depth = default_depth if args.depth is None else args.depth
    if args.quick:
        args.sizes, args.width, args.train_steps, args.train_batch = [8, 16], 4, 3, 8
        args.reps, args.product_reps = 1, 2
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; write ``OUT/NAME.json`` and ``OUT/NAME.md`` after every size."""
    args = parse_args(argv)
    device = select_device(args.device, args.allow_tf32)
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f}s] {msg}", flush=True)

    argv_shown = sys.argv[1:] if argv is None else argv
    results: dict[str, Any] = {
        "command": " ".join(argv_shown),
        "machine": machine_info(device),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "model_mode": MODEL_MODE,
        "sizes": {},
        "notes": list(NOTES),
    }
    X_all, y_all = make_data(max(args.sizes))
    X_all, y_all = X_all.to(device), y_all.to(device)
    model = make_model(args.arch, args.width, args.depth).to(device)
    results["dim"] = sum(p.numel() for p in model.parameters())
    results["train"] = train(model, X_all, y_all, args.train_steps, args.train_batch, args.lr)
    log(
        f"dim {results['dim']}, trained: {results['train']['eval_loss_before']:.4f} → "
        f"{results['train']['eval_loss_after']:.4f}"
    )
    # Warm-up, not recorded: CUDA context, cuDNN kernels and the peers' imports, with products of
    # every library and a short landscope solve on a small batch.
    nw = min(256, min(args.sizes))
    warm = product_times(model, X_all[:nw], y_all[:nw], 1, device, args.skip)
    ls.eigenpairs(
        ls.HessianOperator(model, LOSS, (X_all[:nw], y_all[:nw]), model_mode=MODEL_MODE), k=2, tol=1e-3
    )
    free(device)
    log(f"warm-up done (errors: {list(warm['errors']) or 'none'})")
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out / f"{args.out_name}.json", args.out / f"{args.out_name}.md"

    def save(partial: dict) -> None:
        results["sizes"][str(partial["n"])] = partial
        results["total_time_s"] = time.perf_counter() - t_start
        json_path.write_text(json.dumps(results, indent=1, default=str))
        md_path.write_text(markdown(results))

    for n in args.sizes:
        save(run_size(model, X_all[:n], y_all[:n], args, device, log, save))
    log(f"wrote {json_path} and {md_path}")
    return results


if __name__ == "__main__":
    main()
