"""The experiments of Wang & Roberts (2023) (DESIGN §7), plus two that go beyond the paper.

Most share one learning-rate sweep of [W&R]'s setting (full-batch GD, MSE, tanh MLP; η from 0.01
to 0.30): the run cache of the context trains it once for all of them.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from landscope.analysis import (
    DEFAULT_DELTA,
    find_instabilities,
    flattening,
    landscape_shift,
    outlier_count,
    perturbation_test,
    spectrum,
    subspace_overlap,
    trajectory_similarity,
)
from landscope.curvature import HessianOperator, eigenpairs, layers, spectral_density
from landscope.experiments import claims as C
from landscope.experiments.claims import above, at_least, below
from landscope.experiments.common import (
    LR_GRID,
    base_config,
    eos_ratio_after_reaching,
    final,
    final_model,
    fmt,
    lambda_at,
    spearman,
    with_,
)
from landscope.experiments.figures import (
    FlatteningFigure,
    LossAndSharpnessFigure,
    MetricVsFigure,
    OutliersOverTimeFigure,
    ShiftMatrixFigure,
    SimilarityFigure,
    SpectrumFigure,
    SweepCurvesFigure,
)
from landscope.experiments.registry import Context, experiment
from landscope.experiments.results import Claim, ExperimentResult, Region, TableSpec
from landscope.training import Run


def lr_sweep_runs(ctx: Context) -> tuple[list[float], list[Run]]:
    """The shared learning-rate sweep."""
    grid = LR_GRID[ctx.variant]
    base = base_config(ctx.variant)
    runs = ctx.train_many(
        [with_(base, **{"optimizer.lr": lr}) for lr in grid], [f"gd_lr{lr:g}" for lr in grid]
    )
    return grid, runs


@experiment(
    "wang2023.lr_sweep",
    "Learning-rate sweep from 0.01 to 0.30",
    "Full-batch GD on the same model and data at η from 0.01 to 0.30: loss, λ₁ against 2/η, "
    "instabilities, and the final test accuracy.",
)
def lr_sweep(ctx: Context) -> ExperimentResult:
    """Instabilities vs η, λ₁ at the edge of stability, flattening, shift and similarity."""
    grid, runs = lr_sweep_runs(ctx)
    labels = [f"η={lr:g}" for lr in grid]
    events = [find_instabilities(r) for r in runs]
    counts = [len(e) for e in events]
    ratios = [eos_ratio_after_reaching(r) for r in runs]
    flats = {lab: flattening(r, e) for lab, r, e in zip(labels, runs, events, strict=True) if len(e)}
    sim = trajectory_similarity(runs, runs[0], labels)
    claims = [
        C.critical_lr(grid, runs),
        C.eos_hover(labels, runs),
        C.flattening_drop(runs),
        C.flattening_trend(labels, runs),
        C.shift_across(runs),
        C.similarity_falls(grid[1:], list(sim.final("cosine")[1:]), "cosine of θ − θ₀"),
    ]
    acc = [final(r, "test_acc") for r in runs]
    big = runs[int(np.argmax([c for c in counts]))] if any(counts) else runs[-1]
    figures = (
        SweepCurvesFigure(
            "curves",
            "Training loss, and λ₁ (solid) against 2/η (dashed), for every η.",
            runs=runs,
            labels=[f"η={lr:g}" for lr in grid],
        ),
        MetricVsFigure(
            "outcomes",
            "Instabilities per run against η.",
            x=grid,
            series={"instabilities": counts},
            xlabel="η",
            ylabel=f"number of instabilities (δ = {DEFAULT_DELTA:g})",
        ),
        MetricVsFigure(
            "accuracy",
            "Final test accuracy against η.",
            x=grid,
            series={"final test accuracy": acc},
            xlabel="η",
            ylabel="test accuracy",
        ),
        LossAndSharpnessFigure("largest", "The run with the most instabilities.", run=big),
        FlatteningFigure("flattening", "λ₁ after each instability, per η.", results=flats),
        SimilarityFigure("similarity", "Similarity to the η = 0.01 baseline over time.", sim=sim),
    )
    rows = tuple(
        (lr, r.state, c, fmt(x), fmt(final(r, "lambda1")), fmt(2 / lr), fmt(a))
        for lr, r, c, x, a in zip(grid, runs, counts, ratios, acc, strict=True)
    )
    return ExperimentResult(
        claims=tuple(claims),
        figures=figures,
        runs=tuple(r.path for r in runs),
        tables=(
            TableSpec(
                "Runs", ("η", "status", "instabilities", "EoS ratio", "final λ₁", "2/η", "test acc"), rows
            ),
        ),
        settings={"base": base_config(ctx.variant), "lr_grid": grid},
    )


@experiment(
    "wang2023.flattening",
    "Landscape flattening",
    "λ₁ just before and just after each instability: the drop across each one, and λ₁ after each against "
    "the instability's index, per η.",
)
def flattening_exp(ctx: Context) -> ExperimentResult:
    """Drop across each instability and trend over the index, per η."""
    grid, runs = lr_sweep_runs(ctx)
    labels = [f"η={lr:g}" for lr in grid]
    flats = {lab: flattening(r) for lab, r in zip(labels, runs, strict=True)}
    rows = tuple(
        (
            k,
            len(f.index),
            fmt(f.median_drop),
            fmt(f.rho),
            fmt(f.below_threshold),
            ", ".join(fmt(v) for v in f.lambda1),
        )
        for k, f in flats.items()
    )
    claims = (C.flattening_drop(runs), C.flattening_trend(labels, runs), C.below_threshold_after(runs))
    return ExperimentResult(
        claims=claims,
        figures=(
            FlatteningFigure(
                "flattening",
                "λ₁ after each instability, per η.",
                results={k: f for k, f in flats.items() if len(f.index)},
            ),
        ),
        tables=(
            TableSpec(
                "Flattening per η",
                (
                    "run",
                    "instabilities",
                    "median λ₁ after/before",
                    "Spearman ρ",
                    "fraction ≤ threshold",
                    "λ₁ after each",
                ),
                rows,
            ),
        ),
        runs=tuple(r.path for r in runs),
        settings={"lr_grid": grid},
    )


@experiment(
    "wang2023.shift",
    "Landscape shift",
    "Overlap of the top-k eigen-subspaces over time, and the shift across each instability against "
    "stable windows of the same length.",
)
def shift_exp(ctx: Context) -> ExperimentResult:
    """Shift per instability, per η."""
    grid, runs = lr_sweep_runs(ctx)
    rows = []
    for lr, run in zip(grid, runs, strict=True):
        s = landscape_shift(run)
        for ev, a, b, n in zip(s.events, s.across, s.stable, s.windows, strict=True):
            rows.append((lr, ev.index, ev.start, ev.end, fmt(a), fmt(b), n))
    claims = (C.shift_across(runs), C.shift_grows(grid, runs))
    big = max(runs, key=lambda r: len(find_instabilities(r)))
    return ExperimentResult(
        claims=claims,
        figures=(
            ShiftMatrixFigure(
                "shift_matrix",
                f"Overlap matrix of the run with the most instabilities ({big.path.name}).",
                run=big,
            ),
        ),  # noqa: E501
        tables=(
            TableSpec(
                "Shift per instability",
                ("η", "#", "start", "end", "shift across", "stable (at least as long)", "windows"),
                tuple(rows),
            ),
        ),
        runs=tuple(r.path for r in runs),
        settings={"lr_grid": grid},
    )


@experiment(
    "wang2023.similarity",
    "Trajectory similarity across η",
    "Runs from the same initialisation compared with the η = 0.01 baseline over time: cosine of the "
    "displacements, overlap of top-k subspaces, agreement of test predictions.",
)
def similarity_exp(ctx: Context) -> ExperimentResult:
    """Heatmaps and the trend with η."""
    grid, runs = lr_sweep_runs(ctx)
    sim = trajectory_similarity(runs, runs[0], [f"η={lr:g}" for lr in grid])
    claims = [
        C.similarity_falls(grid[1:], list(sim.final(what)[1:]), label)
        for what, label in (
            ("cosine", "cosine of θ − θ₀"),
            ("agreement", "test prediction agreement"),
            ("overlap", "top-k subspace overlap"),
        )
    ]
    beyond = [(lr, c) for lr, c in zip(grid, sim.final("cosine"), strict=True) if lr >= 0.2]
    claims.append(
        Claim(
            "Trajectories are very dissimilar beyond η ≈ 0.20",
            ", ".join(f"η={lr:g}: cos {fmt(c, 2)}" for lr, c in beyond) or "no η ≥ 0.2 in the grid",
            "largest final cosine for η ≥ 0.2 < 0.5",
            max(c for _, c in beyond) if beyond else None,
            below(0.5),
        )
    )
    return ExperimentResult(
        claims=tuple(claims),
        figures=(SimilarityFigure("similarity", "Similarity to the η = 0.01 baseline.", sim=sim),),
        runs=tuple(r.path for r in runs),
        settings={"lr_grid": grid},
    )


def _outlier_config(ctx: Context) -> dict:
    """Cross-entropy, ReLU MLP, SGD: the classification setting where C outliers are expected."""
    base = base_config(ctx.variant)
    steps = {"smoke": 60, "quick": 600, "full": 3000}[ctx.variant]
    return with_(
        base,
        loss="ce",
        **{
            "model.activation": "relu",
            "model.width": 2 * base["model"]["width"],
            "optimizer": {"name": "sgd", "lr": 0.1},
            "train.steps": steps,
            "train.batch_size": 50,
            "measure": {"every": steps // 12, "k": _m(ctx)},  # minibatch: no around_instabilities
        },
    )


def _m(ctx: Context) -> int:
    """How many top eigenvalues the outlier experiments compute (m ≥ 3C, fewer for smoke)."""
    return 10 if ctx.variant == "smoke" else 30


@experiment(
    "wang2023.outliers",
    "Outliers and bulk of the Hessian spectrum",
    "Top-30 eigenvalues through training of a cross-entropy classifier (C = 10): the outlier count k* "
    "over time, the spectrum with its outliers at the end and the SLQ density of the whole spectrum.",
)
def outliers(ctx: Context) -> ExperimentResult:
    """k* over training and the final spectrum."""
    cfg = _outlier_config(ctx)
    run = ctx.train(cfg, "ce_relu_sgd")
    ks = [(r["step"], outlier_count(r["eigenvalues"])) for r in run.measurements if r.get("eigenvalues")]
    late = [k for s, k in ks if s >= 100]
    frac = float(np.mean([9 <= k <= 11 for k in late])) if late else math.nan
    model, loss_fn, ds = final_model(run)
    n = min(2000 if ctx.variant != "smoke" else 200, ds.X_train.shape[0])
    op = HessianOperator(model, loss_fn, (ds.X_train[:n], ds.y_train[:n]))
    dens = spectral_density(
        op,
        n_probes=4 if ctx.variant != "smoke" else 1,
        n_steps=60 if ctx.variant != "smoke" else 15,
        seed=ctx.seed,
    )
    values = run.measurements[-1]["eigenvalues"]
    spec = spectrum(values)
    claims = (
        Claim(
            "Cross-entropy with C classes gives about C (or C − 1) outlier eigenvalues",
            f"k* at measurements after step 100: {late}; fraction within 9–11 = {fmt(frac, 2)}",
            "fraction of those measurements with k* ∈ [9, 11] ≥ 0.5",
            frac if late else None,
            at_least(0.5),
        ),
        Claim(
            "The outliers are separated from the bulk",
            f"final log-gap log(λ_k*/λ_k*+1) = {fmt(spec.log_gap)} at k* = {spec.k_star}",
            "the largest log-gap > 0.3 (a 35 % jump)",
            spec.log_gap,
            above(0.3),
        ),
    )
    return ExperimentResult(
        claims=claims,
        figures=(
            OutliersOverTimeFigure("outliers", "Top-30 eigenvalues and k* over time.", run=run),
            SpectrumFigure(
                "spectrum",
                "Final top-30 (outliers red) and the SLQ density of the whole spectrum.",
                values=values,
                density=dens,
                title=f"step {run.measurements[-1]['step']}",
            ),
        ),
        runs=(run.path,),
        settings=cfg,
    )


SECOND_DATA = {"name": "src", "dim": 40, "n_classes": 10, "separation": 2.0}
SECOND_GRID = {
    "smoke": [0.1, 0.6, 1.2],
    "quick": [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
    "full": [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
}


@experiment(
    "wang2023.second_dataset",
    "The central claims on a second data set (SRC)",
    "Shift, flattening, outliers and similarity on the SRC Gaussian-mixture set (40 dimensions, 10 "
    "classes, separation 2) instead of MNIST-1D: the same model, loss and optimiser; the η grid reaches "
    "0.6 because this data first becomes unstable near η = 0.3.",
)
def second_dataset(ctx: Context) -> ExperimentResult:
    """The lr-sweep claims and the outlier claim, evaluated by the same claim functions on SRC."""
    base = base_config(ctx.variant)
    n = base["data"]
    data = {**SECOND_DATA, "n_train": n["n_train"], "n_test": n["n_test"]}
    grid = SECOND_GRID[ctx.variant]
    runs = ctx.train_many(
        [with_(base, **{"data": data, "optimizer.lr": lr}) for lr in grid],
        [f"src_gd_lr{lr:g}" for lr in grid],
    )
    labels = [f"η={lr:g}" for lr in grid]
    sim = trajectory_similarity(runs, runs[0], labels)
    out_run = ctx.train(with_(_outlier_config(ctx), **{"data": data}), "src_ce_relu_sgd")
    ks = [(r["step"], outlier_count(r["eigenvalues"])) for r in out_run.measurements if r.get("eigenvalues")]
    late = [k for s, k in ks if s >= 100]
    frac = float(np.mean([9 <= k <= 11 for k in late])) if late else None
    claims = (
        C.critical_lr(grid, runs),
        C.flattening_drop(runs),
        C.flattening_trend(labels, runs),
        C.shift_across(runs),
        C.shift_grows(grid, runs),
        C.similarity_falls(grid[1:], list(sim.final("cosine")[1:]), "cosine of θ − θ₀"),
        Claim(
            "Cross-entropy with C classes gives about C (or C − 1) outlier eigenvalues",
            f"k* at measurements after step 100: {late}; fraction within 9–11 = {fmt(frac, 2)}",
            "fraction of those measurements with k* ∈ [9, 11] ≥ 0.5",
            frac,
            at_least(0.5),
        ),
    )
    counts = [len(find_instabilities(r)) for r in runs]
    big = runs[int(np.argmax(counts))] if any(counts) else runs[-1]
    return ExperimentResult(
        claims=claims,
        figures=(
            SweepCurvesFigure(
                "curves",
                "SRC: training loss, and λ₁ against 2/η, for every η.",
                runs=runs,
                labels=labels,
            ),
            LossAndSharpnessFigure("largest", "The SRC run with the most instabilities.", run=big),
            OutliersOverTimeFigure(
                "outliers",
                "SRC, cross-entropy: top eigenvalues and k* over time.",
                run=out_run,
            ),
        ),
        tables=(
            TableSpec(
                "Runs",
                ("η", "status", "instabilities", "final λ₁", "2/η", "test acc"),
                tuple(
                    (lr, r.state, c, fmt(final(r, "lambda1")), fmt(2 / lr), fmt(final(r, "test_acc")))
                    for lr, r, c in zip(grid, runs, counts, strict=True)
                ),
            ),
        ),
        runs=(*(r.path for r in runs), out_run.path),
        settings={"data": data, "lr_grid": grid},
    )


@experiment(
    "wang2023.effective_params",
    "Perturbing the effective parameters",
    "θ moved by ±ε along each outlier eigenvector, along bulk eigenvectors and along random directions: "
    "how much the outputs, the test loss and the test accuracy change.",
)
def effective_params(ctx: Context) -> ExperimentResult:
    """Outlier vs bulk vs random directions."""
    run = ctx.train(_outlier_config(ctx), "ce_relu_sgd")
    model, loss_fn, ds = final_model(run)
    n = min(2000 if ctx.variant != "smoke" else 200, ds.X_train.shape[0])
    m = _m(ctx)
    res = eigenpairs(HessianOperator(model, loss_fn, (ds.X_train[:n], ds.y_train[:n])), k=m, tol=1e-4)
    assert res.vectors is not None  # eigenpairs returns the vectors by default (return_vectors=True)
    k = outlier_count(res.values)
    rows, claims = [], []
    for eps in (0.5, 1.0, 2.0):
        p = perturbation_test(model, loss_fn, ds.test, res.vectors, k_star=k, eps=eps, n_random=20)
        for g in p.groups:
            rows.append(
                (
                    eps,
                    g.name,
                    g.n_directions,
                    fmt(g.output_change),
                    fmt(g.loss_change),
                    fmt(g.accuracy_change),
                )
            )
        if eps == 1.0:
            o, b, r = (p.group(x) for x in ("outlier", "bulk", "random"))
            claims.append(
                Claim(
                    "Outlier directions move the test loss far more than bulk or random ones",
                    f"ε = 1: mean |Δ test loss| outlier {fmt(o.loss_change)}, bulk {fmt(b.loss_change)}, "
                    f"random {fmt(r.loss_change)}",
                    "outlier / max(bulk, random) > 3",
                    o.loss_change / max(b.loss_change, r.loss_change, 1e-30),
                    above(3.0),
                )
            )
            claims.append(
                Claim(
                    "… and the outputs",
                    f"ε = 1: mean ‖Δf‖ outlier {fmt(o.output_change)}, bulk {fmt(b.output_change)}, "
                    f"random {fmt(r.output_change)}",
                    "outlier / max(bulk, random) > 3",
                    o.output_change / max(b.output_change, r.output_change, 1e-30),
                    above(3.0),
                )
            )
    return ExperimentResult(
        claims=tuple(claims),
        tables=(
            TableSpec(
                f"Perturbations (k* = {k} outliers, {m - k} bulk, 20 random)",
                ("ε", "directions", "n", "mean ‖Δf‖", "mean |Δ loss|", "mean |Δ acc|"),
                tuple(rows),
            ),
        ),
        runs=(run.path,),
        settings={"k_star": k},
    )


@experiment(
    "wang2023.klayer",
    "The k-layer Hessian approximation",
    "Top eigenpairs of the Hessian block of the last (and first) k layers against the full Hessian's, as k "
    "grows (ours: the block of the last k layers, eigenvectors padded with zeros).",
)
def klayer(ctx: Context) -> ExperimentResult:
    """λ₁ error and eigenvector overlap against k."""
    base = base_config(ctx.variant)
    cfg = with_(
        base,
        **{
            "model.depth": 3,
            "optimizer.lr": 0.1,
            "train.steps": base["train"]["steps"] // 2,
            "measure": {"every": base["train"]["steps"] // 2, "k": 1},
        },
    )
    run = ctx.train(cfg, "klayer_mlp4")
    model, loss_fn, ds = final_model(run)
    data = ds.train
    tol, multi = (1e-4, False) if ctx.variant == "smoke" else (1e-6, True)
    full = eigenpairs(HessianOperator(model, loss_fn, data), k=5, tol=tol, check_multiplicity=multi)
    assert full.vectors is not None  # return_vectors=True, the default (also below)
    n_layers = sum(1 for m in model.modules() if isinstance(m, torch.nn.Linear))
    rows, errs, ovs = [], [], []
    for side in ("last", "first"):
        for k in range(1, n_layers + 1):
            sel = layers(model, **{side: k})
            op = HessianOperator(model, loss_fn, data, params=sel)
            res = eigenpairs(op, k=min(5, op.dim), tol=tol, check_multiplicity=multi)
            assert res.vectors is not None
            padded = torch.zeros(full.vectors.shape[0], res.vectors.shape[1], dtype=full.vectors.dtype)
            offset, idx = 0, {}
            for n, p in model.named_parameters():
                idx[n] = (offset, offset + p.numel())
                offset += p.numel()
            row = 0
            for n in sel.names:
                a, b = idx[n]
                padded[a:b] = res.vectors[row : row + b - a].to(padded.dtype)
                row += b - a
            err = abs(float(res.values[0]) - float(full.values[0])) / abs(float(full.values[0]))
            ov = subspace_overlap(full.vectors[:, :5].numpy(), padded.numpy())
            rows.append((side, k, op.dim, fmt(float(res.values[0])), fmt(err), fmt(ov)))
            if side == "last":
                errs.append(err)
                ovs.append(ov)
    monotone = all(a >= b - 1e-9 for a, b in zip(errs, errs[1:], strict=False))
    claims = (
        Claim(
            "The last-k-layer block approaches the full Hessian as k grows",
            "relative λ₁ error for k = 1…L (last layers): "
            + ", ".join(fmt(e, 2) for e in errs)
            + "; top-5 overlap: "
            + ", ".join(fmt(o, 2) for o in ovs),
            f"1 if the error is non-increasing in k and ≤ {tol:g} at k = L, else 0",
            C.holds(monotone and errs[-1] <= tol),
            C.HELD,
        ),
        Claim(
            "A few last layers already carry the top curvature",
            f"λ₁ error with the last 2 of {n_layers} layers = {fmt(errs[1] if len(errs) > 1 else math.nan)}",
            "relative error ≤ 0.25",
            errs[1] if len(errs) > 1 else None,
            Region(-math.inf, 0.25, closed=True),
        ),
    )
    return ExperimentResult(
        claims=claims,
        figures=(
            MetricVsFigure(
                "klayer",
                "λ₁ error and eigenvector overlap of the last-k-layer block.",
                x=list(range(1, n_layers + 1)),
                series={"relative λ₁ error": errs, "top-5 overlap": ovs},
                xlabel="k (last layers)",
                ylabel="value",
            ),
        ),
        tables=(
            TableSpec(
                "Blocks",
                ("side", "k", "dim", "λ₁ of block", "rel. error to full λ₁", "top-5 overlap"),
                tuple(rows),
            ),
        ),
        runs=(run.path,),
        settings=cfg,
    )


@experiment(
    "wang2023.delayed_decay",
    "Delayed learning-rate decay",
    "Hold a large η₀ for T_d steps, then decay it tenfold: the final λ₁ and test accuracy against T_d.",
)
def delayed_decay(ctx: Context) -> ExperimentResult:
    """Final sharpness and accuracy against the decay step."""
    base = base_config(ctx.variant)
    steps = base["train"]["steps"]
    grid = [0, steps // 8, steps // 4, steps // 2, 3 * steps // 4]
    cfgs = [
        with_(
            base,
            **{"optimizer.lr": 0.3, "schedule": {"name": "delayed_decay", "delay": td, "final_factor": 0.1}},
        )
        for td in grid
    ]
    runs = ctx.train_many(cfgs, [f"delay{td}" for td in grid])
    lam = [final(r, "lambda1") for r in runs]
    at_decay = [lambda_at(r, td) for r, td in zip(runs, grid, strict=True)]
    acc = [final(r, "test_acc") for r in runs]
    n_inst = [len(find_instabilities(r)) for r in runs]
    rho_d, rho_l, rho_a = spearman(grid, at_decay), spearman(grid, lam), spearman(grid, acc)
    claims = (
        Claim(
            "A longer large-η phase reaches a flatter region (λ₁ at the decay point)",
            f"Spearman ρ(T_d, λ₁ at step T_d) = {fmt(rho_d)}; λ₁ {', '.join(fmt(x) for x in at_decay)}",
            "ρ < 0",
            rho_d if np.isfinite(rho_d) else None,
            below(0.0),
        ),
        Claim(
            "… and ends in one (final λ₁, after sharpening at the decayed η)",
            f"Spearman ρ(T_d, final λ₁) = {fmt(rho_l)}; final λ₁ {', '.join(fmt(x) for x in lam)}",
            "ρ < 0",
            rho_l if np.isfinite(rho_l) else None,
            below(0.0),
        ),
        Claim(
            "… and generalises better",
            f"Spearman ρ(T_d, test accuracy) = {fmt(rho_a)}; accuracy {', '.join(fmt(x, 3) for x in acc)}",
            "ρ > 0",
            rho_a if np.isfinite(rho_a) else None,
            above(0.0),
        ),
    )
    return ExperimentResult(
        claims=claims,
        figures=(
            MetricVsFigure(
                "outcome",
                "Sharpness at the decay point and at the end, against T_d.",
                x=grid,
                series={"λ₁ at the decay point": at_decay, "final λ₁": lam},
                xlabel="T_d (steps)",
                ylabel="λ₁",
            ),
            MetricVsFigure(
                "accuracy",
                "Final test accuracy against T_d.",
                x=grid,
                series={"test accuracy": acc},
                xlabel="T_d (steps)",
                ylabel="test accuracy",
            ),
            SweepCurvesFigure(
                "curves",
                "Loss and λ₁ against the threshold for every T_d.",
                runs=runs,
                labels=[f"T_d={t}" for t in grid],
            ),
        ),
        tables=(
            TableSpec(
                "Runs",
                ("T_d", "instabilities", "λ₁ at T_d", "final λ₁", "test acc"),
                tuple(zip(grid, n_inst, map(fmt, at_decay), map(fmt, lam), map(fmt, acc), strict=True)),
            ),
        ),
        runs=tuple(r.path for r in runs),
        settings={"eta0": 0.3, "delays": grid},
    )


@experiment(
    "wang2023.cyclic",
    "Cyclic learning rates",
    "Triangular cycles between η_high/r and η_high = 0.3 for a grid of ratios r: instabilities, flattening "
    "and shift (and the paper's open question 3: does exploration grow with r?).",
)
def cyclic(ctx: Context) -> ExperimentResult:
    """Instabilities, flattening and shift against the ratio."""
    base = base_config(ctx.variant)
    steps = base["train"]["steps"]
    ratios = [1.0, 2.0, 5.0, 10.0] if ctx.variant != "smoke" else [1.0, 5.0]
    cfgs = [
        with_(base, **{"optimizer.lr": 0.3, "schedule": {"name": "cyclic", "ratio": r, "period": steps // 5}})
        if r > 1
        else with_(base, **{"optimizer.lr": 0.3})
        for r in ratios
    ]
    runs = ctx.train_many(cfgs, [f"cyclic_r{r:g}" for r in ratios])
    n_inst = [len(find_instabilities(r)) for r in runs]
    shifts = [landscape_shift(r) for r in runs]
    across = [s.mean_across for s in shifts]
    rhos = [flattening(r).rho for r in runs]

    def recurring(delta: float) -> Claim:
        counts = [len(find_instabilities(r, delta)) for r in runs]
        cyc = [n for r, n in zip(ratios, counts, strict=True) if r > 1]
        return Claim(
            "Cycling η produces recurring instabilities",
            "instabilities per r: " + ", ".join(f"{r:g}: {n}" for r, n in zip(ratios, counts, strict=True)),
            "fewest instabilities over r > 1 ≥ 2",
            min(cyc) if cyc else None,
            at_least(2.0),
        )

    claims = (
        C.over_deltas(recurring),
        replace(
            C.shift_grows(ratios, runs, name="r"),
            text="Open question 3: exploration (shift across instabilities) grows with the ratio r",
        ),
    )
    return ExperimentResult(
        claims=claims,
        figures=(
            SweepCurvesFigure(
                "curves",
                "Loss and λ₁ against the threshold (which follows η) for every ratio.",
                runs=runs,
                labels=[f"r={r:g}" for r in ratios],
            ),
        ),
        tables=(
            TableSpec(
                "Runs",
                ("r", "instabilities", "flattening ρ", "mean shift across"),
                tuple(zip(ratios, n_inst, map(fmt, rhos), map(fmt, across), strict=True)),
            ),
        ),
        runs=tuple(r.path for r in runs),
        settings={"eta_high": 0.3, "ratios": ratios, "period": steps // 5},
    )


@experiment(
    "wang2023.long_horizon",
    "Long high-η runs (beyond the paper)",
    "Open question 1 of [W&R]: λ₁ and instabilities over a run ten times longer at η = 0.3. Do instabilities "
    "keep coming and does λ₁ keep falling?",
    beyond_paper=True,
)
def long_horizon(ctx: Context) -> ExperimentResult:
    """λ₁ and instabilities per quarter of a 10× run."""
    base = base_config(ctx.variant)
    steps = 10 * base["train"]["steps"]
    cfg = with_(
        base, **{"optimizer.lr": 0.3, "train.steps": steps, "measure": {"every": steps // 200, "k": 1}}
    )
    run = ctx.train(cfg, "long_lr0.3")

    def late(delta: float) -> Claim:
        events = find_instabilities(run, delta)
        quarters = [sum(steps * q / 4 <= e.start < steps * (q + 1) / 4 for e in events) for q in range(4)]
        return Claim(
            "Instabilities keep occurring late in training",
            f"instabilities per quarter: {quarters}",
            "instabilities in the last quarter ≥ 1",
            quarters[-1],
            at_least(1.0),
        )

    s, lam = run.series("lambda1", run.cadence_measurements)
    _, thr = run.series("threshold", run.cadence_measurements)
    half = s >= steps / 2
    rho = spearman(list(s[half]), list(lam[half]))
    ratio = float(np.nanmedian(lam[half] / thr[half])) if half.any() else math.nan
    claims = (
        C.over_deltas(late),
        Claim(
            "λ₁ keeps falling in the second half",
            f"Spearman ρ(step, λ₁) over the second half = {fmt(rho)}; median λ₁/(2/η) = {fmt(ratio)}",
            "ρ < 0",
            rho if np.isfinite(rho) else None,
            below(0.0),
        ),
    )
    return ExperimentResult(
        claims=claims,
        figures=(LossAndSharpnessFigure("long", "The whole run.", run=run),),
        runs=(run.path,),
        settings=cfg,
    )


@experiment(
    "wang2023.cooling",
    "What happens during cooling (beyond the paper)",
    "Open question 2 of [W&R]: during each instability's cooling phase, how much of the gradient lies in the "
    "top eigen-subspace, and how λ₁ and the loss move (measured every 2 steps).",
    beyond_paper=True,
)
def cooling(ctx: Context) -> ExperimentResult:
    """Gradient alignment with the top-k subspace, heating vs cooling vs stable."""
    base = base_config(ctx.variant)
    steps = {"smoke": 120, "quick": 800, "full": 2000}[ctx.variant]
    cfg = with_(base, **{"optimizer.lr": 0.5, "train.steps": steps, "measure": {"every": 2, "k": 3}})
    run = ctx.train(cfg, "cooling_lr0.5")

    def phases(delta: float) -> dict[str, list[float]]:
        events = find_instabilities(run, delta)
        phase: dict[str, list[float]] = {"heating": [], "cooling": [], "stable": []}
        for r in run.measurements:
            if r.get("grad_topk_fraction") is None:
                continue
            t, where = r["step"], "stable"
            for e in events:
                end = e.end if e.end is not None else steps
                if e.start <= t < e.peak:
                    where = "heating"
                elif e.peak <= t <= end:
                    where = "cooling"
            phase[where].append(r["grad_topk_fraction"])
        return phase

    def aligned(delta: float) -> Claim:
        phase = phases(delta)
        m = {k: float(np.mean(v)) if v else math.nan for k, v in phase.items()}
        diff = m["cooling"] - m["stable"] if phase["cooling"] and phase["stable"] else None
        return Claim(
            "During cooling the gradient aligns with the top eigenvectors more than in stable phases",
            f"mean fraction of ‖g‖² in the top-3 subspace: cooling {fmt(m['cooling'])} "
            f"({len(phase['cooling'])} measurements), heating {fmt(m['heating'])}, stable {fmt(m['stable'])}",
            "cooling − stable > 0",
            diff,
            above(0.0),
        )

    events = find_instabilities(run)
    means = {k: float(np.mean(v)) if v else math.nan for k, v in phases(DEFAULT_DELTA).items()}
    claims = (C.over_deltas(aligned),)
    return ExperimentResult(
        claims=claims,
        figures=(
            LossAndSharpnessFigure(
                "run",
                "Loss and λ₁ measured every 2 steps, phases shaded.",
                run=run,
                instabilities=events,
            ),
            MetricVsFigure(
                "alignment",
                "Gradient alignment by phase.",
                x=[0, 1, 2],
                series={"top-3 gradient fraction": [means["stable"], means["heating"], means["cooling"]]},
                xlabel="phase (0 stable, 1 heating, 2 cooling)",
                ylabel="‖U₃ᵀg‖² / ‖g‖²",
            ),
        ),
        runs=(run.path,),
        settings=cfg,
    )
