"""How close a warm start must be for tracking to cost 1/3 of a cold solve, and how close it is.

``benchmarks/tracking.py`` measures the trackers along training; this script asks why the
minibatch runs stay far above issue 17's 1/3. On the same trajectories (its workloads, one
torch thread), at a few steps ``t``, with ``U_t`` the exact top-(k+2) eigenvectors (float64
Lanczos at tol 1e-10) it measures

* **motion**: the sine of the largest principal angle between the exact top-k subspaces of steps
  ``t − 1`` and ``t``: where a tracker that solved the last step exactly starts without a
  prediction;
* **prediction**: the same angle for the start that ``EigenTracker(k, tol)`` (the default,
  tracking every step) predicts for step ``t``;
* **controlled starts**: ``U_t`` turned by an angle ``r0`` (sine of the largest principal angle)
  for ``r0`` = 1e-1 … 1e-5, in two ways: *along the step* (``U_t + s (U_{t−1} − U_t)`` after
  aligning ``U_{t−1}``, so the start errs the way training moves it; ``s`` = 1 is the motion)
  and *at random* (into random directions orthogonal to ``U_t``: mostly the bulk, which Krylov
  methods damp fastest, so an optimistic case). From each, the products a Lanczos warm start
  (the sum of the k columns plus a 1e-4 random part, no multiplicity probe) and a block start
  (the k + 2 columns) need to reach ``tol`` on the float32 operator, over a cold Lanczos solve
  without the probe (the tracker's probe is a fixed cost on top).

The table gives, per workload and k, the start angle below which the better warm start costs
≤ 1/3 of the cold solve (log-interpolated over the grid, along the step), next to the measured
motion and prediction.

    .venv/bin/python benchmarks/tracking_floor.py [--quick]

Writes results/tracking_floor.{json,md,png}.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
from pathlib import Path

import torch
from machine import cpu_name, markdown_table, write_results
from tracking import WORKLOADS, operators, trajectory

import landscope as ls
from landscope.curvature import EigenTracker, HessianOperator
from landscope.curvature.block import block_solve
from landscope.curvature.tracking import aligned

RESULTS = Path(__file__).parent / "results"
ANGLES = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
TARGET = 1 / 3
GUARDS = 2


def sin_angle(A: torch.Tensor, B: torch.Tensor) -> float:
    """Sine of the largest principal angle between the column spans of orthonormal A and B."""
    s = torch.linalg.svdvals(A.T @ B)
    return math.sqrt(max(0.0, 1.0 - float(s.min()) ** 2))


def along_step(U: torch.Tensor, U_prev: torch.Tensor, r0: float, k: int) -> torch.Tensor:
    """Orthonormal columns near ``U``, off by sine ``r0`` (top-k block) in the step's direction."""
    D = aligned(U_prev, U) - U
    full = sin_angle(torch.linalg.qr(U + D)[0][:, :k], U[:, :k])
    lo, hi = 0.0, max(1.0, 4 * r0 / max(full, 1e-300))
    for _ in range(60):  # bisection on s: the angle grows monotonically for small s
        s = 0.5 * (lo + hi)
        if sin_angle(torch.linalg.qr(U + s * D)[0][:, :k], U[:, :k]) < r0:
            lo = s
        else:
            hi = s
    return torch.linalg.qr(U + lo * D)[0]


def at_random(U: torch.Tensor, r0: float, gen: torch.Generator) -> torch.Tensor:
    """Each column of ``U`` turned by sine ``r0`` into a random direction orthogonal to ``U``."""
    N = torch.randn(U.shape, generator=gen, dtype=U.dtype)
    N = N - U @ (U.T @ N)
    N = torch.linalg.qr(N)[0]
    return torch.linalg.qr(math.sqrt(1 - r0**2) * U + r0 * N)[0]


def warm_products(op: HessianOperator, start: torch.Tensor, k: int, tol: float, seed: int) -> dict:
    """Products of a Lanczos start from the columns' sum, and of a block start from the columns."""
    gen = torch.Generator().manual_seed(seed)
    v = start[:, :k].sum(dim=1)
    v = v / v.norm()
    r = torch.randn(v.shape, generator=gen, dtype=v.dtype)
    v = (v + 1e-4 * r / r.norm()).float()
    lan = ls.eigenpairs(op, k=k, tol=tol, seed=seed, v0=v, check_multiplicity=False)
    blk = block_solve(op, k, "LA", tol, start=start, guards=GUARDS, seed=seed).result
    return {"lanczos": lan.n_matvecs, "block": blk.n_matvecs}


def needed_angle(angles: list[float], ratios: list[float]) -> float | None:
    """The largest angle of the grid's log-interpolation at which the ratio is ≤ TARGET."""
    pairs = sorted(zip(angles, ratios, strict=True), reverse=True)  # large angle first
    if pairs[-1][1] > TARGET:
        return None  # not even the closest start reaches it
    for (a_hi, r_hi), (a_lo, r_lo) in zip(pairs, pairs[1:], strict=False):
        if r_hi <= TARGET:
            return a_hi
        if r_lo <= TARGET:
            f = (r_hi - TARGET) / (r_hi - r_lo)
            return float(10 ** (math.log10(a_hi) + f * (math.log10(a_lo) - math.log10(a_hi))))
    return pairs[-1][0]


def run_workload(name: str, steps: int, at: list[int], tol: float, ks: tuple[int, ...]) -> dict:
    model, loss_fn, data, thetas = trajectory(name, steps)
    op, model64, op64 = operators(model, loss_fn, data)
    kmax = max(ks) + GUARDS
    exact, trackers = [], {k: EigenTracker(k=k, tol=tol) for k in ks}
    prediction: dict[int, list[float]] = {k: [] for k in ks}
    for t, theta in enumerate(thetas):
        torch.nn.utils.vector_to_parameters(theta, model.parameters())
        torch.nn.utils.vector_to_parameters(theta.double(), model64.parameters())
        ref = ls.eigenpairs(op64, k=kmax, tol=1e-10, seed=10_000 + t)
        assert ref.vectors is not None
        exact.append(ref.vectors)
        for k, trk in trackers.items():
            P = trk.predict(op.dim, op.device)
            if P is not None:
                prediction[k].append(sin_angle(torch.linalg.qr(P.double())[0], ref.vectors[:, :k]))
            trk.update(op)
    gen = torch.Generator().manual_seed(0)
    out: dict = {}
    for k in ks:
        rows: dict = {"motion": [], "prediction": prediction[k], "cold": [], "along": {}, "random": {}}
        for t in at:
            torch.nn.utils.vector_to_parameters(thetas[t], model.parameters())
            U, U_prev = exact[t][:, : k + GUARDS], exact[t - 1][:, : k + GUARDS]
            rows["motion"].append(sin_angle(U_prev[:, :k], U[:, :k]))
            rows["cold"].append(ls.eigenpairs(op, k=k, tol=tol, seed=t, check_multiplicity=False).n_matvecs)
            for r0 in ANGLES:
                starts = {"along": along_step(U, U_prev, r0, k), "random": at_random(U, r0, gen)}
                for kind, start in starts.items():
                    got = warm_products(op, start, k, tol, seed=t)
                    for method, n in got.items():
                        rows[kind].setdefault(method, {}).setdefault(f"{r0:g}", []).append(n)
        cold = statistics.fmean(rows["cold"])
        summary: dict = {"cold_mean": cold}
        for kind in ("along", "random"):
            for method in ("lanczos", "block"):
                ratios = [statistics.fmean(rows[kind][method][f"{r0:g}"]) / cold for r0 in ANGLES]
                summary[f"{kind}_{method}"] = ratios
        best = [min(a, b) for a, b in zip(summary["along_lanczos"], summary["along_block"], strict=True)]
        summary["needed_angle"] = needed_angle(list(ANGLES), best)
        rows["summary"] = summary
        out[str(k)] = rows
    return out


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted({int(k) for r in doc["runs"].values() for k in r})
    fig, axes = plt.subplots(1, len(ks), figsize=(6 * len(ks), 4.2), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, k in zip(axes[0], ks, strict=True):
        for i, (name, runs) in enumerate(doc["runs"].items()):
            r, c = runs[str(k)], colours[i % len(colours)]
            s = r["summary"]
            ax.plot(ANGLES, s["along_lanczos"], "-o", color=c, ms=3, label=f"{name}: Lanczos")
            ax.plot(ANGLES, s["along_block"], "--s", color=c, ms=3, label=f"{name}: block")
            ax.axvline(statistics.median(r["motion"]), color=c, lw=0.8, ls=":")
            if r["prediction"]:
                ax.axvline(statistics.median(r["prediction"]), color=c, lw=0.8, ls="-.")
        ax.axhline(TARGET, color="k", lw=1)
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("start angle to the new top-k (sine); dotted: step motion, dash-dot: prediction")
        ax.set_ylabel("warm products / cold (no probe)")
        ax.set_title(f"k = {k}, tol {doc['tol']:g}, start erring along the step")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two workloads, two steps: a smoke check")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--tol", type=float, default=1e-6)
    args = ap.parse_args()
    torch.set_num_threads(1)
    names = ["gd-ce", "momentum"] if args.quick else args.workloads.split(",")
    steps, at = (5, [3, 4]) if args.quick else (12, [5, 8, 11])
    doc: dict = {
        "machine": {"cpu": cpu_name(), "python": platform.python_version(), "torch": torch.__version__},
        "tol": args.tol,
        "angles": list(ANGLES),
        "steps": steps,
        "at": at,
        "runs": {},
    }
    rows = []
    for name in names:
        runs = run_workload(name, steps, at, args.tol, (1, 10))
        doc["runs"][name] = runs
        for k, r in runs.items():
            s = r["summary"]
            need = s["needed_angle"]
            rows.append(
                [
                    name,
                    k,
                    f"{s['cold_mean']:.1f}",
                    f"{statistics.median(r['motion']):.1e}",
                    f"{statistics.median(r['prediction']):.1e}" if r["prediction"] else "-",
                    *(
                        " / ".join(f"{x:.2f}" for x in (la, bl))
                        for la, bl in zip(s["along_lanczos"], s["along_block"], strict=True)
                    ),
                    " / ".join(
                        f"{min(pair):.2f}"
                        for pair in zip(s["random_lanczos"], s["random_block"], strict=True)
                    ),
                    "not reached" if need is None else f"{need:.1e}",
                ]
            )
            print(" | ".join(rows[-1]), flush=True)
    md = [
        "# How close a warm start must be for tracking to cost 1/3 of a cold solve",
        "",
        f"{doc['machine']['cpu']}, one torch thread; `python benchmarks/tracking_floor.py`. The workloads "
        f"of `benchmarks/tracking.py` (steps {at} of {steps}), tol {args.tol:g}, float32 operator. "
        "*Motion*: sine of the largest principal angle between the exact top-k subspaces of "
        "consecutive steps (median). *Prediction*: the same for the start `EigenTracker(k, tol)` "
        "predicts (median over the steps). Columns r0: products of a warm start erring by r0 "
        "along the step, over the cold solve without the probe, as *Lanczos / block* (means over "
        "the steps). *Random*: the better of the two with the start erring at random, r0 = "
        f"{', '.join(f'{a:g}' for a in ANGLES)} (an optimistic case: mostly bulk directions). "
        "*Needed*: the start angle at which the better warm start costs 1/3 (along the step).",
        "",
        *markdown_table(
            [
                "workload",
                "k",
                "cold, no probe",
                "motion",
                "prediction",
                *(f"r0 = {a:g}" for a in ANGLES),
                "random",
                "needed for 1/3",
            ],
            rows,
        ),
        "![products against start angle](tracking_floor.png)",
        "",
    ]
    write_results(RESULTS, "tracking_floor", doc, md)
    plot(doc, RESULTS / "tracking_floor.png")


if __name__ == "__main__":
    main()
