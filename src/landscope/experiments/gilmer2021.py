"""The experiments of Gilmer et al. (2021) (DESIGN §7).

Curvature early in training decides stability; warmup, clipping, initialisation and
normalisation act through it.

Two largest η are reported side by side, on a geometric grid (×2) extended until divergence:

- the **largest non-divergent η**: its run did not diverge (NaN/inf, or loss above 1000× the
  initial loss) within the run's steps ("largest stable η" in the claims);
- the **largest η that trains**: its run did not diverge, its last full-set training loss is at
  most half its first, and its last test accuracy is at least twice chance (2/C). A ReLU network
  that died at chance stays finite, so it is "stable" but does not train.

The optimal-η claim uses the second. Criteria are fixed before the runs (issue 13).
"""

from __future__ import annotations

import math

import numpy as np

from landscope.experiments import claims as C
from landscope.experiments.claims import at_least, below
from landscope.experiments.common import (
    base_config,
    final,
    fmt,
    lambda_at,
    largest_stable,
    spearman,
    with_,
)
from landscope.experiments.figures import MetricVsFigure, SweepCurvesFigure
from landscope.experiments.registry import Context, experiment
from landscope.experiments.results import REPORTED, Claim, ExperimentResult, Region, TableSpec
from landscope.training import Run


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
            "measure.around_instabilities": False,  # minibatch: instabilities on the full-set loss
        },
    )


def trains(run: Run, n_classes: int) -> bool:
    """Whether a run trained: not diverged, last full-set loss ≤ ½ its first, test accuracy ≥ 2/C."""
    if run.state == "diverged":
        return False
    key = "train_loss_full" if any("train_loss_full" in m for m in run.measurements) else "train_loss"
    _, loss = run.series(key, run.measurements)
    loss = loss[np.isfinite(loss)]
    if len(loss) < 2 or not loss[-1] <= 0.5 * loss[0]:
        return False
    acc = final(run, "test_acc")
    return not np.isfinite(acc) or acc >= 2 / n_classes


def largest_training(values: list[float], runs: list[Run], n_classes: int) -> float:
    """The largest swept value whose run trained (NaN if none did, or if the largest did: censored)."""
    ok = [v for v, r in zip(values, runs, strict=True) if trains(r, n_classes)]
    if not ok or trains(runs[-1], n_classes):
        return math.nan
    return max(ok)


def _n_classes(cfg: dict) -> int:
    from landscope.training import parse_config
    from landscope.training.run import build_dataset

    return int(build_dataset(parse_config(cfg)).n_classes or 2)


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
        # one batch for every config (and seed), so the pool stays busy on a round of one new η
        flat = ctx.train_many(
            [with_(cfg, **{"optimizer.lr": lr}) for cfg in cfgs.values() for lr in grid],
            [f"{label}_lr{lr:g}" for label in cfgs for lr in grid],
        )
        runs = {label: flat[i * len(grid) : (i + 1) * len(grid)] for i, label in enumerate(cfgs)}
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


def _trained_etas(grid: list[float], runs: dict[str, list[Run]], n_classes: int) -> dict[str, float]:
    """The largest η that trains, per config of a stable sweep."""
    return {label: largest_training(grid, rs, n_classes) for label, rs in runs.items()}


def _eta_text(eta: float, grid: list[float]) -> str:
    """A largest stable η for a claims table; a censored one says so."""
    return f"> {grid[-1]:g} (none diverged)" if not np.isfinite(eta) else f"{eta:g}"


def _lambda_max(run: Run, steps: int) -> float:
    """The largest λ₁ measured over steps 0 … ``steps`` (NaN if none)."""
    s, v = run.series("lambda1", run.measurements)
    ok = np.isfinite(v) & (s <= steps)
    return float(v[ok].max()) if ok.any() else math.nan


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
    lam_plain, lam_warm = _lambda_max(plain[i], wsteps), _lambda_max(warm[i], wsteps)
    n = _n_classes(cfg)
    trained = _trained_etas(grid, runs, n)
    ratio = math.log(lam_warm / lam_plain) if both and lam_plain > 0 and lam_warm > 0 else None
    claims = (
        Claim(
            "Warmup lowers the early curvature",
            f"max λ₁ over the first {wsteps} steps at η = {grid[i]:g}: "
            f"{fmt(lam_warm)} with warmup vs {fmt(lam_plain)} without",
            "log(with / without) < 0",
            ratio,
            below(0.0),
        ),
        C.larger_eta(
            "Warmup raises the largest stable η", "with warmup", eta_warm, "without", eta_plain, grid
        ),
    )
    rows = tuple(
        (lr, a.state, b.state, "yes" if trains(a, n) else "no", "yes" if trains(b, n) else "no")
        for lr, a, b in zip(grid, plain, warm, strict=True)
    )
    largest = (
        ("largest non-divergent η", _eta_text(eta_plain, grid), _eta_text(eta_warm, grid)),
        ("largest η that trains", _eta_text(trained["nowarm"], grid), _eta_text(trained["warm"], grid)),
    )
    return ExperimentResult(
        claims=claims,
        figures=(
            SweepCurvesFigure(
                "curves_plain",
                "Without warmup: loss and λ₁/threshold.",
                runs=plain,
                labels=[f"η={g:g}" for g in grid],
                ratio=True,
            ),
            SweepCurvesFigure(
                "curves_warm",
                "With warmup: loss and λ₁/threshold.",
                runs=warm,
                labels=[f"η={g:g}" for g in grid],
                ratio=True,
            ),
        ),
        tables=(
            TableSpec(
                "Outcome per η",
                ("η", "without warmup", f"with {wsteps}-step warmup", "trains without", "trains with"),
                rows,
            ),
            TableSpec("Largest η", ("", "without warmup", "with warmup"), largest),
        ),
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


EARLY_STEPS = {"smoke": 20, "quick": 100, "full": 500}  # "early training" of the init/norm claims


@experiment(
    "gilmer2021.init_norm",
    "Initialisation and normalisation",
    "λ₁ over the first steps and the largest stable η for a small residual network without "
    "normalisation, with BatchNorm, LayerNorm, Fixup, MetaInit and GradInit, and with warmup alone.",
)
def init_norm(ctx: Context) -> ExperimentResult:
    """Early λ₁ and largest stable η per variant: do they move together; does warmup alone suffice."""
    base = with_(
        _classifier(ctx), **{"model": {"name": "resnet_lite", "width": 8, "depth": 2, "activation": "relu"}}
    )
    # λ₁ every 10 steps over the early phase, on a fixed 250-sample Hessian set (5 batches): with the whole
    # training set a BatchNorm run (train-mode statistics per batch) spent 45 s measuring
    # (smoke: 100 of its 200 samples, two batches; it checks the pipeline, not the claim)
    samples = 100 if ctx.variant == "smoke" else 250
    base = with_(_short(ctx, base, every=10), **{"measure.hessian_samples": samples})
    early = EARLY_STEPS[ctx.variant]
    grid = _grid(ctx, 0.025, 7)
    names = list(VARIANTS) if ctx.variant != "smoke" else ["default", "batchnorm", "fixup"]
    cfgs = {f"init_{n}": with_(base, **VARIANTS[n]) for n in names}
    cfgs["init_warmup"] = with_(base, **{"schedule": {"name": "constant", "warmup_steps": early}})
    grid, sweeps, stable = _stable_sweeps(ctx, cfgs, grid)
    trained = _trained_etas(grid, sweeps, _n_classes(base))
    rows, lam_max, etas, runs_all = [], [], [], []
    for name in [*names, "warmup"]:
        runs, eta = sweeps[f"init_{name}"], stable[f"init_{name}"]
        l0, lmax, lN = lambda_at(runs[0], 0), _lambda_max(runs[0], early), lambda_at(runs[0], early)
        rows.append(
            (
                name,
                fmt(l0),
                fmt(lmax),
                fmt(lN),
                _eta_text(eta, grid),
                _eta_text(trained[f"init_{name}"], grid),
                ", ".join(r.state[0] for r in runs),
            )
        )
        if name != "warmup":
            lam_max.append(lmax)
            etas.append(eta)
        runs_all += runs
    rho = spearman(lam_max, [e if np.isfinite(e) else 2 * grid[-1] for e in etas])
    ref = lam_max[0], etas[0]
    direction = "; ".join(
        f"{n}: max early λ₁ {fmt(lv)} vs {fmt(ref[0])}, largest stable η {_eta_text(e, grid)} vs "
        f"{_eta_text(ref[1], grid)}"
        for n, lv, e in zip(names[1:], lam_max[1:], etas[1:], strict=True)
    )
    others = {n: stable[f"init_{n}"] for n in names[1:]}
    best_name = max(others, key=lambda n: others[n] if np.isfinite(others[n]) else math.inf)
    best_other = others[best_name]
    claims = (
        Claim(
            "Lower curvature early in training allows a larger stable η (across init/norm choices)",
            f"Spearman ρ(max λ₁ over the first {early} steps, largest stable η) = {fmt(rho)} over "
            f"{len(names)} variants (censored η counted as 2× the grid's top)",
            "ρ < 0",
            rho if np.isfinite(rho) else None,
            below(0.0),
        ),
        C.larger_eta(
            "Warmup alone lets a model without normalisation reach a stable η as large as normalisation "
            "or a better initialisation does",
            f"default init + {early}-step warmup",
            stable["init_warmup"],
            f"the best other ({best_name})",
            best_other,
            grid,
            region=at_least(0.0),
        ),
        Claim(
            "Each choice against the default (which way, measured)", direction or "n/a", REPORTED, None, None
        ),
    )
    return ExperimentResult(
        claims=claims,
        figures=(
            MetricVsFigure(
                "scatter",
                "Largest stable η against early λ₁ (one point per variant, in the table's order).",
                x=lam_max,
                series={"largest stable η": etas},
                xlabel=f"max λ₁ over the first {early} steps",
                ylabel="largest stable η",
                logx=True,
                logy=True,
            ),
        ),
        tables=(
            TableSpec(
                "Variants",
                (
                    "variant",
                    "λ₁ at init",
                    f"max λ₁, steps 0–{early}",
                    f"λ₁ at step {early}",
                    "largest non-divergent η",
                    "largest η that trains",
                    "status per η (c/d)",
                ),
                tuple(rows),
            ),
        ),
        runs=tuple(r.path for r in runs_all),
        settings={"base": base, "grid": grid, "early_steps": early},
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
        C.larger_eta(
            "Clipping keeps training stable at larger η", "clipped", eta_clip, "unclipped", eta_plain, grid
        ),
    )
    n = _n_classes(cfg)
    trained = _trained_etas(grid, runs, n)
    rows = tuple(
        (lr, a.state, b.state, f, "yes" if trains(a, n) else "no", "yes" if trains(b, n) else "no")
        for lr, a, b, f in zip(grid, plain, clipped, fired, strict=True)
    )
    largest = (
        ("largest non-divergent η", _eta_text(eta_plain, grid), _eta_text(eta_clip, grid)),
        ("largest η that trains", _eta_text(trained["noclip"], grid), _eta_text(trained["clip"], grid)),
    )
    return ExperimentResult(
        claims=claims,
        figures=(
            SweepCurvesFigure(
                "clipped",
                "Clipped runs: loss and λ₁/threshold.",
                runs=clipped,
                labels=[f"η={g:g}" for g in grid],
                ratio=True,
            ),
        ),
        tables=(
            TableSpec(
                "Outcome per η",
                (
                    "η",
                    "unclipped",
                    "clipped (norm 1)",
                    "clipping fired",
                    "trains unclipped",
                    "trains clipped",
                ),
                rows,
            ),
            TableSpec("Largest η", ("", "unclipped", "clipped"), largest),
        ),
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
        for bs in batches:
            runs = ctx.train_many(
                [with_(base, **{**over, "train.batch_size": bs, "optimizer.lr": lr}) for lr in grid],
                [f"bs{bs}_{model[:7].replace(' ', '')}_lr{lr:g}" for lr in grid],
            )
            steps: list[float] = []  # steps to the target loss (inf: never reached)
            for r in runs:
                s, v = r.series("train_loss_full", r.measurements)
                hit = s[np.nonzero(v <= target)[0]]
                steps.append(int(hit[0]) if len(hit) and r.state != "diverged" else math.inf)
            i = int(np.argmin(steps))
            best.append(steps[i])
            table.append((model, bs, grid[i] if np.isfinite(steps[i]) else None, steps[i]))
        speedups[model] = best[0] / best[-1] if np.isfinite(best[0]) and np.isfinite(best[-1]) else math.nan
    a, b = speedups["default init"], speedups["init ×2"]
    claims = (
        Claim(
            "High-curvature models gain less from larger batches",
            f"steps-to-target speed-up from batch {batches[0]} to {batches[-1]}: default {fmt(a)}×, "
            f"init ×2 {fmt(b)}×",
            "log(speed-up init ×2 / speed-up default) < 0",
            math.log(b / a) if np.isfinite(a) and np.isfinite(b) and a > 0 and b > 0 else None,
            below(0.0),
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
    n = _n_classes(cfg)
    eta_trains = _trained_etas(grid, sweeps, n)["opt"]
    test = [final(r, "test_loss") if trains(r, n) else math.inf for r in runs]
    best = grid[int(np.argmin(test))] if np.isfinite(min(test)) else math.nan
    apart = (
        abs(grid.index(best) - grid.index(eta_trains))
        if np.isfinite(eta_trains) and np.isfinite(best)
        else None
    )
    claims = (
        Claim(
            "The best η lies within one grid step of the largest η that trains",
            f"best η = {best:g} (final test loss {fmt(min(test))}), largest η that trains = "
            f"{_eta_text(eta_trains, grid)}, largest non-divergent η = {_eta_text(eta_max, grid)}",
            "grid steps (×2) between them ≤ 1",
            apart,
            Region(-math.inf, 1.0, closed=True),
        ),
    )
    return ExperimentResult(
        claims=claims,
        figures=(
            MetricVsFigure(
                "test_loss",
                "Final test loss against η (diverged runs omitted).",
                x=grid,
                series={"final test loss": [t if np.isfinite(t) else np.nan for t in test]},
                xlabel="η",
                ylabel="test loss",
                logx=True,
                marks={
                    k: v
                    for k, v in (("largest non-divergent", eta_max), ("largest that trains", eta_trains))
                    if np.isfinite(v)
                },
            ),
        ),
        tables=(
            TableSpec(
                "Runs",
                ("η", "status", "trains", "final test loss"),
                tuple(
                    (g, r.state, "yes" if trains(r, n) else "no", fmt(final(r, "test_loss")))
                    for g, r in zip(grid, runs, strict=True)
                ),
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
    claims = (
        C.eos_hover(
            [f"η={lr:g}" for lr in grid],
            runs,
            preconditioned=True,
            what="Adam's preconditioned λ₁ hovers near 38/η",
        ),
    )
    return ExperimentResult(
        claims=claims,
        figures=(
            SweepCurvesFigure(
                "curves",
                "Loss and λ₁(P⁻¹H)/(38/η).",
                runs=runs,
                labels=[f"η={g:g}" for g in grid],
                ratio=True,
            ),
        ),
        runs=tuple(r.path for r in runs),
        settings={"base": base, "grid": grid},
    )
