"""How loose can the monitor's eigensolver be? λ1 and the status at tol 1e-2, 3e-2 and 1e-1.

A monitor's verdict is a ratio λ1 / threshold read against 0.9 and 1 with a hysteresis of 0.1, so
λ1 is needed to a percent, not to 1e-4. A looser solve takes fewer Hessian-vector products, and
products are what a measurement costs. This benchmark runs the held-out workloads of
``lr_workloads.py`` (CE and MSE-free classification MLPs and CNNs with GD, momentum, SGD with
BatchNorm, Adam, RMSprop, and the AdamW GPT-2) for 300 steps at a learning rate near their
largest trainable one, with three monitors side by side (``every`` = 25, one per tol, the same
fixed batch), and measures at each of their measurements a reference λ1 by a cold solve at
tol 1e-6. For each tol it reports the largest and median relative error of λ1, the products per
measurement, and the measurements whose status differs from the one the reference λ1 gives
(the same hysteresis rule, run along the reference values).

    .venv/bin/python benchmarks/monitor_tolerance.py [--workloads NAME,...] [--steps 300]

Writes results/monitor_tolerance.{json,md}.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from lr_workloads import workloads
from machine import cpu_name, markdown_table, write_results

import landscope as ls
from landscope import SharpnessMonitor
from landscope.curvature import HessianOperator, PreconditionedOperator, adam_preconditioner
from landscope.curvature.batch_loss import make_batch_loss
from landscope.monitor.monitor import HYSTERESIS, classify
from landscope.monitor.short_runs import Batches, optimizer_choice
from landscope.training.optim import is_preconditioned

RESULTS = Path(__file__).parent / "results"
TOLS = (1e-2, 3e-2, 1e-1)
EVERY = 25
# η near the largest trainable of results/lr_workloads.md (not tuned here; a stressed run shows
# more of the landscape than a gentle one)
LRS = {
    "mlp-ce-gd": 0.5,
    "cnn-momentum": 0.05,
    "cnn-bn": 0.5,
    "mlp-adam": 3e-3,
    "mlp-rmsprop": 1e-3,
    "gpt2-adamw": 3e-3,
}


def reference(model: torch.nn.Module, w: Any, batch: Any, opt: torch.optim.Optimizer) -> float:
    """λ1 (of P⁻¹H for an adaptive optimiser) by a cold solve at tol 1e-6, as the monitor sees it."""
    op = HessianOperator(model, w.loss_fn, batch, model_mode="train")
    target = PreconditionedOperator(op, adam_preconditioner(opt, op)) if is_preconditioned(opt) else op
    return float(ls.eigenpairs(target, k=1, tol=1e-6, seed=1).values[0])


def run(name: str, steps: int) -> dict[str, Any]:
    w = workloads()[name]
    lr = LRS[name]
    torch.manual_seed(0)
    model = w.make()
    batches = Batches(w.data, w.batch_size, 0)
    it = iter(batches)
    f = make_batch_loss(w.loss_fn, None)
    opt = optimizer_choice(w.optimizer, w.momentum, weight_decay=w.weight_decay).build(model.parameters(), lr)
    fixed = next(iter(Batches(w.data, w.batch_size, 0)))
    mons = [SharpnessMonitor(model, w.loss_fn, fixed, every=EVERY, tol=t, strict=True) for t in TOLS]
    refs: dict[int, float] = {}
    for _ in range(steps):
        batch = next(it)
        opt.zero_grad()
        loss = f(model, batch)
        if not torch.isfinite(loss):
            break
        loss.backward()
        opt.step()
        n = len(mons[0].history)
        for m in mons:
            m.step(opt)
        if len(mons[0].history) > n:
            refs[mons[0].history[-1].step] = reference(model, w, fixed, opt)
    out: dict[str, Any] = {"workload": name, "description": w.description, "lr": lr, "tols": {}}
    for tol, m in zip(TOLS, mons, strict=True):
        recs = [r for r in m.history if r.step in refs and math.isfinite(refs[r.step])]
        errs = [abs(r.lambda1 / refs[r.step] - 1) for r in recs if refs[r.step] != 0]
        base, flips = None, 0
        for r in recs:
            base = classify(refs[r.step], r.threshold, 0.9, base, HYSTERESIS)
            flips += int(r.status not in ("warming_up", "dead") and r.status != base)
        out["tols"][f"{tol:g}"] = {
            "measurements": len(recs),
            "max_error": max(errs) if errs else None,
            "median_error": statistics.median(errs) if errs else None,
            "products": statistics.mean(r.n_matvecs for r in recs) if recs else None,
            "status_differs": flips,
            "statuses": sorted({r.status for r in recs}),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default=",".join(LRS))
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    rows, doc = [], {"every": EVERY, "steps": args.steps, "tols": TOLS, "runs": []}
    tic = time.perf_counter()
    for name in args.workloads.split(","):
        r = run(name, args.steps)
        doc["runs"].append(r)
        for tol, t in r["tols"].items():
            rows.append(
                [
                    r["description"],
                    f"{r['lr']:g}",
                    tol,
                    str(t["measurements"]),
                    f"{100 * t['max_error']:.3f} %",
                    f"{100 * t['median_error']:.4f} %",
                    f"{t['products']:.1f}",
                    str(t["status_differs"]),
                    ", ".join(t["statuses"]),
                ]
            )
        print(
            name,
            {
                k: (f"{v['max_error']:.2e}", f"{v['products']:.1f}", v["status_differs"])
                for k, v in r["tols"].items()
            },
            flush=True,
        )
    md = [
        "# The monitor's eigensolver tolerance: λ1 error, products and status",
        "",
        f"{cpu_name()}, torch {torch.__version__}; {args.steps} steps, every = {EVERY}, reference "
        f"λ1 by a cold solve at tol 1e-6 at each measurement; {time.perf_counter() - tic:.0f} s. "
        "`python benchmarks/monitor_tolerance.py`.",
        "",
        *markdown_table(
            [
                "workload",
                "η",
                "tol",
                "measurements",
                "max λ1 error",
                "median λ1 error",
                "products / measurement",
                "status ≠ reference's",
                "statuses",
            ],
            rows,
        ),
        "",
    ]
    write_results(RESULTS, "monitor_tolerance", doc, md)


if __name__ == "__main__":
    main()
