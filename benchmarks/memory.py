"""Memory of the curvature engine: how it grows with k, the Hessian-set size and the model size.

Every point is measured in a fresh subprocess (this script re-invoking itself with ``--child``), so
nothing allocated by an earlier point is counted or reused. In the child, on MNIST-1D (float32
tanh MLPs 40 → width → width → 10, MSE, PyTorch default init, seed 0):

* ``graph``: the first product builds the operator's cached linearisation (one forward and backward
  pass over the Hessian set with the graph kept, ``cache="auto"``) or, with ``chunk_size``, rebuilds
  one chunk's graph per product (``cache=False``); measured: what stays resident after it
  (``retained``) and its peak.
* ``eigenpairs``: ``ls.eigenpairs(op, k, tol=1e-6, max_basis=default)`` once the graph exists:
  peak resident memory above the RSS just before the solve.
* ``tracker``: ``ls.EigenTracker(k).update(op)`` twice (cold, then warm-started), each peak above
  the RSS before it, and what the tracker keeps between updates (its last two solves' vectors).

Peak = kernel high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs`` before each
measurement), cross-checked by a thread sampling ``/proc/self/statm`` every 0.5 ms; the larger is
reported. The children run with ``MALLOC_MMAP_THRESHOLD_=65536`` so that every large tensor is its
own mapping returned to the kernel when freed: RSS then counts live tensors, not blocks glibc keeps
for reuse. One torch thread. Predictions printed beside the measurements: the basis of
``lanczos.py``'s docstring, ``(max_basis + 1) × dim`` float64 plus the ``k`` returned vectors, and
issue 7's acceptance bound ``(max_basis + 4) × dim`` (+ the ``k`` returned vectors).

    .venv/bin/python benchmarks/memory.py [--quick] [--out benchmarks/results]

Writes ``memory.json`` (every number and the machine), ``memory.md`` (tables) and ``memory.png``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from machine import cpu_name, high_water, markdown_table, rss

RESULTS = Path(__file__).parent / "results"
MB = 2**20
N_TEST = 100
K_GRID = [1, 5, 10, 20]
N_GRID = [256, 1024, 4096]
WIDTHS = [64, 128, 256, 512, 1024]
BASE = {"width": 256, "n": 1024, "k": 10, "chunk_size": None}
CHUNK = 256


# ------------------------------------------------------------------------------------------------
# Child: one configuration, in a fresh process
# ------------------------------------------------------------------------------------------------


def peak_above(fn: Any) -> tuple[dict[str, float], Any]:
    """Run ``fn()``; peak RSS above the RSS just before it, retained growth, and seconds."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := current RSS
    base, peak, done = rss(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.0005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    tic = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - tic
    done.set()
    thread.join()
    top = max(high_water(), peak[0], rss())
    return {
        "peak_mb": (top - base) / MB,
        "retained_mb": (rss() - base) / MB,
        "seconds": seconds,
        "hwm_mb": (high_water() - base) / MB,
        "sampled_mb": (peak[0] - base) / MB,
    }, out


def child(cfg: dict[str, Any]) -> dict[str, Any]:
    """Measure one configuration (runs in the subprocess)."""
    import gc

    import torch

    import landscope as ls
    from landscope.data import load_mnist1d
    from landscope.models import mlp

    torch.set_num_threads(1)
    ds = load_mnist1d(n_train=max(N_GRID), n_test=N_TEST)
    X, y = ds.X_train[: cfg["n"]], ds.y_train[: cfg["n"]]
    Y = torch.nn.functional.one_hot(y, 10).float()

    def loss_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((out - target) ** 2).sum(dim=1).mean()

    torch.manual_seed(0)
    model = mlp(X.shape[1], 10, width=cfg["width"], depth=2)
    # warm-up on a tiny problem: torch.func's and the eigensolver's lazy imports are not memory
    # of the measured solve
    tiny = ls.HessianOperator(mlp(X.shape[1], 10, width=4, depth=1), loss_fn, (X[:8], Y[:8]))
    ls.eigenpairs(tiny, k=2, tol=1e-3)
    ls.EigenTracker(k=2, tol=1e-3).update(tiny)
    del tiny
    gc.collect()
    op = ls.HessianOperator(model, loss_fn, (X, Y), chunk_size=cfg["chunk_size"])
    dim, k = op.dim, cfg["k"]
    out: dict[str, Any] = {
        **cfg,
        "dim": dim,
        "vector_mb": dim * 8 / MB,
        "cache": op.cache,
        "rss_before_mb": rss() / MB,
    }

    def first_product() -> None:
        op.matvec(torch.randn(dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64))

    out["graph"], _ = peak_above(first_product)
    gc.collect()
    if cfg["solver"] == "eigenpairs":
        mem, res = peak_above(lambda: ls.eigenpairs(op, k=k, tol=1e-6, seed=0))
        out["eigenpairs"] = {
            **mem,
            "n_matvecs": res.n_matvecs,
            "n_restarts": res.n_restarts,
            "converged": res.converged,
            "lambda1": float(res.values[0]),
        }
    else:
        trk = ls.EigenTracker(k=k, tol=1e-6)
        cold, r1 = peak_above(lambda: trk.update(op))
        warm, r2 = peak_above(lambda: trk.update(op))
        held = sum(U.numel() * U.element_size() for U in trk._history) / MB
        out["tracker"] = {
            "cold": {**cold, "n_matvecs": r1.n_matvecs},
            "warm": {**warm, "n_matvecs": r2.n_matvecs},
            "history_mb": held,
        }
    out["max_basis"] = max(3 * k, k + 40)
    return out


# ------------------------------------------------------------------------------------------------
# Parent: the grid, tables, plot
# ------------------------------------------------------------------------------------------------


def configs(quick: bool) -> list[dict[str, Any]]:
    """Every (configuration, solver) to measure: three one-factor sweeps around BASE."""
    out = []

    def add(group: str, **over: Any) -> None:
        for solver in ("eigenpairs", "tracker"):
            out.append({**BASE, **over, "group": group, "solver": solver})

    k_grid, n_grid, widths = ([1, 10], [256, 1024], [64, 256]) if quick else (K_GRID, N_GRID, WIDTHS)
    for k in k_grid:
        add("k", k=k)
    for n in n_grid:
        add("set", n=n)
        add("set_chunked", n=n, chunk_size=CHUNK)
    for w in widths:
        add("model", width=w)
    return out


def run_child(cfg: dict[str, Any]) -> dict[str, Any]:
    """One configuration in a fresh Python process."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(cfg)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    if proc.returncode != 0:
        return {
            **cfg,
            "error": proc.stderr.strip().splitlines()[-1]
            if proc.stderr.strip()
            else f"exit {proc.returncode}",
        }
    return json.loads(proc.stdout.strip().splitlines()[-1])


def vectors(r: dict[str, Any], mb: float) -> float:
    """Megabytes as a number of float64 vectors of the operator's dim."""
    return mb / r["vector_mb"]


def predicted(r: dict[str, Any]) -> dict[str, float]:
    """In dim-float64 vectors: the docstring's basis + k, and issue 7's bound (+ k returned)."""
    m, k = min(r["max_basis"], r["dim"]), r["k"]
    return {"docstring": m + 1 + k, "bound": m + 4 + k}


def fmt_mb(x: float | None) -> str:
    return "—" if x is None else f"{x:,.1f}"


def rows_for(results: list[dict[str, Any]], group: str) -> list[list[str]]:
    """Table rows: one per configuration of a group (eigenpairs and tracker side by side)."""
    by_key: dict[tuple, dict[str, Any]] = {}
    for r in results:
        if r.get("group") != group or "error" in r:
            continue
        key = (r["width"], r["n"], r["k"], r["chunk_size"])
        by_key.setdefault(key, {}).update(r)
    rows = []
    for key in sorted(by_key):
        r = by_key[key]
        e, t, p = r.get("eigenpairs", {}), r.get("tracker", {}), predicted(r)
        vec = r["vector_mb"]
        rows.append(
            [
                f"{r['width']}",
                f"{r['dim']:,}",
                f"{r['n']:,}",
                "—" if r["chunk_size"] is None else str(r["chunk_size"]),
                str(r["k"]),
                str(min(r["max_basis"], r["dim"])),
                fmt_mb(r["graph"]["retained_mb"]),
                fmt_mb(r["graph"]["peak_mb"]),
                fmt_mb(e.get("peak_mb")),
                f"{vectors(r, e['peak_mb']):.1f}" if e else "—",
                f"{p['docstring']} / {p['bound']}",
                f"{e.get('n_matvecs', '—')} / {e.get('n_restarts', '—')}",
                fmt_mb(t.get("cold", {}).get("peak_mb")),
                fmt_mb(t.get("warm", {}).get("peak_mb")),
                fmt_mb(t.get("history_mb")),
                f"{vec:.2f}",
            ]
        )
    return rows


HEADER = [
    "width",
    "dim",
    "set N",
    "chunk",
    "k",
    "max_basis",
    "graph kept MB",
    "graph peak MB",
    "eigenpairs peak MB",
    "= × dim f64",
    "docstring / bound (× dim)",
    "matvecs / restarts",
    "tracker cold MB",
    "tracker warm MB",
    "tracker keeps MB",
    "1 vector MB",
]

TITLES = {
    "k": "k (MLP width 256, N = 1,024)",
    "set": "Hessian-set size, cached graph (width 256, k = 10)",
    "set_chunked": f"Hessian-set size, chunk_size = {CHUNK} (graph rebuilt per chunk, not cached)",
    "model": "model size (N = 1,024, k = 10)",
}


def markdown(results: dict[str, Any]) -> str:
    """The Markdown report."""
    mi = results["machine"]
    lines = [
        "# Memory: eigensolver, tracker and operator graph",
        "",
        f"Generated by `python benchmarks/memory.py{' --quick' if results['quick'] else ''}` on "
        f"{mi['date']} at commit {mi.get('commit')} — {mi['cpu_model']}, {mi['cpu_count']} cores, "
        f"torch {mi['torch']} (one thread), Python {mi['python']}. Total "
        f"{results['total_time_s']:.0f} s.",
        "",
        "Each row is a fresh subprocess: MNIST-1D, tanh MLP 40 → width → width → 10 (float32), MSE. "
        "`graph kept` = resident memory added by the operator's first product (the cached "
        "linearisation of the Hessian set; with `chunk` the graph is rebuilt chunk by chunk "
        "and not kept). `eigenpairs peak` = peak RSS above the RSS before "
        "`ls.eigenpairs(op, k, tol=1e-6)` (default max_basis = max(3k, k + 40)), also in "
        "float64 vectors of the operator's dim; `docstring` = (max_basis + 1) + k, what "
        "lanczos.py states; `bound` = (max_basis + 4) + k, issue 7's acceptance with the k "
        "returned vectors. `tracker` = `ls.EigenTracker(k).update(op)`, cold then warm; "
        "`keeps` = the vectors of its last solves (two before stop 23, three since, the older "
        "two in float32), held between updates.",
        "",
    ]
    for group, title in TITLES.items():
        rows = rows_for(results["points"], group)
        if rows:
            lines += [f"## {title}", ""] + markdown_table(HEADER, rows)
    errors = [r for r in results["points"] if "error" in r]
    if errors:
        lines += (
            ["## Errors", ""]
            + [
                f"- {r['group']} {r['solver']} width {r['width']} N {r['n']} k {r['k']}: {r['error']}"
                for r in errors
            ]
            + [""]
        )
    if results.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in results["notes"]] + [""]
    return "\n".join(lines)


def notes(points: list[dict[str, Any]]) -> list[str]:
    """Observations computed from the numbers."""
    out = []
    big = [r for r in points if "eigenpairs" in r and r["dim"] >= 50_000]
    if big:
        ratios = [vectors(r, r["eigenpairs"]["peak_mb"]) / predicted(r)["docstring"] for r in big]
        out.append(
            f"Lanczos peak / the docstring's (max_basis + 1) + k vectors: {min(ratios):.2f}–"
            f"{max(ratios):.2f} (dim ≥ 50,000). The basis is allocated with torch.empty, so a "
            "solve that converges before filling it pages in only the rows it used "
            "(n_matvecs + 1); on top come the k Ritz vectors twice (built, then reordered in "
            "_finish), ~3 working vectors, and after a restart the l × dim temporary of the "
            "thick restart (l = k + (max_basis − k) // 2). tests/test_memory.py measures and "
            "locates each."
        )
    small = [r for r in points if "eigenpairs" in r and r["dim"] < 50_000]
    if small:
        out.append(
            "Below dim 50,000 a vector is < 0.4 MB and fixed costs of a few MB (allocator, "
            "small tensors) dominate the ratio in vectors; read the MB columns there."
        )
    chunked = [r for r in points if r["group"] == "set_chunked" and "eigenpairs" in r]
    if chunked:
        out.append(
            f"chunk_size={CHUNK}: the graph is rebuilt chunk by chunk at every product and "
            f"nothing stays (kept ≤ {max(r['graph']['retained_mb'] for r in chunked):.1f} MB, "
            f"peak ≤ {max(r['graph']['peak_mb'] for r in chunked):.1f} MB for every N), at the "
            "price of a forward and backward pass per chunk per product."
        )
    return out


def tracker_total(r: dict[str, Any]) -> float:
    """A warm update's peak plus what the tracker holds between updates (MB)."""
    return r["tracker"]["warm"]["peak_mb"] + r["tracker"]["history_mb"]


def plot(results: dict[str, Any], path: Path) -> None:
    """Three panels: vs k, vs Hessian-set size, vs dim."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in results["points"] if "error" not in r]

    def series(group: str, solver: str, x: str, y: Any) -> tuple[list, list]:
        sel = sorted((r for r in pts if r["group"] == group and r["solver"] == solver), key=lambda r: r[x])
        return [r[x] for r in sel], [y(r) for r in sel]

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    ax = axes[0]
    xs, ys = series("k", "eigenpairs", "k", lambda r: r["eigenpairs"]["peak_mb"])
    ax.plot(xs, ys, "o-", label="eigenpairs: measured peak")
    xs, ys = series("k", "tracker", "k", tracker_total)
    ax.plot(xs, ys, "s-", label="EigenTracker: warm peak + kept vectors")
    xs, ys = series("k", "eigenpairs", "k", lambda r: predicted(r)["docstring"] * r["vector_mb"])
    ax.plot(xs, ys, "k--", label="(max_basis + 1 + k) × dim f64")
    ax.set(
        xlabel="k (eigenpairs)",
        ylabel="extra memory (MB)",
        title=f"vs k (width {BASE['width']}, N {BASE['n']:,})",
    )
    ax.legend(fontsize=8)

    ax = axes[1]
    for group, style, how in (("set", "o-", "cached graph"), ("set_chunked", "^-", f"chunk_size {CHUNK}")):
        key = "retained_mb" if group == "set" else "peak_mb"
        xs, ys = series(group, "eigenpairs", "n", lambda r, key=key: r["graph"][key])
        ax.plot(xs, ys, style, label=f"graph {'kept' if group == 'set' else 'peak, not kept'} ({how})")
        xs, ys = series(group, "eigenpairs", "n", lambda r: r["eigenpairs"]["peak_mb"])
        ax.plot(xs, ys, style.replace("-", ":"), alpha=0.7, label=f"eigenpairs peak ({how})")
    ax.set_xscale("log", base=2)
    ax.set(
        xlabel="Hessian-set size N (samples)",
        ylabel="memory (MB)",
        title=f"vs Hessian-set size (width {BASE['width']}, k {BASE['k']})",
    )
    ax.legend(fontsize=8)

    ax = axes[2]
    xs, ys = series("model", "eigenpairs", "dim", lambda r: r["eigenpairs"]["peak_mb"])
    ax.loglog(xs, ys, "o-", label="eigenpairs: measured peak")
    xs, ys = series("model", "tracker", "dim", tracker_total)
    ax.loglog(xs, ys, "s-", label="EigenTracker: warm peak + kept vectors")
    xs, ys = series("model", "eigenpairs", "dim", lambda r: r["graph"]["retained_mb"])
    ax.loglog(xs, ys, "^-", label="operator graph kept")
    xs, ys = series("model", "eigenpairs", "dim", lambda r: predicted(r)["docstring"] * r["vector_mb"])
    ax.loglog(xs, ys, "k--", label="(max_basis + 1 + k) × dim f64")
    ax.set(
        xlabel="dim (parameters)",
        ylabel="memory (MB)",
        title=f"vs model size (N {BASE['n']:,}, k {BASE['k']})",
    )
    ax.legend(fontsize=8)
    for a in axes:
        a.grid(alpha=0.3, which="both")
    fig.suptitle("Extra resident memory, measured on CPU (one fresh process per point)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def git_commit() -> str | None:
    """The commit measured (lanczos.py's memory changes with it), ``+dirty`` if modified."""
    try:
        root = Path(__file__).resolve().parent.parent
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "src/landscope/curvature"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return head + ("+modified curvature/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "commit": git_commit(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few small points (smoke test)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure every configuration and write memory.{json,md,png}."""
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return {}
    if not sys.platform.startswith("linux"):
        raise SystemExit("benchmarks/memory.py reads /proc/self: Linux only")
    from landscope.data import load_mnist1d

    load_mnist1d(n_train=max(N_GRID), n_test=N_TEST)  # generated once, cached for the children
    tic = time.perf_counter()
    points = []
    for cfg in configs(args.quick):
        r = run_child(cfg)
        points.append(r)
        if "error" in r:
            print(f"[{time.perf_counter() - tic:6.0f}s] {cfg}: ERROR {r['error']}", flush=True)
            continue
        solver = r.get("eigenpairs") or r["tracker"]["warm"]
        print(
            f"[{time.perf_counter() - tic:6.0f}s] {cfg['group']:12s} {cfg['solver']:10s} width "
            f"{r['width']:5d} dim {r['dim']:9,d} N {r['n']:5d} chunk {r['chunk_size']} k {r['k']:2d}: "
            f"graph kept {r['graph']['retained_mb']:8.1f} MB, solver peak {solver['peak_mb']:8.1f} MB "
            f"({vectors(r, solver['peak_mb']):.1f} × dim)",
            flush=True,
        )
    results = {
        "quick": args.quick,
        "machine": machine_info(),
        "points": points,
        "total_time_s": time.perf_counter() - tic,
    }
    results["notes"] = notes(points)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "memory.json").write_text(json.dumps(results, indent=1))
    (args.out / "memory.md").write_text(markdown(results))
    plot(results, args.out / "memory.png")
    print(f"wrote {args.out / 'memory.json'}, memory.md and memory.png")
    return results


if __name__ == "__main__":
    main()
