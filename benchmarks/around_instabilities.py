"""What ``measure.around_instabilities`` costs: the η = 0.3 quick run, with and without it.

The run of wang2023's quick learning-rate sweep at its largest η (full-batch GD, MSE, tanh MLP
40-32-32-10 on 1,000 MNIST-1D samples, 2,000 steps, top-3 every 20 steps, tol 1e-3) is timed
plainly and with every step from one before each instability to one after it measured as well,
at the default δ, at the old default 0.1 and at the sensitivity set's δ (0.01, 0.02, 0.05, 0.1 at
once). The cost is the number of steps inside instabilities, which a smaller δ raises. Variants run
interleaved, repeated, one torch thread; medians reported. Issue 13's target: ≤ 2× the wall time
of the plain run at the default setting. Writes results/around_instabilities.{json,md}.

    .venv/bin/python benchmarks/around_instabilities.py [--repeats 3] [--steps 2000]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from machine import cpu_name, markdown_table

import landscope as ls
from landscope.analysis import find_instabilities
from landscope.experiments.common import base_config, with_
from landscope.training.detector import DEFAULT_DELTA, SENSITIVITY_DELTAS

RESULTS = Path(__file__).parent / "results"

VARIANTS = {
    "plain (every 20)": {"measure.around_instabilities": False},
    f"around, default δ = {DEFAULT_DELTA:g}": {
        "measure.around_instabilities": True,
        "measure.around_deltas": None,
    },
    "around, δ = 0.1 (the default before issue 13)": {
        "measure.around_instabilities": True,
        "measure.around_deltas": [0.1],
    },
    "around, δ ∈ {" + ", ".join(f"{d:g}" for d in SENSITIVITY_DELTAS) + "}": {
        "measure.around_instabilities": True,
        "measure.around_deltas": list(SENSITIVITY_DELTAS),
    },
}


def run_once(over: dict, steps: int, folder: Path) -> dict:
    cfg = with_(
        base_config("quick"),
        **{
            "optimizer.lr": 0.3,
            "train.steps": steps,
            "measure.save_params": False,
            "measure.save_predictions": False,
            **over,
        },
    )
    shutil.rmtree(folder, ignore_errors=True)
    tic = time.perf_counter()
    run = ls.train(cfg, folder, progress=False)
    wall = time.perf_counter() - tic
    return {
        "wall": wall,
        "measurements": len(run.measurements),
        "matvecs": sum(r.get("n_matvecs", 0) for r in run.measurements),
        "instabilities": len(find_instabilities(run)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="around-"))
    times: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for rep in range(args.repeats):
        for name, over in VARIANTS.items():
            times[name].append(run_once(over, args.steps, tmp / "run"))
            print(f"repeat {rep}: {name}: {times[name][-1]['wall']:.2f} s", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    plain = statistics.median(r["wall"] for r in times["plain (every 20)"])
    rows, doc = (
        [],
        {
            "machine": {
                "cpu": cpu_name(),
                "python": platform.python_version(),
                "torch": torch.__version__,
                "threads": 1,
            },
            "steps": args.steps,
            "repeats": args.repeats,
            "variants": {},
        },
    )
    for name, rs in times.items():
        wall = statistics.median(r["wall"] for r in rs)
        doc["variants"][name] = {"runs": rs, "median_wall": wall, "ratio": wall / plain}
        rows.append(
            [
                name,
                f"{wall:.2f}",
                f"{wall / plain:.2f}×",
                str(rs[0]["measurements"]),
                str(rs[0]["matvecs"]),
                str(rs[0]["instabilities"]),
            ]
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "around_instabilities.json").write_text(json.dumps(doc, indent=1))
    md = [
        "# measure.around_instabilities: cost on the η = 0.3 quick run",
        "",
        f"{doc['machine']['cpu']}, one torch thread, median of {args.repeats}; "
        f"`python benchmarks/around_instabilities.py`. Target: ≤ 2× plain at the default δ.",
        "",
        *markdown_table(
            [
                "variant",
                "wall (s)",
                "vs plain",
                "measurements",
                "products",
                f"instabilities (δ = {DEFAULT_DELTA:g})",
            ],
            rows,
        ),
        "",
    ]
    (RESULTS / "around_instabilities.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
