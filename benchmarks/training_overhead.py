"""What measuring the landscape adds to the wall time of a training run.

An SGD run on MNIST-1D (4,000 samples, batch 64, 2,000 steps) is timed without measurements and
with the top-1 and top-10 Hessian eigenpairs measured every 100 steps on a fixed Hessian set
(warm-started tracker), plus the losses and accuracies the trainer records at each measurement.
Targets (issue 4): top-1 adds ≤ 5 %, top-10 ≤ 20 %. Writes results/training_overhead.{json,md}.

    .venv/bin/python benchmarks/training_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from landscope.data import load_mnist1d
from landscope.models import build_model, get_loss
from landscope.train import MeasureConfig, OptimizerSpec, Trainer

RESULTS = Path(__file__).parent / "results"


def run_once(model_name: str, measure: MeasureConfig | None, steps: int, batch: int, seed: int) -> float:
    ds = load_mnist1d(n_train=4000, n_test=1000)
    model = build_model(model_name, ds.input_shape, 10, width=64, depth=2, activation="relu", seed=seed)
    trainer = Trainer(model, get_loss("ce"), ds.train, test_data=ds.test,
                      optimizer=OptimizerSpec(name="sgd", lr=0.05), steps=steps, batch_size=batch,
                      measure=measure, seed=seed)
    tic = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - tic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="500 steps, one repeat")
    ap.add_argument("--hessian-samples", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    steps, repeats = (500, 1) if args.quick else (2000, 3)
    variants = {
        "no measurement": None,
        "losses only (k=0)": MeasureConfig(every=100, k=0),
        "top-1 every 100": MeasureConfig(every=100, k=1, hessian_samples=args.hessian_samples),
        "top-10 every 100": MeasureConfig(every=100, k=10, hessian_samples=args.hessian_samples),
    }
    rows = []
    for model_name in ("mlp", "cnn"):
        times = {name: [] for name in variants}
        for r in range(repeats):
            for name, measure in variants.items():  # interleaved, so drifts hit every variant
                times[name].append(run_once(model_name, measure, steps, 64, seed=r))
        base = statistics.median(times["no measurement"])
        for name, ts in times.items():
            t = statistics.median(ts)
            rows.append({"model": model_name, "variant": name, "seconds": t, "overhead": t / base - 1})
            print(f"{model_name:4s} {name:20s} {t:7.2f} s  overhead {100 * (t / base - 1):6.1f} %")
    meta = {"steps": steps, "batch_size": 64, "every": 100, "hessian_samples": args.hessian_samples,
            "threads": args.threads, "repeats": repeats, "torch": torch.__version__,
            "machine": platform.processor() or platform.machine()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "training_overhead.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [f"# Training overhead of measurement ({steps} SGD steps, batch 64, measurement every 100 "
             f"steps on {args.hessian_samples} samples, {args.threads} thread(s))", "",
             "| model | variant | wall time (s) | overhead |", "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['variant']} | {r['seconds']:.2f} | {100 * r['overhead']:+.1f} % |"
              for r in rows]
    (RESULTS / "training_overhead.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
