"""Choosing a learning rate on six held-out workloads: the curvature finder, the range test, brute force.

Workloads (offline data; none is used by the tests or was used to design the finder):

* ``mlp-ce-gd``: ReLU MLP 64-64-10 on scikit-learn's digits (1,500 samples), CE, full-batch GD;
* ``cnn-momentum``: ReLU CNN (two 3×3 convs, 16 and 32 channels) on the digits as 8×8 images,
  heavy-ball SGD β = 0.9, minibatches of 64;
* ``cnn-bn``: the same CNN with BatchNorm, plain SGD, minibatches of 64;
* ``mlp-adam``: GELU MLP 64-128-128-10 on the digits, Adam, minibatches of 64;
* ``gpt2-adamw``: random-init Hugging Face GPT-2 (2 layers, 64 wide), character-level on the
  Python standard library's own sources, AdamW (weight decay 0.01), 16 sequences of 64
  characters per batch, its own ``.loss``, dict batches;
* ``mlp-rmsprop``: tanh MLP 40-64-64-10 on MNIST-1D (4,000 samples), CE, RMSprop, batches of 64.

Each planned run is 300 steps. For each workload, measured in one process:

* brute force: a run at every η of a 2^(1/2) grid; η "trains" when the run stays finite, the
  network is alive, and the final loss (fixed evaluation batches) is ≤ 0.9 × the initial loss;
  the *largest trainable* η and the *best* η (lowest final loss) of the grid;
* ``ls.find_max_stable_lr`` (``steps=300``) and ``ls.lr_range_test`` (100 steps, 1e-6 … 10):
  their η, their wall time against the sweep's, and the final loss of a full run at each.

    .venv/bin/python benchmarks/lr_finder.py --suite workloads [--workloads NAME,...]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import landscope as ls
from landscope.curvature.batch_loss import make_batch_loss
from landscope.monitor.range_test import lr_range_test
from landscope.monitor.short_runs import Batches, mean_loss, optimizer_choice, outputs_collapsed, train_steps

STEPS = 300
TRAINS_RATIO = 0.9  # "clearly below its initial loss"


@dataclass
class Workload:
    name: str
    description: str
    make: Callable[[], nn.Module]
    data: Any
    loss_fn: Callable | None
    optimizer: str
    momentum: float
    batch_size: int | None
    grid: list[float]
    weight_decay: float = 0.0


def _grid(lo: float, hi: float) -> list[float]:
    n = int(round(2 * math.log2(hi / lo)))
    return [lo * 2 ** (i / 2) for i in range(n + 1)]


def _digits(images: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    X = torch.tensor(d.data[:1500], dtype=torch.float32) / 16
    if images:
        X = X.reshape(-1, 1, 8, 8)
    return X, torch.tensor(d.target[:1500])


def _cnn(bn: bool) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        torch.manual_seed(0)
        norm = (lambda c: nn.BatchNorm2d(c)) if bn else (lambda c: nn.Identity())
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            norm(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            norm(32),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(128, 10),
        )

    return make


def _mlp(sizes: list[int], act: type[nn.Module]) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        torch.manual_seed(0)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(act())
        return nn.Sequential(*layers)

    return make


def _stdlib_text(n_chars: int = 400_000) -> str:
    import os

    root = os.path.dirname(os.__file__)
    parts, total = [], 0
    for name in sorted(os.listdir(root)):
        if name.endswith(".py"):
            with open(os.path.join(root, name), encoding="utf-8", errors="replace") as fh:
                text = fh.read()
            parts.append(text)
            total += len(text)
            if total >= n_chars:
                break
    return "".join(parts)[:n_chars]


def _gpt2() -> tuple[Callable[[], nn.Module], list[dict[str, torch.Tensor]]]:
    from transformers import GPT2Config, GPT2LMHeadModel

    text = _stdlib_text()
    chars = sorted(set(text))
    ids = torch.tensor([chars.index(c) for c in text[:200_000]]) if len(chars) < 256 else None
    assert ids is not None
    seq, per_batch = 64, 16
    n_batches = 40
    g = torch.Generator().manual_seed(0)
    starts = torch.randint(0, len(ids) - seq, (n_batches * per_batch,), generator=g)
    batches = []
    for b in range(n_batches):
        rows = torch.stack([ids[s : s + seq] for s in starts[b * per_batch : (b + 1) * per_batch]])
        batches.append({"input_ids": rows, "labels": rows.clone()})
    cfg = GPT2Config(
        n_layer=2, n_head=2, n_embd=64, vocab_size=len(chars), n_positions=seq, bos_token_id=0, eos_token_id=0
    )

    def make() -> nn.Module:
        torch.manual_seed(0)
        return GPT2LMHeadModel(cfg)

    return make, batches


def workloads() -> dict[str, Workload]:
    digits, images = _digits(False), _digits(True)
    mnist = ls.data.load_mnist1d(n_train=4000, n_test=100).train
    ce = nn.CrossEntropyLoss()
    out = {
        "mlp-ce-gd": Workload(
            "mlp-ce-gd",
            "ReLU MLP 64-64-10, digits, CE, full-batch GD",
            _mlp([64, 64, 10], nn.ReLU),
            digits,
            ce,
            "sgd",
            0.0,
            None,
            _grid(0.01, 16),
        ),
        "cnn-momentum": Workload(
            "cnn-momentum",
            "ReLU CNN 16-32, digits 8×8, momentum 0.9, batch 64",
            _cnn(False),
            images,
            ce,
            "momentum",
            0.9,
            64,
            _grid(0.004, 8),
        ),
        "cnn-bn": Workload(
            "cnn-bn",
            "ReLU CNN 16-32 + BatchNorm, digits 8×8, SGD, batch 64",
            _cnn(True),
            images,
            ce,
            "sgd",
            0.0,
            64,
            _grid(0.01, 32),
        ),
        "mlp-adam": Workload(
            "mlp-adam",
            "GELU MLP 64-128-128-10, digits, Adam, batch 64",
            _mlp([64, 128, 128, 10], nn.GELU),
            digits,
            ce,
            "adam",
            0.0,
            64,
            _grid(1e-4, 2),
        ),
        "mlp-rmsprop": Workload(
            "mlp-rmsprop",
            "tanh MLP 40-64-64-10, MNIST-1D, RMSprop, batch 64",
            _mlp([40, 64, 64, 10], nn.Tanh),
            mnist,
            ce,
            "rmsprop",
            0.0,
            64,
            _grid(1e-4, 2),
        ),
    }
    make, batches = _gpt2()
    out["gpt2-adamw"] = Workload(
        "gpt2-adamw",
        "GPT-2 2×64, char-level stdlib text, AdamW, 16×64",
        make,
        batches,
        None,
        "adamw",
        0.0,
        None,
        _grid(1e-4, 1),
        weight_decay=0.01,
    )
    return out


def full_run(w: Workload, lr: float) -> dict[str, Any]:
    """A planned run at ``lr``: final / initial loss on fixed evaluation batches, and its cost."""
    tic = time.perf_counter()
    f = make_batch_loss(w.loss_fn, None)
    batches = Batches(w.data, w.batch_size, 0)
    evaluation = batches.evaluation_set(1024)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = w.make()
        loss0 = mean_loss(model, f, evaluation)
        choice = optimizer_choice(w.optimizer, w.momentum, weight_decay=w.weight_decay)
        opt = choice.build(model.parameters(), lr)
        run = train_steps(model, opt, f, iter(batches), STEPS, 1e6)
        final = math.inf if run.diverged else mean_loss(model, f, evaluation)
        dead = None if run.diverged else outputs_collapsed(model, evaluation, False)
    ratio = final / loss0 if math.isfinite(final) else math.inf
    return {
        "lr": lr,
        "ratio": ratio,
        "final_loss": final,
        "dead": bool(dead),
        "trains": bool(math.isfinite(ratio) and ratio <= TRAINS_RATIO and not dead),
        "seconds": time.perf_counter() - tic,
    }


def measure(w: Workload) -> dict[str, Any]:
    sweep = [full_run(w, lr) for lr in w.grid]
    trains = [r["lr"] for r in sweep if r["trains"]]
    finite = [r for r in sweep if math.isfinite(r["final_loss"])]
    best = min(finite, key=lambda r: r["final_loss"])["lr"] if finite else None
    sweep_s = sum(r["seconds"] for r in sweep)
    tic = time.perf_counter()
    fres = ls.find_max_stable_lr(
        w.make(),
        w.loss_fn,
        w.data,
        optimizer=w.optimizer,
        momentum=w.momentum,
        batch_size=w.batch_size,
        steps=STEPS,
        weight_decay=w.weight_decay,
    )
    finder_s = time.perf_counter() - tic
    tic = time.perf_counter()
    rt = lr_range_test(
        w.make(),
        w.loss_fn,
        w.data,
        optimizer=w.optimizer,
        momentum=w.momentum,
        batch_size=w.batch_size,
        min_lr=1e-6,
        max_lr=10.0,
        num_steps=100,
        weight_decay=w.weight_decay,
    )
    range_s = time.perf_counter() - tic
    picks = {"finder": fres.lr, **{f"range {k}": v for k, v in rt.suggestions.items()}}
    runs = {k: (full_run(w, v) if v is not None else None) for k, v in picks.items()}
    largest = max(trains) if trains else None
    return {
        "workload": w.name,
        "description": w.description,
        "grid": w.grid,
        "sweep": sweep,
        "largest_trainable": largest,
        "best": best,
        "sweep_seconds": sweep_s,
        "finder": {
            "lr": fres.lr,
            "seconds": finder_s,
            "cost": finder_s / sweep_s,
            "ratio_to_largest": fres.lr / largest if largest else None,
            "threshold_lr": fres.threshold_lr,
            "factor": fres.catapult_factor,
            "notes": list(fres.notes),
            "n_train_steps": fres.n_train_steps,
            "n_matvecs": fres.n_matvecs,
        },
        "range_test": {"suggestions": rt.suggestions, "seconds": range_s, "cost": range_s / sweep_s},
        "runs_at_picks": runs,
    }


def verdict(finder: dict[str, Any]) -> str:
    """Issue 15's acceptance for one workload: η within 1.5× of the largest trainable, cost ≤ 5 %."""
    ratio = finder["ratio_to_largest"]
    close = ratio is not None and 1 / 1.5 <= ratio <= 1.5
    cheap = finder["cost"] <= 0.05
    if close and cheap:
        return "pass"
    return "FAIL: " + ", ".join(
        ([] if close else [f"η {ratio:.2f}×"]) + ([] if cheap else [f"cost {100 * finder['cost']:.1f} %"])
    )


def markdown(rows: list[dict[str, Any]]) -> list[str]:
    def f(x: float | None, spec: str = ".3g") -> str:
        return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)

    def final(r: dict[str, Any] | None) -> str:
        if r is None:
            return "—"
        tag = " (dead)" if r["dead"] else ("" if r["trains"] else " ✗")
        return f"{f(r['ratio'], '.3f')}{tag}"

    lines = [
        "| workload | largest trainable η | best η | finder η (× largest) | finder cost | "
        "target (within 1.5×, ≤ 5 %) | range steepest | range min/10 | range cost | "
        "final/initial: best | finder | steepest | min/10 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        fd, rt, runs = r["finder"], r["range_test"], r["runs_at_picks"]
        best_run = next((s for s in r["sweep"] if s["lr"] == r["best"]), None)
        lines.append(
            f"| {r['description']} | {f(r['largest_trainable'])} | {f(r['best'])} | "
            f"{f(fd['lr'])} ({f(fd['ratio_to_largest'], '.2f')}×) | {100 * fd['cost']:.1f} % | "
            f"{verdict(fd)} | {f(rt['suggestions']['steepest'])} | {f(rt['suggestions']['min/10'])} | "
            f"{100 * rt['cost']:.1f} % | {final(best_run)} | {final(runs['finder'])} | "
            f"{final(runs['range steepest'])} | {final(runs['range min/10'])} |"
        )
    return lines


def run_suite(names: list[str] | None, results: Path, render_only: bool = False) -> list[dict[str, Any]]:
    """Measure the workloads (or, with ``render_only``, re-render the tables of the last run)."""
    import json

    from machine import cpu_name, write_results

    if render_only:
        rows = json.loads((results / "lr_workloads.json").read_text())["rows"]
    else:
        ws = workloads()
        rows = []
        for name in names or list(ws):
            row = measure(ws[name])
            rows.append(row)
            fd = row["finder"]
            print(
                f"{name}: largest trainable {row['largest_trainable']}, best {row['best']}, finder "
                f"{fd['lr']:.3g} ({fd['ratio_to_largest']}) cost {100 * fd['cost']:.1f} %, range "
                f"{row['range_test']['suggestions']}",
                flush=True,
            )
    md = [
        "# Choosing a learning rate: curvature finder vs LR range test vs brute force",
        "",
        f"{cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s). Planned "
        f"runs of {STEPS} steps; grid ×2^(1/2); 'trains' = finite, alive and final loss ≤ "
        f"{TRAINS_RATIO} × initial. Costs are wall time against the whole sweep. The last four "
        "columns: final / initial loss of a full run at each choice (✗: did not train).",
        "",
        *markdown(rows),
        "",
    ]
    verdicts = [verdict(r["finder"]) for r in rows]
    passed = sum(v == "pass" for v in verdicts)
    md += [
        f"The finder meets issue 15's targets (within 1.5× of the largest trainable η, ≤ 5 % of "
        f"the sweep's cost) on {passed} of {len(rows)} workloads. Where it does not: "
        + "; ".join(f"{r['workload']} ({v[6:]})" for r, v in zip(rows, verdicts, strict=True) if v != "pass")
        + ".",
        "",
    ]
    write_results(results, "lr_workloads", {"steps": STEPS, "rows": rows}, md)
    return rows
