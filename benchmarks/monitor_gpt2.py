"""What ``SharpnessMonitor(every=50)`` adds to a Hugging Face GPT-2 trained with AdamW.

The workload of ``lr_workloads.py``: random-init GPT-2 (2 layers, 64 wide), character-level on the
Python standard library's sources, AdamW η = 1e-3, 16 sequences of 64 characters per batch, its own
``.loss``; a plain PyTorch loop of 1,000 steps (the default; a real run is longer). The monitor
measures λ1(P⁻¹H) on one fixed training batch (a dict batch, no user code) every 50 steps, in the
foreground and in the background (a worker process measures a snapshot while the loop goes on).
Variants interleaved, repeated; medians of wall time, one torch thread for the loop (the worker
takes the second core). Issue 15's targets: ≤ 25 % of training wall time in the foreground,
≤ 10 % in the background.

    .venv/bin/python benchmarks/monitor_gpt2.py [--repeats 3] [--steps 1000]

Writes results/monitor_gpt2.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from lr_workloads import _gpt2
from machine import cpu_name, markdown_table, write_results

from landscope import SharpnessMonitor

RESULTS = Path(__file__).parent / "results"
EVERY = 50
VARIANTS = {"no monitor": None, "foreground": False, "background": True}
TARGETS = {"foreground": 0.25, "background": 0.10}


def run_once(variant: bool | None, steps: int, make, batches) -> dict:
    model = make()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mon = (
        None
        if variant is None
        else SharpnessMonitor(model, None, batches[0], every=EVERY, background=variant)
    )
    statuses = []
    tic = time.perf_counter()
    for t in range(steps):
        batch = batches[t % len(batches)]
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
        if mon is not None:
            statuses.append(mon.step(opt))
    if mon is not None:
        mon.close()
    wall = time.perf_counter() - tic
    return {
        "wall_s": wall,
        "measurements": len(mon.history) if mon else 0,
        "first_measurement_s": mon.history[0].seconds if mon and mon.history else None,
        "statuses": sorted(set(s for s in statuses if s)),
        "seconds_per_measurement": (
            statistics.median(r.seconds for r in mon.history) if mon and mon.history else None
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    make, batches = _gpt2()
    run_once(None, 5, make, batches)  # warm-up: imports, first allocations
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for _ in range(args.repeats):
        for name, variant in VARIANTS.items():
            runs[name].append(run_once(variant, args.steps, make, batches))
            print(name, f"{runs[name][-1]['wall_s']:.1f} s", flush=True)
    base = statistics.median(r["wall_s"] for r in runs["no monitor"])
    rows, doc = (
        [],
        {
            "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__, "threads": 1},
            "steps": args.steps,
            "every": EVERY,
            "runs": runs,
        },
    )
    for name in VARIANTS:
        wall = statistics.median(r["wall_s"] for r in runs[name])
        over = wall / base - 1
        target = TARGETS.get(name)
        verdict = "" if target is None else ("pass" if over <= target else "FAIL")
        spm = runs[name][0]["seconds_per_measurement"]
        first = statistics.median(r["first_measurement_s"] for r in runs[name]) if spm else None
        rows.append(
            [
                name,
                f"{wall:.1f}",
                f"{100 * over:+.1f} %" if name != "no monitor" else "—",
                f"≤ {100 * target:.0f} % {verdict}" if target else "—",
                str(runs[name][0]["measurements"]),
                f"{1e3 * spm:.0f} ms" if spm else "—",
                f"{1e3 * first:.0f} ms" if first else "—",
                ", ".join(runs[name][0]["statuses"]),
            ]
        )
        doc[name] = {"wall_s": wall, "overhead": over}
    step_ms = 1e3 * base / args.steps
    md = [
        "# SharpnessMonitor overhead on a GPT-2 trained with AdamW",
        "",
        f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, one torch thread for the "
        f"loop; {args.steps} steps, every = {EVERY}, median of {args.repeats}; a training step "
        f"takes {step_ms:.1f} ms. `python benchmarks/monitor_gpt2.py`. The first measurement "
        "of a process costs about twice a later one (first allocations of the double-backward "
        "graph; under Adam it is also the one solve not warm-started); its excess is included "
        "in the overhead, spread over the run.",
        "",
        *markdown_table(
            [
                "variant",
                "wall s",
                "overhead",
                "target",
                "measurements",
                "per measurement (median)",
                "first measurement",
                "statuses seen",
            ],
            rows,
        ),
        "",
    ]
    write_results(RESULTS, "monitor_gpt2", doc, md)


if __name__ == "__main__":
    main()
