"""One function per figure of the papers, each writing a PNG and returning its path (DESIGN §8).

Axes are labelled with their units; losses and eigenvalues that span decades use log scales;
instabilities are shaded by phase (heating red, cooling blue) wherever time is on the x-axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed (CI, servers)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from landscope.analysis import (  # noqa: E402
    DEFAULT_DELTA,
    Flattening,
    Instability,
    Similarity,
    find_instabilities,
    overlap_matrix,
    spectrum,
    trace,
)
from landscope.curvature import Density  # noqa: E402
from landscope.training import Run  # noqa: E402

HEATING, COOLING = "#d62728", "#1f77b4"
DPI = 120


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _shade(ax: plt.Axes, events: list[Instability], last_step: float, legend: bool = False) -> None:
    for i, ev in enumerate(events):
        end = ev.end if ev.end is not None else last_step
        ax.axvspan(
            ev.start, ev.peak, color=HEATING, alpha=0.18, lw=0, label="heating" if legend and i == 0 else None
        )
        ax.axvspan(
            ev.peak, end, color=COOLING, alpha=0.18, lw=0, label="cooling" if legend and i == 0 else None
        )


def _title(run: Run) -> str:
    c = run.config
    if c is None:
        return str(run.path.name)
    batch = f" · batch {c.train.batch_size}" if c.train.batch_size else " · full batch"
    return (
        f"{c.model.name} {c.model.activation} · {c.data.name} · {c.loss} · {c.optimizer.name} "
        f"η={c.optimizer.lr:g}{batch}"
    )


def loss_and_sharpness(
    run: Run, path: str | Path, instabilities: list[Instability] | None = None, delta: float = DEFAULT_DELTA
) -> Path:
    """Training loss (log) and λ₁ against the stability threshold, instabilities shaded by phase."""
    tr = trace(run)
    events = find_instabilities(tr, delta) if instabilities is None else instabilities
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    last = float(tr.loss_steps[-1])
    ax1.plot(tr.loss_steps, tr.loss, color="k", lw=1, label="training loss")
    if run.measurements and "test_loss" in run.measurements[0]:
        s, v = run.series("test_loss", run.measurements)
        ax1.plot(s, v, color="tab:green", lw=1, marker=".", label="test loss")
    ax1.set_yscale("log")
    ax1.set_ylabel("loss")
    _shade(ax1, events, last, legend=True)
    peaks = [ev for ev in events if np.isfinite(ev.peak_loss)]
    if peaks:  # short spikes are thin bands: mark their peaks too
        ax1.plot(
            [ev.peak for ev in peaks],
            [ev.peak_loss for ev in peaks],
            "v",
            color=HEATING,
            ms=5,
            label=f"instability peaks ({len(events)})",
        )
    ax1.legend(loc="upper right", fontsize=8)
    meas = run.measurements
    k = max((len(r["eigenvalues"]) for r in meas if r.get("eigenvalues")), default=0)
    for i in range(1, k):
        steps = [r["step"] for r in meas if r.get("eigenvalues") and len(r["eigenvalues"]) > i]
        vals = [r["eigenvalues"][i] for r in meas if r.get("eigenvalues") and len(r["eigenvalues"]) > i]
        ax2.plot(steps, vals, color="0.6", lw=0.7, label="λ₂…λₖ" if i == 1 else None)
    ax2.plot(tr.lambda_steps, tr.lambda1, color="tab:purple", marker=".", lw=1.3, label="λ₁")
    if np.isfinite(tr.threshold).any():
        ax2.plot(tr.lambda_steps, tr.threshold, color="k", ls="--", lw=1, label="stability threshold")
    _shade(ax2, events, last)
    pre = any(r.get("preconditioned") for r in meas)
    ax2.set_ylabel("preconditioned sharpness λ₁(P⁻¹H)" if pre else "sharpness λ₁ (top Hessian eigenvalue)")
    ax2.set_xlabel("step")
    ax2.legend(loc="upper left", fontsize=8)
    fig.suptitle(_title(run), fontsize=10)
    return _save(fig, path)


def flattening(results: Flattening | dict[str, Flattening], path: str | Path) -> Path:
    """λ₁ after each instability against its index (one series per run), with the threshold."""
    series = results if isinstance(results, dict) else {"": results}
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, f in series.items():
        name = f"{label} (ρ = {f.rho:.2f})" if np.isfinite(f.rho) else f"{label} (ρ: < 3 points)"
        (line,) = ax.plot(f.index, f.lambda1, marker="o", label=name.strip())
        if len(f.threshold):
            ax.hlines(f.threshold, f.index - 0.3, f.index + 0.3, color=line.get_color(), ls="--", lw=0.8)
    ax.set_xlabel("instability index")
    ax.set_ylabel("λ₁ at the end of the instability")
    ax.set_title("Landscape flattening (dashes: stability threshold)", fontsize=10)
    if any(len(f.index) for f in series.values()):
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no finished instability", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)


def shift_matrix(run: Run, path: str | Path, instabilities: list[Instability] | None = None) -> Path:
    """Overlap of the top-k subspaces between every pair of measurements; instabilities marked."""
    steps, M = overlap_matrix(run)
    events = find_instabilities(run) if instabilities is None else instabilities
    fig, ax = plt.subplots(figsize=(6.2, 5.2))
    extent = (steps[0], steps[-1], steps[-1], steps[0])
    im = ax.imshow(M, cmap="viridis", vmin=0, vmax=1, extent=extent, interpolation="nearest")
    for ev in events:
        ax.axvline(ev.start, color="w", lw=0.6, ls=":")
        ax.axhline(ev.start, color="w", lw=0.6, ls=":")
    fig.colorbar(im, ax=ax, label="overlap ‖UₐᵀU_b‖²_F / k")
    ax.set_xlabel("step")
    ax.set_ylabel("step")
    vectors = run.eigen(int(steps[0])).vectors
    assert vectors is not None  # overlap_matrix's steps are those with stored eigenvectors
    k = vectors.shape[1]
    ax.set_title(f"Landscape shift: top-{k} subspace overlap (dotted: instability starts)", fontsize=9)
    return _save(fig, path)


def spectrum_plot(
    values: np.ndarray, path: str | Path, density: Density | None = None, title: str = ""
) -> Path:
    """Top-m eigenvalues with the outliers marked, and the SLQ density of the whole spectrum."""
    values = np.asarray(values, dtype=float)
    s = spectrum(values)
    ncols = 2 if density is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 4))
    ax = axes[0] if ncols == 2 else axes
    idx = np.arange(1, len(values) + 1)
    colors = ["tab:red" if i <= s.k_star else "tab:gray" for i in idx]
    ax.bar(idx, np.clip(values, 1e-12, None), color=colors)
    ax.set_yscale("log")
    ax.set_xlabel("index i")
    ax.set_ylabel("eigenvalue λᵢ")
    ax.set_title(f"top-{len(values)}: k* = {s.k_star} outliers (red)", fontsize=10)
    if density is not None:
        ax = axes[1]
        grid, dens = np.asarray(density.grid), np.asarray(density.density)
        ax.semilogy(grid, np.clip(dens, 1e-12, None), color="k", lw=1)
        for v in s.outliers:
            ax.axvline(v, color="tab:red", lw=0.6, alpha=0.6)
        ax.set_xlabel("eigenvalue")
        ax.set_ylabel("spectral density (SLQ)")
        ax.set_ylim(bottom=max(1e-8, dens[dens > 0].min() if (dens > 0).any() else 1e-8))
        ax.set_title("density of the whole spectrum (red: outliers)", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def outliers_over_time(run: Run, path: str | Path) -> Path:
    """k* at every measurement, and the top eigenvalues over time (outliers vs bulk)."""
    meas = [r for r in run.measurements if r.get("eigenvalues") and len(r["eigenvalues"]) >= 3]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    steps = np.array([r["step"] for r in meas])
    ks = np.array([spectrum(r["eigenvalues"]).k_star for r in meas])
    m = max((len(r["eigenvalues"]) for r in meas), default=0)
    for i in range(m):
        vals = [r["eigenvalues"][i] if len(r["eigenvalues"]) > i else np.nan for r in meas]
        ax1.plot(
            steps,
            np.clip(vals, 1e-12, None),
            lw=0.8,
            color="tab:red" if i < (np.median(ks) if len(ks) else 0) else "0.65",
        )
    ax1.set_yscale("log")
    ax1.set_ylabel("top eigenvalues λᵢ")
    ax1.set_title(f"top-{m} Hessian eigenvalues (red: the median k* outliers)", fontsize=10)
    ax2.step(steps, ks, where="mid", color="k")
    if run.config is not None and run.config.data.name in ("mnist1d", "src", "fashion_mnist", "cifar10"):
        ax2.axhline(10, color="tab:blue", ls=":", lw=1, label="C = 10 classes")
        ax2.legend(fontsize=8)
    ax2.set_ylabel("outlier count k*")
    ax2.set_xlabel("step")
    return _save(fig, path)


def similarity(sim: Similarity, path: str | Path) -> Path:
    """Heatmaps over run × time of the three similarity measures to the low-η baseline."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 0.45 * len(sim.labels) + 2.2), sharey=True)
    for ax, (name, M) in zip(
        axes,
        (
            ("cosine of θ − θ₀", sim.cosine),
            ("top-k overlap", sim.overlap),
            ("test prediction agreement", sim.agreement),
        ),
        strict=True,
    ):
        im = ax.imshow(
            M,
            aspect="auto",
            cmap="magma",
            vmin=0,
            vmax=1,
            interpolation="nearest",
            extent=(sim.steps[0], sim.steps[-1], len(sim.labels) - 0.5, -0.5),
        )
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        fig.colorbar(im, ax=ax, fraction=0.046)
    axes[0].set_yticks(range(len(sim.labels)), sim.labels)
    axes[0].set_ylabel("run")
    fig.suptitle("Similarity to the low-η baseline", fontsize=11, y=1.03)
    return _save(fig, path)


def schedule(
    steps: np.ndarray, lr: np.ndarray, path: str | Path, threshold: np.ndarray | None = None
) -> Path:
    """η over the run (and, if given, the stability threshold it implies)."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(steps, lr, color="k", lw=1.2, label="learning rate η")
    ax.set_xlabel("step")
    ax.set_ylabel("η")
    if threshold is not None:
        ax2 = ax.twinx()
        ax2.plot(steps, threshold, color="tab:purple", ls="--", lw=1, label="threshold")
        ax2.set_ylabel("stability threshold", color="tab:purple")
        ax2.set_yscale("log")
    ax.set_title("learning-rate schedule", fontsize=10)
    return _save(fig, path)


def run_figures(run: Run, folder: str | Path, delta: float = DEFAULT_DELTA) -> dict[str, Path]:
    """Every figure a single run supports, written into ``folder``; returns name → path."""
    folder = Path(folder)
    events = find_instabilities(run, delta)
    out = {"loss_sharpness": loss_and_sharpness(run, folder / "loss_sharpness.png", events)}
    from landscope.analysis import flattening as flat

    out["flattening"] = flattening(flat(run, events), folder / "flattening.png")
    if any(run.eigen(s).vectors is not None for s in run.eigen_steps[:1]):
        out["shift_matrix"] = shift_matrix(run, folder / "shift_matrix.png", events)
    meas = [r for r in run.measurements if r.get("eigenvalues")]
    if meas and len(meas[-1]["eigenvalues"]) >= 3:
        out["spectrum"] = spectrum_plot(
            meas[-1]["eigenvalues"], folder / "spectrum.png", title=f"step {meas[-1]['step']}"
        )
        out["outliers"] = outliers_over_time(run, folder / "outliers.png")
    steps, lr = run.series("lr")
    out["schedule"] = schedule(steps, lr, folder / "schedule.png")
    return out


def sweep_curves(runs: list[Run], labels: list[str], path: str | Path, ratio: bool = False) -> Path:
    """Loss and λ₁ of several runs (dashed: each run's threshold, same colour); or λ₁/threshold."""
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    cmap = plt.get_cmap("viridis")
    for i, (run, label) in enumerate(zip(runs, labels, strict=True)):
        color = cmap(i / max(len(runs) - 1, 1))
        tr = trace(run, "train_loss")
        ax1.plot(tr.loss_steps, tr.loss, color=color, lw=0.9, label=label)
        if len(tr.lambda_steps):
            if ratio:
                ax2.plot(tr.lambda_steps, tr.lambda1 / tr.threshold, color=color, lw=1)
            else:
                ax2.plot(tr.lambda_steps, tr.lambda1, color=color, lw=1.1)
                ax2.plot(tr.lambda_steps, tr.threshold, color=color, lw=0.8, ls="--")
        if run.state == "diverged":
            ax1.axvline(run.status.get("diverged_step", tr.loss_steps[-1]), color=color, ls=":", lw=0.8)
    ax1.set_yscale("log")
    ax1.set_ylabel("training loss")
    ax1.legend(fontsize=7, ncol=2, loc="upper right")
    if ratio:
        ax2.axhline(1.0, color="k", lw=0.8, ls="--")
        ax2.set_ylabel("λ₁ / stability threshold")
    else:
        ax2.set_yscale("log")
        ax2.set_ylabel("λ₁ (solid) and threshold (dashed)")
    ax2.set_xlabel("step")
    return _save(fig, path)


def metric_vs(
    x: list[float],
    series: dict[str, Sequence[float]],
    path: str | Path,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    logy: bool = False,
    title: str = "",
    marks: dict[str, float] | None = None,
) -> Path:
    """One or more measured quantities against a swept parameter; ``marks`` draws labelled verticals."""
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for name, ys in series.items():
        ax.plot(x, ys, marker="o", label=name)
    for name, value in (marks or {}).items():
        ax.axvline(value, color="0.4", ls=":", lw=1)
        ax.text(value, ax.get_ylim()[1], f" {name}", rotation=90, va="top", fontsize=8, color="0.3")
    xs = np.asarray(x, dtype=float)
    ys_all = np.concatenate([np.asarray(v, dtype=float) for v in series.values()]) if series else np.array([])
    if logx and (np.isfinite(xs) & (xs > 0)).any():  # a log axis needs a positive value to show
        ax.set_xscale("log")
    if logy and (np.isfinite(ys_all) & (ys_all > 0)).any():
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    if len(series) > 1 or next(iter(series), ""):
        ax.legend(fontsize=8)
    return _save(fig, path)
