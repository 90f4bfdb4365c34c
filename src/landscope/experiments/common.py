"""Shared settings of the experiments: the base run of each variant, grids, small helpers.

- ``smoke``: seconds, for CI (checks the pipeline and the report, not the science);
- ``quick``: MNIST-1D or the synthetic sets, ≤ 15 min on 2 CPU cores (what docs/RESULTS.md shows);
- ``full``: the papers' data sets (Fashion-MNIST, CIFAR-10), for a GPU or a cluster.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from landscope.experiments.sweep import set_dotted
from landscope.training import Run
from landscope.training.detector import SENSITIVITY_DELTAS

# wang2023's learning-rate range is 0.01 to 0.30 ([W&R] §3)
LR_GRID = {
    "smoke": [0.05, 0.5, 1.0],
    "quick": [0.01, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3],
    "full": [0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3],
}


AROUND = {"around_instabilities": True, "around_deltas": list(SENSITIVITY_DELTAS)}


def base_config(variant: str) -> dict[str, Any]:
    """The GD / MSE / tanh-MLP run of [W&R]'s setting, sized for the variant.

    Every step around each instability is measured, at every δ of the sensitivity set
    (``measure.around_instabilities``), so that "before" and "after" are one step away.
    """
    if variant == "smoke":
        return {
            "seed": 0,
            "data": {"name": "mnist1d", "n_train": 200, "n_test": 200},
            "model": {"name": "mlp", "width": 16, "depth": 2, "activation": "tanh"},
            "loss": "mse",
            "optimizer": {"name": "gd", "lr": 0.1},
            "train": {"steps": 120},
            "measure": {"every": 10, "k": 2, "save_params": True, "save_predictions": True, **AROUND},
        }
    if variant == "quick":
        return {
            "seed": 0,
            "data": {"name": "mnist1d", "n_train": 1000, "n_test": 500},
            "model": {"name": "mlp", "width": 32, "depth": 2, "activation": "tanh"},
            "loss": "mse",
            "optimizer": {"name": "gd", "lr": 0.1},
            "train": {"steps": 2000},
            "measure": {"every": 20, "k": 3, "save_params": True, "save_predictions": True, **AROUND},
        }
    return {
        "seed": 0,
        "data": {"name": "fashion_mnist", "n_train": 10000, "n_test": 10000},
        "model": {"name": "mlp", "width": 256, "depth": 2, "activation": "tanh"},
        "loss": "mse",
        "optimizer": {"name": "gd", "lr": 0.1},
        "train": {"steps": 5000},
        "measure": {
            "every": 50,
            "k": 10,
            "hessian_samples": 5000,
            "save_params": True,
            "save_predictions": True,
            **AROUND,
        },
    }


def with_(config: dict[str, Any], **dotted: Any) -> dict[str, Any]:
    """A copy of ``config`` with dotted keys set: ``with_(c, **{"optimizer.lr": 0.1})``."""
    out = copy.deepcopy(config)
    for k, v in dotted.items():
        set_dotted(out, k, v)
    return out


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's ρ (NaN with fewer than three finite pairs or a constant series)."""
    pairs = [(a, b) for a, b in zip(x, y, strict=True) if np.isfinite(a) and np.isfinite(b)]
    if len(pairs) < 3 or len({b for _, b in pairs}) < 2 or len({a for a, _ in pairs}) < 2:
        return math.nan
    return float(spearmanr(*zip(*pairs, strict=True))[0])


def final(run: Run, key: str) -> float:
    """The last measured value of ``key`` (NaN if never measured)."""
    _, v = run.series(key, run.measurements)
    v = v[np.isfinite(v)]
    return float(v[-1]) if len(v) else math.nan


def eos_ratio_after_reaching(run: Run, preconditioned_only: bool = False) -> float:
    """Median λ₁/threshold over the second half of the measurements after λ₁ first reached it.

    NaN when λ₁ never reached the threshold. ``preconditioned_only`` keeps Adam's P⁻¹H rows. Only
    the regular cadence counts (the dense rows around instabilities would weigh those steps more).
    """
    rows = [m for m in run.cadence_measurements if m.get("preconditioned") or not preconditioned_only]
    _, lam = run.series("lambda1", rows)
    _, thr = run.series("threshold", rows)
    r = lam / thr
    if not len(r) or not np.nanmax(r) >= 1:
        return math.nan
    after = r[int(np.argmax(r >= 1)) :]
    return float(np.nanmedian(after[len(after) // 2 :]))


def lambda_at(run: Run, step: int) -> float:
    """λ₁ at the last measurement at or before ``step`` (NaN if none)."""
    s, v = run.series("lambda1", run.measurements)
    ok = np.isfinite(v) & (s <= step)
    return float(v[ok][-1]) if ok.any() else math.nan


def largest_stable(values: list[float], runs: list[Run]) -> float:
    """The largest swept value whose run did not diverge (NaN if all diverged)."""
    ok = [v for v, r in zip(values, runs, strict=True) if r.state != "diverged"]
    return max(ok) if ok else math.nan


def fmt(x: float | None, digits: int = 3) -> str:
    """A number for a claims table."""
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}g}"


def final_model(run: Run) -> tuple[Any, Any, Any]:
    """``(model, loss_fn, dataset)`` of a run with its last checkpoint's parameters, in eval dtype."""
    import torch

    from landscope.training import build_run
    from landscope.training.store import RunStore

    model, loss_fn, ds = build_run(run.config)
    state = RunStore(run.path).load_checkpoint()
    if state is not None:
        model.load_state_dict(state["model"])
    if run.config.dtype == "float64":
        model = model.to(torch.float64)
    return model, loss_fn, ds
