"""What measuring the landscape adds to the wall time of a training run.

An SGD run on MNIST-1D (4,000 samples, batch 64, 2,000 steps, cross-entropy) is timed without
measurements, with the losses and accuracies a measurement records (k = 0), and with the top-1 and
top-10 Hessian eigenpairs measured every 100 steps on a fixed Hessian set of S samples
(warm-started tracker, tol 1e-3), each in the foreground (the loop waits for it) and in the
background (``measure.background``: a worker process measures a snapshot while training goes on;
the rows are identical). Variants run interleaved, repeated, medians reported, with wall and CPU
time; CPU time includes the worker's, so it shows the work that background mode moves off the
loop rather than saves. Issue 4's targets: top-1 adds ≤ 5 %, top-10 ≤ 20 %. Writes
results/training_overhead.{json,md}.

    .venv/bin/python benchmarks/training_overhead.py [--quick] [--samples 64,512] [--models mlp,cnn]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from machine import cpu_name, cpu_seconds

from landscope.data import load_mnist1d
from landscope.models import build_model, get_loss
from landscope.training import MeasureConfig, OptimizerSpec, Trainer

RESULTS = Path(__file__).parent / "results"
BATCH, EVERY = 64, 100


def run_once(
    model_name: str, measure: MeasureConfig | None, steps: int, seed: int
) -> tuple[float, float, int]:
    ds = load_mnist1d(n_train=4000, n_test=1000)
    model = build_model(model_name, ds.input_shape, 10, width=64, depth=2, activation="relu", seed=seed)
    trainer = Trainer(
        model,
        get_loss("ce"),
        ds.train,
        test_data=ds.test,
        optimizer=OptimizerSpec(name="sgd", lr=0.05),
        steps=steps,
        batch_size=BATCH,
        measure=measure,
        seed=seed,
    )
    wall, cpu = time.perf_counter(), cpu_seconds()
    res = trainer.fit()
    mv = sum(r.get("n_matvecs", 0) for r in res.metrics)
    return time.perf_counter() - wall, cpu_seconds() - cpu, mv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="500 steps, one repeat")
    ap.add_argument("--samples", default="64,512", help="Hessian-set sizes S to try")
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tol", type=float, default=1e-3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    steps, repeats = (500, 1) if args.quick else (2000, args.repeats)
    variants: dict[str, MeasureConfig | None] = {
        "no measurement": None,
        "losses only (k=0)": MeasureConfig(every=EVERY, k=0),
    }
    run_once("mlp", MeasureConfig(every=EVERY, k=1, background=True), 2 * EVERY, 99)  # warm-up
    for s in (int(x) for x in args.samples.split(",")):
        for k in (1, 10):
            for bg in (False, True):
                variants[f"top-{k}, S={s}" + (", background" if bg else "")] = MeasureConfig(
                    every=EVERY, k=k, hessian_samples=s, tol=args.tol, background=bg
                )
    rows = []
    for model_name in args.models.split(","):
        times: dict[str, list[tuple[float, float, int]]] = {name: [] for name in variants}
        for r in range(repeats):
            for name, measure in variants.items():  # interleaved, so drifts hit every variant
                times[name].append(run_once(model_name, measure, steps, seed=r))
        base_wall = statistics.median(t[0] for t in times["no measurement"])
        base_cpu = statistics.median(t[1] for t in times["no measurement"])
        losses_cpu = statistics.median(t[1] for t in times["losses only (k=0)"])
        for name, ts in times.items():
            wall, cpu = statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts)
            row = {
                "model": model_name,
                "variant": name,
                "wall_s": wall,
                "cpu_s": cpu,
                "matvecs": ts[0][2],
                "overhead_wall": wall / base_wall - 1,
                "overhead_cpu": cpu / base_cpu - 1,
                "curvature_overhead_cpu": (cpu - losses_cpu) / base_cpu,
            }
            rows.append(row)
            print(
                f"{model_name:4s} {name:32s} wall {wall:6.2f} s ({100 * row['overhead_wall']:+6.1f} %)  "
                f"cpu {cpu:6.2f} s ({100 * row['overhead_cpu']:+6.1f} %; curvature "
                f"{100 * row['curvature_overhead_cpu']:+6.1f} %)  {row['matvecs']} products"
            )
    meta = {
        "steps": steps,
        "batch_size": BATCH,
        "every": EVERY,
        "tol": args.tol,
        "threads": 1,
        "repeats": repeats,
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "training_overhead.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [
        f"# Training overhead of measurement ({steps} SGD steps, batch {BATCH}, a measurement every "
        f"{EVERY} steps, tol {args.tol}, 1 thread, median of {repeats})",
        "",
        "Overheads are relative to the run without measurements; *curvature* is the part added "
        "by the eigenpairs alone (CPU time over the losses-only run). *background*: measured in "
        "a worker process on a snapshot while training goes on (`measure.background: true`); "
        "CPU time includes the worker's. One torch thread in the loop and one in the worker, "
        f"on {cpu_name()}.",
        "",
        "| model | variant | wall (s) | wall overhead | CPU (s) | CPU overhead | curvature (CPU) "
        "| products |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} | {r['variant']} | {r['wall_s']:.2f} | {100 * r['overhead_wall']:+.1f} % | "
        f"{r['cpu_s']:.2f} | {100 * r['overhead_cpu']:+.1f} % | "
        f"{100 * r['curvature_overhead_cpu']:+.1f} % | {r['matvecs']} |"
        for r in rows
    ]
    (RESULTS / "training_overhead.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
