"""Predicted largest stable learning rate (``ls.find_max_stable_lr``) vs a brute-force sweep.

For each model (MNIST-1D, 1,000 training samples, MSE, full-batch GD, PyTorch default init with
seed 0): the brute-force η* is the largest η of the geometric grid 0.01·2^(i/4), i = 0…40
(0.01 to 10.24), whose 200-step run does not end ``diverged`` (the Trainer's criterion: loss NaN/inf
or above 1000× the initial loss); every grid point is run (diverging runs stop early). The finder
is timed on the same model (median of repeats, after a warm-up that pays torch.func's one-time
import). Issue 6's acceptance: predicted within a factor 1.5 of η* on every model, at ≤ 5 % of the
sweep's cost.

The first four models ("benchmark") are those the finder's design and its documented catapult
factors come from; the "held-out" ones were not used for any choice. Timings: one torch thread;
CPU time is the primary cost (the 2-core machine is shared, so wall time is noisy). Writes
results/lr_finder.{json,md}.

    .venv/bin/python benchmarks/lr_finder.py --suite gd-mse [--quick] [--repeats 3] [--models NAME,...]

The default suite is the six held-out workloads of ``lr_workloads.py`` (CE, minibatches, momentum,
BatchNorm, Adam, AdamW on a GPT-2, RMSprop): ``python benchmarks/lr_finder.py``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from machine import cpu_name

import landscope as ls
from landscope.data import load_mnist1d
from landscope.models import build_model, get_loss
from landscope.monitor.lr_finder import CATAPULT_FACTOR
from landscope.training import OptimizerSpec, Trainer

RESULTS = Path(__file__).parent / "results"
STEPS, SEED = 200, 0
GRID = [0.01 * 2 ** (i / 4) for i in range(41)]
MODELS = {  # name: (set, architecture, build_model keyword arguments)
    "mlp_tanh": ("benchmark", "mlp", dict(width=32, depth=2, activation="tanh", norm="none")),
    "mlp_relu_bn": ("benchmark", "mlp", dict(width=64, depth=2, activation="relu", norm="batch")),
    "cnn_relu": ("benchmark", "cnn", dict(width=16, depth=2, activation="relu", norm="none")),
    "cnn_relu_bn": ("benchmark", "cnn", dict(width=16, depth=2, activation="relu", norm="batch")),
    "mlp_relu": ("held-out", "mlp", dict(width=64, depth=2, activation="relu", norm="none")),
    "mlp_tanh_bn": ("held-out", "mlp", dict(width=32, depth=2, activation="tanh", norm="batch")),
    "mlp_tanh_wide": ("held-out", "mlp", dict(width=128, depth=3, activation="tanh", norm="none")),
    "cnn_tanh": ("held-out", "cnn", dict(width=16, depth=2, activation="tanh", norm="none")),
}
DESCRIPTION = {
    "mlp_tanh": "MLP 40-32-32-10 tanh",
    "mlp_relu_bn": "MLP 40-64-64-10 ReLU + BN",
    "cnn_relu": "CNN 16-32 ReLU",
    "cnn_relu_bn": "CNN 16-32 ReLU + BN",
    "mlp_relu": "MLP 40-64-64-10 ReLU",
    "mlp_tanh_bn": "MLP 40-32-32-10 tanh + BN",
    "mlp_tanh_wide": "MLP 40-128×3-10 tanh",
    "cnn_tanh": "CNN 16-32 tanh",
}


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def sweep(make, data, loss_fn) -> dict:
    runs = []
    for lr in GRID:

        def run(lr=lr):
            return Trainer(
                make(), loss_fn, data, optimizer=OptimizerSpec(name="gd", lr=lr), steps=STEPS, seed=SEED
            ).fit()

        res, wall, cpu = timed(run)
        runs.append({"lr": lr, "status": res.status, "steps": res.step, "wall_s": wall, "cpu_s": cpu})
    ok = [r["lr"] for r in runs if r["status"] != "diverged"]
    best = max(ok)
    return {
        "best_lr": best,
        "runs": runs,
        "wall_s": sum(r["wall_s"] for r in runs),
        "cpu_s": sum(r["cpu_s"] for r in runs),
        "non_monotone": any(r["status"] == "diverged" and r["lr"] < best for r in runs),
    }


def finder(make, data, loss_fn, rule: str, repeats: int) -> dict:
    results = [
        timed(lambda: ls.find_max_stable_lr(make(), loss_fn, data, optimizer="sgd", rule=rule))
        for _ in range(repeats)
    ]
    res = results[0][0]
    return {
        "lr": res.lr,
        "result": res.as_dict(),
        "wall_s": statistics.median(r[1] for r in results),
        "cpu_s": statistics.median(r[2] for r in results),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the four benchmark models, one repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default=None, help="comma-separated subset of " + ",".join(MODELS))
    ap.add_argument(
        "--suite",
        choices=("workloads", "gd-mse"),
        default="workloads",
        help="'workloads': six held-out workloads, finder vs range test vs brute force "
        "(lr_workloads.py, writes results/lr_workloads.*); 'gd-mse': the round-1 "
        "MSE / full-batch GD models (results/lr_finder.*)",
    )
    ap.add_argument("--workloads", default=None, help="comma-separated subset of the workloads")
    ap.add_argument(
        "--render",
        action="store_true",
        help="re-render results/lr_workloads.md from its .json (no measurement)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.suite == "workloads":
        from lr_workloads import run_suite

        run_suite(args.workloads.split(",") if args.workloads else None, RESULTS, args.render)
        return
    names = (
        args.models.split(",")
        if args.models
        else [n for n in MODELS if not args.quick or MODELS[n][0] == "benchmark"]
    )
    repeats = 1 if args.quick else args.repeats
    ds = load_mnist1d(n_train=1000, n_test=1000)
    loss_fn = get_loss("mse")
    # warm-up: the first torch.func call of a process imports for seconds; no model should pay it
    ls.find_max_stable_lr(
        build_model("mlp", ds.input_shape, 10, width=8, depth=1, seed=SEED),
        loss_fn,
        (ds.X_train[:64], ds.y_train[:64]),
    )
    rows = []
    for name in names:
        group, arch, kw = MODELS[name]

        def make(arch=arch, kw=kw):
            return build_model(arch, ds.input_shape, 10, seed=SEED, **kw)

        cat = finder(make, ds.train, loss_fn, "catapult", repeats)
        cur = finder(make, ds.train, loss_fn, "curvature", repeats)
        sw = sweep(make, ds.train, loss_fn)
        r = cat["result"]
        best = sw["best_lr"]
        row = {
            "model": name,
            "description": DESCRIPTION[name],
            "set": group,
            "lambda1_init": r["lambda1_init"],
            "lambda1_early": r["lambda1_early"],
            "threshold_lr": r["threshold_lr"],
            "brute_force_lr": best,
            "measured_catapult_factor": best / r["threshold_lr"],
            "catapult_lr": cat["lr"],
            "catapult_ratio": cat["lr"] / best,
            "curvature_lr": cur["lr"],
            "curvature_ratio": cur["lr"] / best,
            "finder_cpu_s": cat["cpu_s"],
            "finder_wall_s": cat["wall_s"],
            "curvature_cpu_s": cur["cpu_s"],
            "curvature_wall_s": cur["wall_s"],
            "sweep_cpu_s": sw["cpu_s"],
            "sweep_wall_s": sw["wall_s"],
            "cost_cpu": cat["cpu_s"] / sw["cpu_s"],
            "cost_wall": cat["wall_s"] / sw["wall_s"],
            "curvature_cost_cpu": cur["cpu_s"] / sw["cpu_s"],
            "n_matvecs": r["n_matvecs"],
            "n_train_steps": r["n_train_steps"],
            "sweep_non_monotone": sw["non_monotone"],
            "probes": r["probes"],
            "sweep": sw["runs"],
        }
        rows.append(row)
        print(
            f"{name:14s} {group:9s} η*={best:.4g}  catapult {cat['lr']:.4g} ({row['catapult_ratio']:.2f}×, "
            f"cost {100 * row['cost_cpu']:.1f} % CPU / {100 * row['cost_wall']:.1f} % wall)  curvature "
            f"{cur['lr']:.4g} ({row['curvature_ratio']:.2f}×)  η*/η_thr "
            f"{row['measured_catapult_factor']:.2f}  sweep {sw['cpu_s']:.1f} s CPU"
        )
    bench = [r for r in rows if r["set"] == "benchmark"]
    meta = {
        "steps": STEPS,
        "grid": [GRID[0], GRID[-1], "×2^(1/4)"],
        "seed": SEED,
        "n_train": 1000,
        "loss": "mse",
        "optimizer": "gd",
        "threads": 1,
        "repeats": repeats,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "catapult_factor_in_code": CATAPULT_FACTOR,
        "min_measured_factor_benchmark": min(
            (r["measured_catapult_factor"] for r in bench), default=float("nan")
        ),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lr_finder.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (RESULTS / "lr_finder.md").write_text(markdown(meta, rows))
    print(f"wrote {RESULTS / 'lr_finder.md'}")


def markdown(meta: dict, rows: list[dict]) -> str:
    ok = [max(r["catapult_ratio"], 1 / r["catapult_ratio"]) <= 1.5 and r["cost_cpu"] <= 0.05 for r in rows]
    lines = [
        f"# Largest stable learning rate: finder vs brute force (MNIST-1D, {meta['n_train']} samples, MSE, "
        f"full-batch GD, {meta['steps']} steps, grid {meta['grid'][0]:g}…{meta['grid'][1]:g} ×2^(1/4), "
        f"1 thread, median of {meta['repeats']})",
        "",
        "η* is the largest grid η whose run does not diverge; η_thr = 2/λ̂1 (λ1 after 5 steps at half the "
        "threshold); *catapult* is `find_max_stable_lr` (default rule), *curvature* the probe-free rule "
        f"(η = {meta['catapult_factor_in_code']} × η_thr). Costs are CPU seconds; % = finder / sweep. "
        "Acceptance (issue 6): ratio within [1/1.5, 1.5] and cost ≤ 5 %.",
        "",
        "| model | set | λ1 init | λ̂1 | η_thr | η* (sweep) | η*/η_thr | catapult η | ratio | curvature η "
        "| ratio | finder CPU s (% sweep) | curvature CPU s (% sweep) | sweep CPU s | sweep wall s "
        "| finder wall % | accept |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r, a in zip(rows, ok, strict=True):
        lines.append(
            f"| {r['description']} | {r['set']} | {r['lambda1_init']:.3g} | {r['lambda1_early']:.3g} | "
            f"{r['threshold_lr']:.3g} | {r['brute_force_lr']:.3g} | {r['measured_catapult_factor']:.2f} | "
            f"{r['catapult_lr']:.3g} | {r['catapult_ratio']:.2f} | {r['curvature_lr']:.3g} | "
            f"{r['curvature_ratio']:.2f} | {r['finder_cpu_s']:.2f} ({100 * r['cost_cpu']:.1f} %) | "
            f"{r['curvature_cpu_s']:.2f} ({100 * r['curvature_cost_cpu']:.1f} %) | {r['sweep_cpu_s']:.1f} | "
            f"{r['sweep_wall_s']:.1f} | {100 * r['cost_wall']:.1f} % | {'yes' if a else 'no'} |"
        )
    lines += [
        "",
        f"Smallest η*/η_thr on the benchmark models: {meta['min_measured_factor_benchmark']:.2f} "
        f"(the curvature rule's constant in the code: {meta['catapult_factor_in_code']}).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
