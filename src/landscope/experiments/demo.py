"""``landscope demo``: one MNIST-1D run at the edge of stability, with its report (≤ 5 min)."""

from __future__ import annotations

import numpy as np

from landscope.analysis import find_instabilities, flattening, landscape_shift
from landscope.experiments.common import eos_ratio_after_reaching, fmt
from landscope.experiments.registry import Context, experiment
from landscope.experiments.results import Claim, ExperimentResult, FigureSpec


def demo_config(variant: str) -> dict:
    """Full-batch GD with MSE on a tanh MLP at η = 0.5 (2/η = 4): configs/eos_mlp.yaml, top-3."""
    steps = {"smoke": 150, "quick": 800, "full": 3000}[variant]
    return {
        "seed": 0,
        "data": {"name": "mnist1d", "n_train": 1000 if variant != "smoke" else 300, "n_test": 500},
        "model": {"name": "mlp", "width": 32, "depth": 2, "activation": "tanh"},
        "loss": "mse",
        "optimizer": {"name": "gd", "lr": 0.5},
        "train": {"steps": steps},
        "measure": {"every": 10, "k": 3},
    }


@experiment(
    "landscope.demo",
    "Edge of stability on MNIST-1D",
    "Full-batch gradient descent at a large learning rate: λ₁ sharpens to the stability threshold "
    "2/η, then hovers there while the loss keeps falling through spikes (instabilities).",
)
def demo(ctx: Context) -> ExperimentResult:
    """The demo run and what it shows."""
    cfg = demo_config(ctx.variant)
    run = ctx.train(cfg, "demo")
    events = find_instabilities(run)
    steps, lam = run.series("lambda1", run.measurements)
    _, thr = run.series("threshold", run.measurements)
    ratio = lam / thr
    reached = bool(np.nanmax(ratio) >= 1) if len(ratio) else False
    hover = eos_ratio_after_reaching(run)
    claims = [
        Claim(
            "Progressive sharpening: λ₁ rises to the threshold 2/η",
            f"max λ₁·η/2 = {fmt(np.nanmax(ratio))}",
            "max λ₁ / threshold ≥ 1",
            reached,
            float(np.nanmax(ratio)) if len(ratio) else None,
        ),
        Claim(
            "Edge of stability: λ₁ then hovers near 2/η",
            f"median λ₁ / threshold over the second half after reaching it = {fmt(hover)}",
            "within [0.8, 1.2]",
            bool(0.8 <= hover <= 1.2) if reached else None,
        ),
        Claim(
            "Every instability is preceded by λ₁ above the threshold",
            f"{sum(e.crossing is not None for e in events)} of {len(events)} instabilities",
            "all (and at least one instability)",
            bool(events) and all(e.crossing is not None for e in events) if events else None,
        ),
    ]
    flat = flattening(run, events)
    try:
        shift = landscape_shift(run, events)
        shift_text = f"{fmt(shift.mean_across)} across vs {fmt(shift.mean_stable)} stable"
    except Exception:  # noqa: BLE001 - reported, not raised
        shift_text = "n/a"
    return ExperimentResult(
        claims=tuple(claims),
        figures=(
            FigureSpec(
                "loss_sharpness",
                "loss_and_sharpness",
                {"run": run, "instabilities": events},
                "Loss and λ₁ against 2/η; instabilities shaded (heating red, cooling blue).",
            ),
            FigureSpec(
                "shift_matrix",
                "shift_matrix",
                {"run": run, "instabilities": events},
                f"Top-3 subspace overlap over time; shift {shift_text}.",
            ),
            FigureSpec("flattening", "flattening", {"results": flat}, "λ₁ right after each instability."),
        ),
        runs=(run.path,),
        settings=cfg,
    )
