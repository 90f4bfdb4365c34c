"""Repeated eigenvalues: what the default multiplicity probe costs, and what it finds.

A single Lanczos start vector sees one copy of an exactly repeated eigenvalue, so a converged
solve can return too few copies with every residual small. ``ls.eigenpairs`` now follows a
converged solve (k ≥ 2) by a short probe on the complement (``check_multiplicity=None``, the
default), and runs the full check only when the probe finds a better value. This benchmark
solves each problem three ways — ``check_multiplicity=False`` (the old default), ``None`` (the
probe) and ``True`` (the full check) — and reports products and *missed* values: the returned
top-k differs from a dense float64 ``eigh`` of the same operator by more than 10·tol·|λ₁|.

Problems (MNIST-1D, 400 samples, float64, at initialisation and after 200 GD steps; none is used
by the tests):

* ``mlp-ce``: tanh MLP 40-32-32-10, CE, every parameter (no exact repeats expected);
* ``mlp-mse-last``: the same with MSE, last layer only (the k-layer approximation of Wang &
  Roberts): its Hessian is ``(AᵀA/N) ⊗ I₁₀``, each eigenvalue exactly 10 times;
* ``cnn-ce``: Conv1d net (4 and 8 channels), CE;
* ``tied-units``: ReLU MLP 40-24-10 whose hidden units come in 3 groups of 8 identical units,
  MSE: permuting a group is a symmetry, so eigenvalues repeat 7 times in its antisymmetric part
  (measured: below the top 12 here), and after training the top 10 form a tight cluster
  (within 0.5 %), the hard case for one Krylov chain at tol 1e-3;
* ``transformer``: one ``nn.TransformerEncoderLayer`` (d = 16, 2 heads) on random tokens, CE
  (no exact repeats expected; its attention takes the math kernel).

    .venv/bin/python benchmarks/multiplicity.py [--seeds 3]

Writes results/multiplicity.{json,md}. One torch thread.
"""

from __future__ import annotations

import argparse
import platform
import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name, markdown_table, write_results
from torch import nn

import landscope as ls
from landscope.training.config import load_config
from landscope.training.run import build_run

RESULTS = Path(__file__).parent / "results"
SETTINGS = [(3, 1e-3), (10, 1e-6)]
MODES = {"off": False, "probe": None, "full": True}


def _mnist1d(model: dict, loss: str, seed: int) -> tuple[nn.Module, Callable, tuple]:
    cfg = load_config(
        {
            "seed": seed,
            "data": {"name": "mnist1d", "n_train": 400, "n_test": 100},
            "model": model,
            "loss": loss,
            "optimizer": {"name": "gd", "lr": 0.1},
            "train": {"steps": 1},
        }
    )
    net, loss_fn, ds = build_run(cfg)
    y = ds.y_train.double() if ds.y_train.is_floating_point() else ds.y_train
    return net.double(), loss_fn, (ds.X_train.double(), y)


def _tied_units(seed: int) -> tuple[nn.Module, Callable, tuple]:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the output bias keeps its default initialisation
    X = torch.randn(400, 40, generator=g, dtype=torch.float64)
    Y = torch.randn(400, 10, generator=g, dtype=torch.float64)
    net = nn.Sequential(nn.Linear(40, 24), nn.ReLU(), nn.Linear(24, 10)).double()
    with torch.no_grad():
        for group in range(3):
            rows = slice(8 * group, 8 * group + 8)
            net[0].weight[rows] = torch.randn(40, generator=g, dtype=torch.float64) / 40**0.5
            net[0].bias[rows] = 0.1
            net[2].weight[:, rows] = torch.randn(10, 1, generator=g, dtype=torch.float64) / 24**0.5
    return net, nn.MSELoss(), (X, Y)


class _TinyTransformer(nn.Module):
    def __init__(self, vocab: int = 12, d: int = 16, seq: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(seq, d))
        self.block = nn.TransformerEncoderLayer(d, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(d, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.embed(tokens) + self.pos))


def _transformer(seed: int) -> tuple[nn.Module, Callable, tuple]:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = _TinyTransformer().double()
    tokens = torch.randint(0, 12, (64, 8), generator=g)
    targets = torch.roll(tokens, -1, dims=1)

    def token_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten())

    return net, token_ce, (tokens, targets)


def _train(net: nn.Module, loss_fn: Callable, data: tuple, steps: int, lr: float) -> None:
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(net(data[0]), data[1]).backward()
        opt.step()


def problem(name: str, seed: int, trained: bool) -> ls.HessianOperator:
    mlp = {"name": "mlp", "width": 32, "depth": 2, "activation": "tanh"}
    if name == "mlp-ce":
        net, loss_fn, data = _mnist1d(mlp, "ce", seed)
    elif name == "mlp-mse-last":
        net, loss_fn, data = _mnist1d(mlp, "mse", seed)
    elif name == "cnn-ce":
        net, loss_fn, data = _mnist1d(
            {"name": "cnn", "width": 4, "depth": 2, "activation": "relu"}, "ce", seed
        )
    elif name == "tied-units":
        net, loss_fn, data = _tied_units(seed)
    else:
        net, loss_fn, data = _transformer(seed)
    if trained:
        _train(net, loss_fn, data, 200, 0.05)
    params = ls.layers(net, last=1) if name == "mlp-mse-last" else None
    return ls.HessianOperator(net, loss_fn, data, params=params, model_mode="eval")


PROBLEMS = ("mlp-ce", "mlp-mse-last", "cnn-ce", "tied-units", "transformer")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--problems", default=",".join(PROBLEMS))
    args = ap.parse_args()
    torch.set_num_threads(1)
    doc: dict = {
        "machine": {
            "cpu": cpu_name(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": 1,
        },
        "runs": [],
    }
    for name in args.problems.split(","):
        for trained in (False, True):
            for seed in range(args.seeds):
                op = problem(name, seed, trained)
                lam = torch.linalg.eigvalsh(op.to_dense()).flip(0).numpy()
                gaps = np.diff(lam[:12])
                repeats = int((np.abs(gaps) <= 1e-9 * abs(lam[0])).sum())
                for k, tol in SETTINGS:
                    run = {
                        "problem": name,
                        "trained": trained,
                        "seed": seed,
                        "k": k,
                        "tol": tol,
                        "dim": op.dim,
                        "repeats_in_top12": repeats,
                    }
                    for mode, flag in MODES.items():
                        res = ls.eigenpairs(op, k=k, tol=tol, seed=seed, check_multiplicity=flag)
                        err = float(np.max(np.abs(res.values.numpy() - lam[:k])))
                        run[mode] = {
                            "matvecs": res.n_matvecs,
                            "converged": res.converged,
                            "missed": bool(err > 10 * tol * abs(lam[0])),
                            "error": err,
                        }
                    doc["runs"].append(run)
                    print(
                        name,
                        "trained" if trained else "init",
                        seed,
                        k,
                        tol,
                        {m: (run[m]["matvecs"], run[m]["missed"]) for m in MODES},
                        flush=True,
                    )
    rows = []
    for name in args.problems.split(","):
        for k, tol in SETTINGS:
            runs = [r for r in doc["runs"] if r["problem"] == name and r["k"] == k]
            off = statistics.fmean(r["off"]["matvecs"] for r in runs)
            cells = [
                name,
                str(runs[0]["dim"]),
                str(max(r["repeats_in_top12"] for r in runs)),
                f"{k}, {tol:g}",
                f"{off:.0f}",
            ]
            for mode in ("probe", "full"):
                ratio = statistics.fmean(r[mode]["matvecs"] / r["off"]["matvecs"] for r in runs)
                cells.append(f"{ratio:.2f}×")
            cells += [f"{sum(r[m]['missed'] for r in runs)}/{len(runs)}" for m in MODES]
            rows.append(cells)
    md = [
        "# Repeated eigenvalues: the default probe against no check and the full check",
        "",
        f"Machine: {doc['machine']['cpu']}, torch {torch.__version__}, one thread. "
        f"{args.seeds} seeds, at initialisation and after 200 GD steps (float64).",
        "",
        "Products: mean with no check (`off`), and the probe's and full check's mean ratio to it. "
        "Missed: solves whose top-k differ from dense `eigh` by more than 10·tol·|λ₁|.",
        "",
        *markdown_table(
            [
                "problem",
                "dim",
                "repeated gaps in top 12",
                "k, tol",
                "products off",
                "probe",
                "full",
                "missed off",
                "missed probe",
                "missed full",
            ],
            rows,
        ),
    ]
    write_results(RESULTS, "multiplicity", doc, md)


if __name__ == "__main__":
    main()
