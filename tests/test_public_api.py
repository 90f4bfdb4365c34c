"""Every name of the pinned public API (DESIGN §2, docs/architecture.md) imported and used as written.

Code outside the project calls these names; a rename or a changed signature must fail here first.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import pytest
import torch

import landscope as ls
from landscope.models import mlp

CE = torch.nn.functional.cross_entropy


@pytest.fixture(scope="module")
def small():
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(32, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (32,), generator=g)
    torch.manual_seed(0)
    return mlp(6, 3, width=8, depth=1).double(), X, y


def test_the_curvature_names(small):
    model, X, y = small
    op = ls.HessianOperator(model, CE, (X, y), params=None, model_mode="eval", chunk_size=None)
    v = torch.ones(op.dim, dtype=torch.float64)
    assert torch.equal(op.matvec(v), op @ v)
    assert op.matmat(torch.stack([v, 2 * v], 1)).shape == (op.dim, 2)
    res = ls.eigenpairs(op, k=3, which="LA", tol=1e-6, method="lanczos", seed=0, v0=None)
    assert res.values.shape == (3,) and res.vectors.shape == (op.dim, 3)
    assert res.residuals.shape == (3,) and res.n_matvecs > 0 and res.converged
    assert bool((res.values[:-1] >= res.values[1:]).all())
    dens = ls.spectral_density(op, n_probes=2, n_steps=10, seed=0)
    assert isinstance(dens, ls.Density)
    tr = ls.hutchinson_trace(op, n_probes=5, seed=0)
    assert isinstance(tr, ls.TraceEstimate)
    trk = ls.EigenTracker(k=2, tol=1e-6)
    first, second = trk.update(op), trk.update(op)
    assert first.overlap is None and second.overlap == pytest.approx(1.0, abs=1e-6)
    assert ls.analysis.subspace_overlap(res.vectors, res.vectors) == pytest.approx(1.0)
    assert ls.analysis.outlier_count(res.values.numpy()) >= 0
    batches = [(X[:16], y[:16]), (X[16:], y[16:])]
    op2 = ls.HessianOperator(
        model, data=batches, batch_loss=lambda m, b: CE(m(b[0]), b[1]), batch_weight=lambda b: len(b[0])
    )
    torch.testing.assert_close(op2 @ v, op @ v)


def test_the_training_names(tmp_path):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    assert ls.stability_threshold(opt) == pytest.approx(20.0)
    assert ls.stability_threshold(ls.OptimizerSpec(name="gd", lr=0.1)) == pytest.approx(20.0)
    config = {
        "seed": 0,
        "data": {"name": "mnist1d", "n_train": 64, "n_test": 32},
        "model": {
            "name": "mlp",
            "width": 8,
            "depth": 1,
            "activation": "tanh",
            "norm": "none",
            "init": "default",
        },
        "loss": "mse",
        "optimizer": {"name": "gd", "lr": 0.05},
        "schedule": {"name": "constant"},
        "train": {"steps": 4, "batch_size": None},
        "measure": {
            "every": 2,
            "k": 1,
            "hessian_samples": None,
            "background": False,
            "around_instabilities": False,
        },
    }
    run = ls.train(config, tmp_path / "run")
    again = ls.load_run(tmp_path / "run")
    assert [r["step"] for r in again.metrics] == [r["step"] for r in run.metrics] == [0, 1, 2, 3, 4]
    row = next(r for r in again.metrics if "eigenvalues" in r)
    assert {"step", "lr", "train_loss", "eigenvalues", "threshold", "test_loss", "overlap_prev"} <= set(row)
    assert again.eigen(row["step"]).values is not None
    assert isinstance(ls.analysis.find_instabilities(again), list)


def test_the_practitioner_names(small):
    model, X, y = small
    mon = ls.SharpnessMonitor(model, CE, (X, y), every=50, k=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    assert mon.step(opt) in ("stable", "edge", "unstable")
    mon.flush()
    mon.close()
    mon2 = ls.SharpnessMonitor(model, CE, (X, y), every=50, k=1, background=False)
    assert mon2.step(opt) in ("stable", "edge", "unstable")
    res = ls.find_max_stable_lr(model, CE, (X, y), optimizer="sgd", momentum=0.0, steps=40)
    assert res.lr > 0 and res.suggestion > 0
    rt = ls.lr_range_test(model, CE, (X, y), optimizer="adamw", num_steps=20)
    assert set(rt.suggestions) >= {"steepest", "min/10"}


def test_the_modules_and_the_distributed_operator_resolve_after_import_landscope():
    code = textwrap.dedent("""
        import landscope as ls
        assert ls.distributed.DistributedHessianOperator.__name__ == "DistributedHessianOperator"
        assert callable(ls.train) and ls.train.__name__ == "train"
        assert ls.training.Trainer.__name__ == "Trainer"  # the subpackage no longer shadowed
        import landscope.train.store  # an old path still imports ...
        assert callable(ls.train)      # ... and ls.train still trains
        from landscope.train import Trainer, RunStore  # noqa: F401
        assert Trainer is ls.training.Trainer
        assert landscope.train.store.RunStore is ls.training.store.RunStore
        print("ok")
    """)
    out = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize(
    "module",
    [
        "landscope.curvature",
        "landscope.analysis",
        "landscope.monitor",
        "landscope.data",
        "landscope.models",
        "landscope.distributed",
    ],
)
def test_every_name_in_all_exists(module):
    mod = importlib.import_module(module)
    assert [n for n in getattr(mod, "__all__", []) if not hasattr(mod, n)] == []


def test_every_top_level_name_in_all_exists():
    assert [n for n in ls.__all__ if not hasattr(ls, n)] == []


def test_the_old_package_path_warns_and_still_trains(tmp_path):
    code = textwrap.dedent(f"""
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import landscope.train as old
        assert any("landscope.training" in str(w.message) for w in caught), caught
        run = old({{"data": {{"name": "mnist1d", "n_train": 32, "n_test": 16}}, "train": {{"steps": 2}},
                   "measure": {{"every": 2}}}}, {str(tmp_path / "run")!r})
        print(run.status.get("status"))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "completed", out.stderr
