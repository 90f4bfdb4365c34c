"""The experiments of Gilmer et al. (2021) (DESIGN §7).

Curvature early in training decides stability; warmup, clipping, initialisation and
normalisation act through it.

"Largest stable η" is the largest value of a geometric η grid whose run did not diverge
(NaN/inf, or loss above 1000× the initial loss) within the run's steps.
"""

from __future__ import annotations

import math

import numpy as np

from landscope.experiments.common import (
    base_config,
    eos_ratio_after_reaching,
    final,
    fmt,
    largest_stable,
    spearman,
    with_,
)
from landscope.experiments.registry import Context, experiment
from landscope.experiments.results import REPORTED, Claim, ExperimentResult, FigureSpec, TableSpec
from landscope.train import Run


def _grid(ctx: Context, lo: float, n: int) -> list[float]:
    """A geometric grid lo·2^i (fewer points for smoke)."""
    n = 3 if ctx.variant == "smoke" else n
    return [lo * 2**i for i in range(n)]


def _short(ctx: Context, cfg: dict, steps: int | None = None, every: int = 10, k: int = 1) -> dict:
    steps = steps or {"smoke": 40, "quick": 300, "full": 2000}[ctx.variant]
    return with_(cfg, **{"train.steps": steps, "measure": {"every": every, "k": k, "test": True}})


def _classifier(ctx: Context) -> dict:
    """Cross-entropy MLP with momentum SGD on minibatches: [G]'s kind of training, at small scale."""
    base = base_config(ctx.variant)
    return with_(
        base,
        loss="ce",
        **{
            "model.activation": "relu",
            "optimizer": {"name": "momentum", "lr": 0.1, "momentum": 0.9},
            "train.batch_size": 50,
        },
    )


MAX_DOUBLINGS = 4  # how far a stable sweep extends its grid upwards to find divergence


def _stable_sweeps(
    ctx: Context, cfgs: dict[str, dict], grid: list[float]
) -> tuple[list[float], dict[str, list[Run]], dict[str, float]]:
    """Sweep η for several configs on one shared grid, extended until each diverges somewhere.

    The grid's top is doubled while any config's largest η is still stable (at most MAX_DOUBLINGS
    times), so the largest stable η is measured, not cut off by the grid. A value still at the top
    of the final grid is censored: NaN.
    """
    grid = list(grid)
    start = len(grid)
    while True:
        runs = {
            label: ctx.train_many(
                [with_(cfg, **{"optimizer.lr": lr}) for lr in grid], [f"{label}_lr{lr:g}" for lr in grid]
            )
            for label, cfg in cfgs.items()
        }
        censored = any(rs[-1].state != "diverged" for rs in runs.values())
        extensions = len(grid) - start
        if not censored or ctx.variant == "smoke" or extensions >= MAX_DOUBLINGS:
            break
        grid.append(grid[-1] * 2)
    etas = {}
    for label, rs in runs.items():
        eta = largest_stable(grid, rs)
        etas[label] = math.nan if rs[-1].state != "diverged" else eta
    return grid, runs, etas


def _larger(a: float, b: float) -> bool | None:
    """Whether stable η ``a`` exceeds ``b`` (NaN: censored above the grid); None if both censored."""
    if not np.isfinite(a) and not np.isfinite(b):
        return None
    if not np.isfinite(a) or not np.isfinite(b):
        return not np.isfinite(a)
    return bool(a > b)


def _eta_text(eta: float, grid: list[float]) -> str:
    """A largest stable η for a claims table; a censored one says so."""
    return f"> {grid[-1]:g} (none diverged)" if not np.isfinite(eta) else f"{eta:g}"


def _lambda_at(run: Run, step: int) -> float:
    s, v = run.series("lambda1", run.measurements)
    ok = np.isfinite(v) & (s <= step)
    return float(v[ok][-1]) if ok.any() else math.nan


@experiment(
    "gilmer2021.warmup",
    "Learning-rate warmup",
    "λ₁ in early training with and without a linear warmup, and the largest stable η of each, on a model "
    "whose initial curvature is high (weights scaled ×2 at init).",
)
def warmup(ctx: Context) -> ExperimentResult:
    """Early λ₁ and largest stable η, with and without warmup."""
    cfg = _short(ctx, with_(_classifier(ctx), **{"model.init": "scaled", "model.init_scale": 2.0}), every=5)
    wsteps = {"smoke": 10, "quick": 100, "full": 500}[ctx.variant]
    grid = _grid(ctx, 0.05, 7)
    warm_cfg = with_(cfg, **{"schedule": {"name": "constant", "warmup_steps": wsteps}})
    grid, runs, etas = _stable_sweeps(ctx, {"nowarm": cfg, "warm": warm_cfg}, grid)
    (plain, warm), (eta_plain, eta_warm) = (runs["nowarm"], runs["warm"]), (etas["nowarm"], etas["warm"])
    both = [i for i, (a, b) in enumerate(zip(plain, warm, strict=True)) if a.state != "diverged" != b.state]
    i = both[-1] if both else 0
    lam_plain = max(
        (v for s, v in zip(*plain[i].series("lambda1", plain[i].measurements), strict=True) if s <= wsteps),
        default=math.nan,
    )
    lam_warm = max(
        (v for s, v in zip(*warm[i].series("lambda1", warm[i].measurements), strict=True) if s <= wsteps),
        default=math.nan,
    )
    claims = (
        Claim(
            "Warmup lowers the early curvature",
            f"max λ₁ over the first {wsteps} steps at η = {grid[i]:g}: "
            f"{fmt(lam_warm)} with warmup vs {fmt(lam_plain)} without",
            "with < without",
            bool(lam_warm < lam_plain) if both else None,
        ),
        Claim(
            "Warmup raises the largest stable η",
            f"largest stable η: {_eta_text(eta_warm, grid)} with warmup vs "
            f"{_eta_text(eta_plain, grid)} without (grid {grid[0]:g}…{grid[-1]:g}, ×2)",
            "with > without",
            _larger(eta_warm, eta_plain),
        ),
    )
    rows = tuple((lr, a.state, b.state) for lr, a, b in zip(grid, plain, warm, strict=True))
    return ExperimentResult(
        claims=claims,
        figures=(
            FigureSpec(
                "curves_plain",
                "sweep_curves",
                {"runs": plain, "labels": [f"η={g:g}" for g in grid], "ratio": True},
                "Without warmup: loss and λ₁/threshold.",
            ),
            FigureSpec(
                "curves_warm",
                "sweep_curves",
                {"runs": warm, "labels": [f"η={g:g}" for g in grid], "ratio": True},
                "With warmup: loss and λ₁/threshold.",
            ),
        ),
        tables=(TableSpec("Outcome per η", ("η", "without warmup", f"with {wsteps}-step warmup"), rows),),
        runs=tuple(r.path for r in plain + warm),
        settings={"base": cfg, "grid": grid, "warmup_steps": wsteps},
    )


VARIANTS = {
    "default": {},
    "batchnorm": {"model.norm": "batch"},
    "layernorm": {"model.norm": "layer"},
    "fixup": {"model.init": "fixup"},
    "metainit": {"model.init": "metainit"},
    "gradinit": {"model.init": "gradinit"},
}


@experiment(
    "gilmer2021.init_norm",
    "Initialisation and normalisation",
    "λ₁ at initialisation and the largest stable η for a small residual network without normalisation, "
    "with BatchNorm, LayerNorm, Fixup, MetaInit and GradInit.",
)
def init_norm(ctx: Context) -> ExperimentResult:
    """λ₁ at init and largest stable η per variant: do they move together."""
    base = with_(
        _classifier(ctx), **{"model": {"name": "resnet_lite", "width": 8, "depth": 2, "activation": "relu"}}
    )
    base = _short(ctx, base, every=50)
    grid = _grid(ctx, 0.025, 7)
    names = list(VARIANTS) if ctx.variant != "smoke" else ["default", "batchnorm", "fixup"]
    grid, sweeps, stable = _stable_sweeps(ctx, {f"init_{n}": with_(base, **VARIANTS[n]) for n in names}, grid)
    rows, lam0, etas, runs_all = [], [], [], []
    for name in names:
        runs, eta = sweeps[f"init_{name}"], stable[f"init_{name}"]
        l0 = _lambda_at(runs[0], 0)
        rows.append((name, fmt(l0), _eta_text(eta, grid), ", ".join(r.state[0] for r in runs)))
        lam0.append(l0)
        etas.append(eta)
        runs_all += runs
    rho = spearman(lam0, etas)
    ref = lam0[0], etas[0]
    direction = "; ".join(
        f"{n}: λ₁(init) {fmt(lv)} vs {fmt(ref[0])}, largest stable η {_eta_text(e, grid)} vs "
        f"{_eta_text(ref[1], grid)}"
        for n, lv, e in zip(names[1:], lam0[1:], etas[1:], strict=True)
    )
    claims = (
        Claim(
            "Lower curvature at initialisation allows a larger stable η (across init/norm choices)",
            f"Spearman ρ(λ₁ at init, largest stable η) = {fmt(rho)} over {len(names)} variants",
            "ρ < 0",
            bool(rho < 0) if np.isfinite(rho) else None,
            rho,
        ),
        Claim(
            "Each choice against the default (which way, measured)",
            direction or "n/a",
            REPORTED,
            None,
        ),
    )
    return ExperimentResult(
        claims=claims,
        figures=(
            FigureSpec(
                "scatter",
                "metric_vs",
                {
                    "x": lam0,
                    "series": {"largest stable η": etas},
                    "xlabel": "λ₁ at initialisation",
                    "ylabel": "largest stable η",
                    "logx": True,
                    "logy": True,
                },
                "Largest stable η against λ₁ at init (one point per variant, in the table's order).",
            ),
        ),
        tables=(
            TableSpec(
                "Variants", ("variant", "λ₁ at init", "largest stable η", "status per η (c/d)"), tuple(rows)
            ),
        ),
        runs=tuple(r.path for r in runs_all),
        settings={"base": base, "grid": grid},
    )


@experiment(
    "gilmer2021.clipping",
    "Gradient clipping",
    "The same η grid with and without gradient-norm clipping, on the high-curvature model: does clipping "
    "prevent the divergence that follows an early λ₁ overshoot?",
)
def clipping(ctx: Context) -> ExperimentResult:
    """Largest stable η with and without clipping."""
    cfg = _short(ctx, with_(_classifier(ctx), **{"model.init": "scaled", "model.init_scale": 2.0}))
    grid = _grid(ctx, 0.05, 7)
    grid, runs, etas = _stable_sweeps(
        ctx, {"noclip": cfg, "clip": with_(cfg, **{"train.clip_norm": 1.0})}, grid
    )
    (plain, clipped), (eta_plain, eta_clip) = (runs["noclip"], runs["clip"]), (etas["noclip"], etas["clip"])
    fired = [r.status.get("clip_count", 0) for r in clipped]
    claims = (
        Claim(
            "Clipping keeps training stable at larger η",
            f"largest stable η: {_eta_text(eta_clip, grid)} clipped vs "
            f"{_eta_text(eta_plain, grid)} unclipped",
            "clipped > unclipped",
            _larger(eta_clip, eta_plain),
        ),
    )
    rows = tuple((lr, a.state, b.state, f) for lr, a, b, f in zip(grid, plain, clipped, fired, strict=True))
    return ExperimentResult(
        claims=claims,
        figures=(
            FigureSpec(
                "clipped",
                "sweep_curves",
                {"runs": clipped, "labels": [f"η={g:g}" for g in grid], "ratio": True},
                "Clipped runs: loss and λ₁/threshold.",
            ),
        ),
        tables=(TableSpec("Outcome per η", ("η", "unclipped", "clipped (norm 1)", "clipping fired"), rows),),
        runs=tuple(r.path for r in plain + clipped),
        settings={"base": cfg, "grid": grid},
    )


@experiment(
    "gilmer2021.batch_size",
    "Batch-size scaling of low vs high curvature models",
    "Steps to reach a target training loss against the batch size (best η of a grid for each), for the "
    "default model and a high-curvature one (weights ×2 at init).",
)
def batch_size(ctx: Context) -> ExperimentResult:
    """Speed-up from larger batches, low vs high curvature."""
    base = _short(
        ctx, _classifier(ctx), steps={"smoke": 40, "quick": 400, "full": 3000}[ctx.variant], every=10, k=0
    )
    batches = [16, 64, 256] if ctx.variant != "smoke" else [16, 64]
    grid = _grid(ctx, 0.025, 5)
    target = 1.2 if ctx.variant != "smoke" else 2.2
    table, speedups = [], {}
    for model, over in (("default init", {}), ("init ×2", {"model.init": "scaled", "model.init_scale": 2.0})):
        best = []
        for b in batches:
            runs = ctx.train_many(
                [with_(base, **{**over, "train.batch_size": b, "optimizer.lr": lr}) for lr in grid],
                [f"bs{b}_{model[:7].replace(' ', '')}_lr{lr:g}" for lr in grid],
            )
            steps = []
            for r in runs:
                s, v = r.series("train_loss_full", r.measurements)
                hit = s[np.nonzero(v <= target)[0]]
                steps.append(int(hit[0]) if len(hit) and r.state != "diverged" else math.inf)
            i = int(np.argmin(steps))
            best.append(steps[i])
            table.append((model, b, grid[i] if np.isfinite(steps[i]) else None, steps[i]))
        speedups[model] = best[0] / best[-1] if np.isfinite(best[0]) and np.isfinite(best[-1]) else math.nan
    a, b = speedups["default init"], speedups["init ×2"]
    claims = (
        Claim(
            "High-curvature models gain less from larger batches",
            f"steps-to-target speed-up from batch {batches[0]} to {batches[-1]}: default {fmt(a)}×, "
            f"init ×2 {fmt(b)}×",
            "init ×2 < default",
            bool(b < a) if np.isfinite(a) and np.isfinite(b) else None,
        ),
    )
    return ExperimentResult(
        claims=claims,
        tables=(
            TableSpec(
                f"Best steps to train loss ≤ {target}", ("model", "batch", "best η", "steps"), tuple(table)
            ),
        ),
        settings={"base": base, "grid": grid, "batches": batches, "target_loss": target},
    )


@experiment(
    "gilmer2021.optimal_lr",
    "The best η is the largest stable one",
    "An η grid on the classifier: the η with the best final test loss against the largest η that did not "
    "diverge.",
)
def optimal_lr(ctx: Context) -> ExperimentResult:
    """Best η vs largest stable η."""
    cfg = _short(ctx, _classifier(ctx), every=50)
    grid = _grid(ctx, 0.0125, 8)
    grid, sweeps, stable = _stable_sweeps(ctx, {"opt": cfg}, grid)
    runs, eta_max = sweeps["opt"], stable["opt"]
    test = [final(r, "test_loss") if r.state != "diverged" else math.inf for r in runs]
    best = grid[int(np.argmin(test))]
    steps_apart = abs(grid.index(best) - grid.index(eta_max)) if np.isfinite(eta_max) else math.inf
    claims = (
        Claim(
            "The best η lies within one grid step of the largest non-divergent η",
            f"best η = {best:g} (final test loss {fmt(min(test))}), "
            f"largest stable η = {_eta_text(eta_max, grid)}",
            "≤ 1 grid step (×2) apart",
            bool(steps_apart <= 1) if np.isfinite(eta_max) else None,
        ),
    )
    return ExperimentResult(
        claims=claims,
        figures=(
            FigureSpec(
                "test_loss",
                "metric_vs",
                {
                    "x": grid,
                    "series": {"final test loss": [t if np.isfinite(t) else np.nan for t in test]},
                    "xlabel": "η",
                    "ylabel": "test loss",
                    "logx": True,
                    "marks": {"largest stable": eta_max} if np.isfinite(eta_max) else {},
                },
                "Final test loss against η (diverged runs omitted).",
            ),
        ),
        tables=(
            TableSpec(
                "Runs",
                ("η", "status", "final test loss"),
                tuple((g, r.state, fmt(t)) for g, r, t in zip(grid, runs, test, strict=True)),
            ),
        ),
        runs=tuple(r.path for r in runs),
        settings={"base": cfg, "grid": grid},
    )


@experiment(
    "gilmer2021.adam",
    "Adam's preconditioned sharpness",
    "Full-batch Adam at several η: the preconditioned sharpness λ₁(P⁻¹H) against its threshold "
    "(2 + 2β₁)/((1 − β₁)η) = 38/η.",
)
def adam(ctx: Context) -> ExperimentResult:
    """Median λ₁(P⁻¹H)·η/38 after reaching the threshold."""
    base = base_config(ctx.variant)
    grid = [1e-3, 3e-3, 1e-2] if ctx.variant != "smoke" else [1e-2]
    cfgs = [
        with_(
            base,
            **{
                "optimizer": {"name": "adam", "lr": lr},
                "measure": {"every": 20 if ctx.variant != "smoke" else 10, "k": 1},
            },
        )
        for lr in grid
    ]
    runs = ctx.train_many(cfgs, [f"adam_lr{lr:g}" for lr in grid])
    ratios = [eos_ratio_after_reaching(r, preconditioned_only=True) for r in runs]
    reached = [(lr, x) for lr, x in zip(grid, ratios, strict=True) if np.isfinite(x)]
    claims = (
        Claim(
            "Adam's preconditioned λ₁ hovers near 38/η",
            "median λ₁(P⁻¹H)/(38/η) after reaching it: "
            + (", ".join(f"η={lr:g}: {fmt(x)}" for lr, x in reached) or "no run reached 38/η"),
            "within [0.8, 1.2] for every run that reached it",
            all(0.8 <= x <= 1.2 for _, x in reached) if reached else None,
        ),
    )
    return ExperimentResult(
        claims=claims,
        figures=(
            FigureSpec(
                "curves",
                "sweep_curves",
                {"runs": runs, "labels": [f"η={g:g}" for g in grid], "ratio": True},
                "Loss and λ₁(P⁻¹H)/(38/η).",
            ),
        ),
        runs=tuple(r.path for r in runs),
        settings={"base": base, "grid": grid},
    )
