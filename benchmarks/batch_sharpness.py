"""Batch sharpness against full-batch λ1 for minibatch SGD: which sits at 2/η, which predicts spikes.

Andreyev & Beneventano (2024) argue that for minibatch SGD the quantity that settles at the
stability threshold is *batch sharpness*, E_B[g_Bᵀ H_B g_B / ‖g_B‖²] (``ls.batch_sharpness``), not
λ1 of the full-batch Hessian. Measured here on held-out minibatch workloads (none is used by the
tests): every 20 steps, batch sharpness over 8 fresh batches of the training size and λ1 of the
full-batch Hessian (1,000 samples, train mode), both divided by the optimiser's threshold
(2/η, (2 + 2β)/η with momentum); every 5 steps the full training-set loss, whose spikes
(``analysis.loss_spikes``: a local maximum ≥ 2 % above the minimum of the 30 losses before it) are
what a monitor should warn of. For each signal: its median ratio to the threshold over the second
half of the run, and how well ``ratio(t)`` ranks the measurements followed by a spike within 50
steps (ROC AUC; 0.5 is chance).

    .venv/bin/python benchmarks/batch_sharpness.py [--steps 1500]

Writes results/batch_sharpness.{json,md}. One torch thread.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name, markdown_table, write_results
from torch import nn

import landscope as ls
from landscope.analysis import Trace, loss_spikes
from landscope.data import load_mnist1d

RESULTS = Path(__file__).parent / "results"
EVERY, LOSS_EVERY, HORIZON, N_BATCHES = 20, 5, 50, 8


@dataclass
class Workload:
    name: str
    make: object
    loss: object
    batch: int
    lr: float
    momentum: float = 0.0


def _mlp(act: type[nn.Module], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(40, 64), act(), nn.Linear(64, 64), act(), nn.Linear(64, 10))


def _cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Unflatten(1, (1, 40)),
        nn.Conv1d(1, 8, 5, padding=2),
        nn.ReLU(),
        nn.Conv1d(8, 16, 5, padding=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(4),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((out - nn.functional.one_hot(y, 10).to(out.dtype)) ** 2).sum(dim=1).mean()


CE = nn.CrossEntropyLoss()
WORKLOADS = [
    Workload("ReLU MLP, CE, SGD, batch 32, η 0.1", lambda s: _mlp(nn.ReLU, s), CE, 32, 0.1),
    Workload("ReLU MLP, CE, SGD, batch 32, η 0.3", lambda s: _mlp(nn.ReLU, s), CE, 32, 0.3),
    Workload("ReLU MLP, CE, SGD, batch 32, η 1.0", lambda s: _mlp(nn.ReLU, s), CE, 32, 1.0),
    Workload("tanh MLP, MSE, SGD, batch 64, η 0.5", lambda s: _mlp(nn.Tanh, s), _mse, 64, 0.5),
    Workload("tanh MLP, MSE, SGD, batch 64, η 2.0", lambda s: _mlp(nn.Tanh, s), _mse, 64, 2.0),
    Workload("Conv1d net, CE, momentum 0.9, batch 64, η 0.02", _cnn, CE, 64, 0.02, 0.9),
]


def auc(scores: list[float], labels: list[bool]) -> float | None:
    """ROC AUC by ranks (ties count half); ``None`` without both classes."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def run(w: Workload, steps: int, seed: int, X: torch.Tensor, y: torch.Tensor) -> dict:
    model = w.make(seed)
    opt = torch.optim.SGD(model.parameters(), lr=w.lr, momentum=w.momentum)
    threshold = float(ls.stability_threshold(opt))
    g = torch.Generator().manual_seed(seed)
    hs = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed + 1))[:1000]
    op = ls.HessianOperator(model, w.loss, (X[hs], y[hs]), model_mode="train")
    tracker = ls.EigenTracker(k=1, tol=1e-3)
    rows, losses, loss_steps = [], [], []
    for t in range(steps + 1):
        if t % LOSS_EVERY == 0:
            with torch.no_grad():
                losses.append(float(w.loss(model(X), y)))
            loss_steps.append(t)
            if not np.isfinite(losses[-1]):
                break  # diverged: a result; what was measured before it stands
        if t % EVERY == 0:
            fresh = torch.Generator().manual_seed(10_000 + t)
            batches = [
                (X[i], y[i])
                for i in (torch.randint(0, len(X), (w.batch,), generator=fresh) for _ in range(N_BATCHES))
            ]
            bs = ls.batch_sharpness(model, w.loss, batches).value
            lam = float(tracker.update(op).values[0])
            rows.append(
                {
                    "step": t,
                    "batch_sharpness": bs,
                    "lambda1": lam,
                    "bs_ratio": bs / threshold,
                    "lambda_ratio": lam / threshold,
                }
            )
        if t == steps:
            break
        idx = torch.randint(0, len(X), (w.batch,), generator=g)
        opt.zero_grad()
        w.loss(model(X[idx]), y[idx]).backward()
        opt.step()
    spikes = loss_spikes(Trace.from_arrays(np.array(losses), np.array(loss_steps)))
    for r in rows:
        r["spike_ahead"] = bool(((spikes > r["step"]) & (spikes <= r["step"] + HORIZON)).any())
    late = [r for r in rows if r["step"] >= steps // 2] or rows
    return {
        "threshold": threshold,
        "rows": rows,
        "spikes": spikes.tolist(),
        "diverged_at": loss_steps[-1] if not np.isfinite(losses[-1]) else None,
        "median_bs_ratio": statistics.median(r["bs_ratio"] for r in late),
        "median_lambda_ratio": statistics.median(r["lambda_ratio"] for r in late),
        "auc_bs": auc([r["bs_ratio"] for r in rows], [r["spike_ahead"] for r in rows]),
        "auc_lambda": auc([r["lambda_ratio"] for r in rows], [r["spike_ahead"] for r in rows]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    X, y = load_mnist1d(n_train=4000, n_test=100).train
    doc: dict = {"steps": args.steps, "every": EVERY, "horizon": HORIZON, "runs": {}}
    table = []
    for w in WORKLOADS:
        per_seed = [run(w, args.steps, s, X, y) for s in range(args.seeds)]
        doc["runs"][w.name] = per_seed

        def fmt(vals: list[float | None], spec: str = ".2f") -> str:
            vals = [v for v in vals if v is not None]
            return " / ".join(format(v, spec) for v in vals) if vals else "—"

        table.append(
            [
                w.name,
                fmt([r["median_bs_ratio"] for r in per_seed]),
                fmt([r["median_lambda_ratio"] for r in per_seed]),
                fmt([float(len(r["spikes"])) for r in per_seed], ".0f")
                + "".join(
                    f" (diverged at {r['diverged_at']})" for r in per_seed if r["diverged_at"] is not None
                ),
                fmt([r["auc_bs"] for r in per_seed]),
                fmt([r["auc_lambda"] for r in per_seed]),
            ]
        )
        print(" | ".join(table[-1]), flush=True)
    md = [
        "# Batch sharpness vs full-batch λ1 under minibatch SGD",
        "",
        f"{cpu_name()}, torch {torch.__version__}, one thread; MNIST-1D (4,000 samples), "
        f"{args.steps} steps, {args.seeds} seeds (values per seed, separated by /). Ratios are to "
        f"the optimiser's threshold; medians over the second half. AUC: how well the ratio at a "
        f"measurement ranks those followed by a loss spike within {HORIZON} steps (0.5: chance).",
        "",
        *markdown_table(
            [
                "workload",
                "batch sharpness / threshold",
                "full-batch λ1 / threshold",
                "spikes",
                "AUC batch sharpness",
                "AUC λ1",
            ],
            table,
        ),
        "",
    ]
    write_results(RESULTS, "batch_sharpness", doc, md)


if __name__ == "__main__":
    main()
