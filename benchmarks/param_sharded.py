"""The parameters sharded too (``ParamShardedHessianOperator``): memory and time per rank on CPU.

Against the same workload, in the same run:

* ``single``: ``HessianOperator`` on the whole batch, one process (1 torch thread);
* ``sharded, 2 ranks``: ``ShardedHessianOperator`` (half the batch and half of every Lanczos vector
  per rank; the model whole on each);
* ``param-sharded, 2 ranks``: ``ParamShardedHessianOperator`` (half the batch, half of every
  vector and only its rows of every parameter: the model is built on ``meta`` and takes its rows
  as ``shards``, the whole model is freed before the measurement).

Workloads: float64 tanh MLPs on 128 MNIST-1D samples, mean cross-entropy, PyTorch's default init
(seed 0): ``mlp-1024`` = 40-1024-1024-10 (1,101,834 parameters, its middle layer, one stage, 95 %
of them) and ``deep-512`` = 40-512×8-10 (1,864,714 parameters in 9 stages, the largest 14 %);
``ls.eigenpairs(op, k, tol=1e-6, seed=0)`` at k = 1 and k = 10. Ranks use one torch thread each
and gloo on 127.0.0.1. Per rank: the parameter bytes it holds, the peak resident memory above
the RSS before the solve (``VmHWM`` reset through ``/proc/self/clear_refs``,
``MALLOC_MMAP_THRESHOLD_=65536`` so that freed tensors leave RSS), the median time of 5 products
after a warm-up, and the solve's wall time (a 2-rank time is the slower rank's), products and
top eigenvalue. Memory is measured in processes of their own (the malloc setting slows
allocation), the times in fresh processes after.

    .venv/bin/python benchmarks/param_sharded.py [--quick]

``--quick``: a 40-128-128-10 MLP on 64 samples (a smoke check). Writes
results/param_sharded.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from machine import cpu_name, high_water, markdown_table, rss, write_results
from sharded import architecture, free_port, problem, reset_high_water

import landscope as ls
from landscope.distributed import ParamShardedHessianOperator, ShardedHessianOperator
from landscope.distributed.sharded import shard_bounds

HERE = Path(__file__).resolve().parent
CONFIGS = {"single": 1, "sharded, 2 ranks": 2, "param-sharded, 2 ranks": 2}
KS = (1, 10)


WORKLOADS = {
    "mlp-1024": {"width": 1024, "depth": 2, "n": 128},
    "deep-512": {"width": 512, "depth": 8, "n": 128},
}
QUICK = {"quick": {"width": 128, "depth": 2, "n": 64}}


def build(config: str, w: dict[str, int], rank: int, world: int) -> tuple[ls.CurvatureOperator, int]:
    """The operator, and the parameter bytes this process holds for it."""
    n = w["n"]
    model, X, y = problem(w["width"], n, w["depth"])
    loss = torch.nn.functional.cross_entropy
    whole = sum(p.numel() * p.element_size() for p in model.parameters())
    if config == "single":
        return ls.HessianOperator(model, loss, (X, y)), whole
    lo, hi = shard_bounds(n, world, rank)
    if config.startswith("sharded"):
        return ShardedHessianOperator(model, loss, (X[lo:hi], y[lo:hi])), whole
    cut = ParamShardedHessianOperator(model, loss, (X[:1], y[:1]))  # only to cut this rank's rows
    shards = cut.local_shards()
    del cut, model
    with torch.device("meta"):
        skeleton = architecture(w["width"], w["depth"])
    op = ParamShardedHessianOperator(skeleton, loss, (X[lo:hi], y[lo:hi]), shards=shards)
    return op, sum(t.numel() * t.element_size() for t in op.local_shards().values())


def worker(rank: int, config: str, w: dict[str, int], port: int, out: str, memory: bool) -> None:
    world = CONFIGS[config]
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        before_build = rss()
        op, param_bytes = build(config, w, rank, world)
        v = torch.randn(op.dim, generator=torch.Generator().manual_seed(rank), dtype=torch.float64)
        op.matvec(v)  # warm-up (builds a cached graph where there is one)
        times = []
        for _ in range(0 if memory else 5):
            if world > 1:
                dist.barrier()
            tic = time.perf_counter()
            op.matvec(v)
            times.append(time.perf_counter() - tic)
        solves = {}
        for k in KS:
            if world > 1:
                dist.barrier()
            start = rss()
            reset_high_water()
            tic = time.perf_counter()
            res = ls.eigenpairs(op, k=k, tol=1e-6, seed=0)
            wall = time.perf_counter() - tic
            solves[k] = {
                "wall_s": wall,
                "n_matvecs": res.n_matvecs,
                "top": float(res.values[0]),
                "converged": bool(res.converged),
                "peak_above_start_mb": (high_water() - start) / 2**20,
            }
        doc = {
            "rank": rank,
            "param_mb": param_bytes / 2**20,
            "rss_after_build_mb": (rss() - before_build) / 2**20,
            "product_s": statistics.median(times) if times else None,
            "local_dim": op.dim,
            "global_dim": op.layout.global_dim,
            "solves": solves,
        }
        torch.save(doc, f"{out}.{rank}")
    except Exception:
        traceback.print_exc()
        raise
    finally:
        if world > 1:
            dist.barrier()
            dist.destroy_process_group()


def run(config: str, w: dict[str, int], tmp: Path) -> list[dict[str, Any]]:
    """Memory in processes of their own (``MALLOC_MMAP_THRESHOLD_`` slows allocation), then times."""
    world = CONFIGS[config]
    out = {m: tmp / (config.replace(" ", "_").replace(",", "") + m) for m in ("memory", "time")}
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    try:
        args = (config, w, free_port(), str(out["memory"]), True)
        mp.start_processes(worker, args=args, nprocs=world, start_method="spawn")
    finally:
        del os.environ["MALLOC_MMAP_THRESHOLD_"]
    args = (config, w, free_port(), str(out["time"]), False)
    mp.start_processes(worker, args=args, nprocs=world, start_method="spawn")
    ranks = []
    for r in range(world):
        mem, timed = torch.load(f"{out['memory']}.{r}"), torch.load(f"{out['time']}.{r}")
        for k in KS:
            timed["solves"][k]["peak_above_start_mb"] = mem["solves"][k]["peak_above_start_mb"]
        ranks.append(timed)
    return ranks


def markdown(doc: dict[str, Any]) -> list[str]:
    md = [
        "# Parameters sharded too: memory and time per rank, 2 gloo ranks against one process",
        "",
        f"Generated by `python benchmarks/param_sharded.py{' --quick' if doc['quick'] else ''}` on "
        f"{doc['date']} — {doc['cpu']}, torch {doc['torch']}, Python {doc['python']}; one torch thread per "
        f"process. Load average at start {doc['load_start']} / end {doc['load_end']}. Float64 tanh MLPs "
        "on MNIST-1D samples, mean cross-entropy; `ls.eigenpairs(op, k, tol=1e-6, seed=0)`. Memory in "
        "processes of its own with `MALLOC_MMAP_THRESHOLD_=65536` (freed tensors leave RSS), times in fresh "
        "processes without it. A 2-rank number is rank 0 / rank 1; a 2-rank wall time is the slower "
        "rank's. *Peak RSS above start*: what a solve allocates above what the process held before it "
        "(for `HessianOperator` the cached graph was built by a warm-up product).",
    ]
    for name, wl in doc["workloads"].items():
        md += workload_markdown(name, wl)
    return md


def workload_markdown(name: str, wl: dict[str, Any]) -> list[str]:
    per, w = wl["configs"], wl["spec"]
    single = per["single"][0]
    md = [
        "",
        f"## {name}: 40-{'-'.join([str(w['width'])] * w['depth'])}-10, {single['global_dim']:,} parameters, "
        f"{w['n']} samples",
        "",
    ]
    header = ["configuration", "parameters held, MB per rank", "vector entries per rank", "product, ms"]
    for k in KS:
        header += [
            f"k={k}: wall s",
            f"k={k}: products",
            f"k={k}: peak RSS above start, MB",
            f"k={k}: λ1 rel. diff",
        ]
    rows = []
    for config, ranks in per.items():
        row = [
            config,
            " / ".join(f"{r['param_mb']:.2f}" for r in ranks),
            " / ".join(f"{r['local_dim']:,}" for r in ranks),
            " / ".join(f"{1e3 * r['product_s']:.1f}" for r in ranks),
        ]
        for k in KS:
            ref = single["solves"][k]["top"]
            row += [
                f"{max(r['solves'][k]['wall_s'] for r in ranks):.2f}",
                str(ranks[0]["solves"][k]["n_matvecs"]),
                " / ".join(f"{r['solves'][k]['peak_above_start_mb']:.1f}" for r in ranks),
                f"{max(abs(r['solves'][k]['top'] - ref) / abs(ref) for r in ranks):.1e}",
            ]
        rows.append(row)
    md += markdown_table(header, rows)
    sh, ps = per["sharded, 2 ranks"], per["param-sharded, 2 ranks"]
    ratio = max(r["product_s"] for r in ps) / max(r["product_s"] for r in sh)
    held = max(r["param_mb"] for r in ps) / single["param_mb"]
    extra = max(r["solves"][1]["peak_above_start_mb"] for r in ps) - max(
        r["solves"][1]["peak_above_start_mb"] for r in sh
    )
    ps_mb = " / ".join(f"{r['param_mb']:.2f}" for r in ps)
    md += [
        "",
        "What the numbers mean:",
        "",
        f"- **Parameters:** each param-sharded rank holds {held:.3f} of the model "
        f"({ps_mb} MB against {single['param_mb']:.2f}); the "
        "sharded and single operators hold all of it (and the sharded one on every rank).",
        f"- **Time:** a param-sharded product costs {ratio:.2f}× a sharded one (the slower rank's "
        "median): it has no cached graph, so each product runs the forward pass with tangents, then "
        "each stage's forward pass again, its backward and the backward of that (about 10 matrix "
        "products a layer against 4 for a product through a cached graph), and it gathers each "
        "stage's parameters and direction twice (2 × 2 × the model's size a product, against one "
        "vector for the sharded operator).",
        f"- **Peak memory:** the param-sharded peak is {extra:+.0f} MB (k = 1) against the sharded "
        f"one's ({extra / single['param_mb']:+.1f} models): it gathers its largest stage whole with "
        "its direction and holds that stage's product before the all-reduce, but not the model; "
        f"the largest stage is {wl['largest_stage']:.0%} of this model.",
    ]
    return md


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    workloads = QUICK if args.quick else WORKLOADS
    import tempfile

    load_start = [round(x, 2) for x in os.getloadavg()]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, w in workloads.items():
            configs = {}
            for config in CONFIGS:
                tic = time.perf_counter()
                configs[config] = run(config, w, Path(tmp))
                print(f"{name} {config}: {time.perf_counter() - tic:.1f} s", flush=True)
            with torch.device("meta"):  # only the sizes are read
                model = architecture(w["width"], w["depth"])
            sizes = [sum(p.numel() for p in m.parameters()) for m in model]
            results[name] = {"spec": w, "configs": configs, "largest_stage": max(sizes) / sum(sizes)}
    doc = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "quick": args.quick,
        "load_start": load_start,
        "load_end": [round(x, 2) for x in os.getloadavg()],
        "workloads": results,
    }
    write_results(
        HERE / "results", "param_sharded_quick" if args.quick else "param_sharded", doc, markdown(doc)
    )


if __name__ == "__main__":
    sys.exit(main())
