"""The trainer: edge of stability, divergence, clipping, determinism and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import landscope as ls
from landscope.data import load_mnist1d
from landscope.models import mlp, mse
from landscope.training import MeasureConfig, OptimizerSpec, RunLockedError, RunStore, Trainer

# Edge of stability (DESIGN §9.4): full-batch GD, MSE, MNIST-1D, 1,000 samples, tanh MLP
# 40-32-32-10 (PyTorch default init, seed 0), η = 0.5 (2/η = 4). λ₁ starts at 2.3, sharpens
# to 2/η by step ~150, overshoots once (to 5.5 at step 200) and then hovers at 1.03-1.15 × 2/η
# while the loss keeps falling with upticks. About 4 s on one core.
EOS = {"n_train": 1000, "width": 32, "depth": 2, "lr": 0.5, "steps": 600, "every": 20}


@pytest.fixture(scope="module")
def eos_run():
    torch.manual_seed(0)
    ds = load_mnist1d(n_train=EOS["n_train"], n_test=200)
    model = mlp(40, 10, width=EOS["width"], depth=EOS["depth"], activation="tanh")
    trainer = Trainer(
        model,
        mse,
        ds.train,
        test_data=ds.test,
        optimizer=OptimizerSpec(name="gd", lr=EOS["lr"]),
        steps=EOS["steps"],
        measure=MeasureConfig(every=EOS["every"], k=1),
    )
    return trainer.fit()


@pytest.mark.slow
def test_edge_of_stability(eos_run):
    assert eos_run.status == "completed"
    meas = [r for r in eos_run.metrics if "lambda1" in r]
    thr = 2 / EOS["lr"]
    assert all(r["threshold"] == pytest.approx(thr) for r in meas)
    lam = np.array([r["lambda1"] for r in meas])
    steps = np.array([r["step"] for r in meas])
    # progressive sharpening: from well below 2/η up to it
    assert lam[0] < 0.9 * thr
    reach = int(np.argmax(lam >= thr))
    assert lam[reach] >= thr, "λ1 never reached 2/η"
    assert np.all(np.diff(lam[: reach + 1]) > -0.05 * thr) or lam[:reach].max() < thr
    # then hovers within ±20 % of 2/η: over the second half of the run, after the first overshoot
    late = steps >= EOS["steps"] // 2
    ratio = lam[late] / thr
    assert np.all((ratio > 0.8) & (ratio < 1.2)), ratio
    # while the loss keeps falling, non-monotonically
    loss = np.array([r["train_loss"] for r in eos_run.metrics])
    t_reach = steps[reach]
    after = loss[t_reach:]
    assert after[-1] < 0.9 * after[0]
    assert (np.diff(after) > 0).sum() >= 10  # upticks: not a monotone descent


def test_measurement_rows_have_the_pinned_fields(eos_run):
    rows = eos_run.metrics
    assert [r["step"] for r in rows] == list(range(EOS["steps"] + 1))
    assert all({"step", "lr", "train_loss"} <= set(r) for r in rows)
    meas = [r for r in rows if "eigenvalues" in r]
    assert [r["step"] for r in meas] == list(range(0, EOS["steps"] + 1, EOS["every"]))
    for r in meas:
        assert {
            "eigenvalues",
            "threshold",
            "test_loss",
            "test_acc",
            "overlap_prev",
            "dist_from_init",
            "full_grad_norm",
            "eos_ratio",
        } <= set(r)
    assert meas[0]["overlap_prev"] is None and meas[0]["dist_from_init"] == 0.0
    assert all(0 <= r["overlap_prev"] <= 1 + 1e-9 for r in meas[1:])
    assert set(eos_run.eigen) == {r["step"] for r in meas}  # in-memory eigenpairs


def _small_config(**over) -> dict:
    cfg = {
        "seed": 3,
        "data": {"name": "mnist1d", "n_train": 400, "n_test": 100},
        "model": {"name": "mlp", "width": 16, "depth": 2, "activation": "tanh"},
        "loss": "ce",
        "optimizer": {"name": "momentum", "lr": 0.05, "momentum": 0.9},
        "schedule": {"name": "cosine", "warmup_steps": 10},
        "train": {"steps": 120, "batch_size": 40, "clip_norm": 0.5, "checkpoint_every": 15},
        "measure": {"every": 20, "k": 2, "hessian_samples": 200},
    }
    for key, value in over.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) else value
    return cfg


def test_same_seed_gives_identical_metrics_files(tmp_path):
    a = ls.train(_small_config(), tmp_path / "a", progress=False)
    b = ls.train(_small_config(), tmp_path / "b", progress=False)
    assert a.state == b.state == "completed"
    assert (tmp_path / "a" / "metrics.jsonl").read_bytes() == (tmp_path / "b" / "metrics.jsonl").read_bytes()
    c = ls.train(_small_config(seed=4), tmp_path / "c", progress=False)
    assert c.metrics != a.metrics
    # the run folder as DESIGN §4 lays it out
    assert {p.name for p in (tmp_path / "a").iterdir()} >= {
        "config.yaml",
        "metrics.jsonl",
        "eigen",
        "checkpoints",
        "status.json",
    }
    assert a.eigen_steps == [r["step"] for r in a.measurements]
    snap = a.eigen(20)
    assert snap.values.shape == (2,) and snap.vectors.shape[1] == 2
    assert np.allclose(snap.values, a.measurements[1]["eigenvalues"])
    assert a.config.versions["torch"] == torch.__version__
    assert sum(r.get("clipped", False) for r in a.metrics) == a.status["clip_count"] > 0


def test_train_on_a_finished_run_returns_it_and_a_different_config_is_refused(tmp_path):
    first = ls.train(_small_config(), tmp_path / "r", progress=False)
    again = ls.train(_small_config(), tmp_path / "r", progress=False)
    assert again.metrics == first.metrics
    with pytest.raises(ls.ConfigError, match=r"optimizer.lr: stored 0.05, given 0.1"):
        ls.train(_small_config(optimizer={"lr": 0.1}), tmp_path / "r", progress=False)
    assert ls.train(None, tmp_path / "r", progress=False).metrics == first.metrics


_CHILD = textwrap.dedent("""
    import sys, time, torch, yaml, landscope as ls
    torch.set_num_threads(1)  # as the test process: bitwise equality needs the same reductions
    cfg = yaml.safe_load(open(sys.argv[1]))
    ls.train(cfg, sys.argv[2], progress=lambda row: time.sleep(0.01))
""")


def _complete_lines(path: Path) -> list[str]:
    text = path.read_text() if path.exists() else ""
    return text.splitlines(keepends=True)[: text.count("\n")]


@pytest.mark.slow
def test_resume_after_sigkill_gives_identical_metrics(tmp_path):
    cfg = _small_config()
    reference = ls.train(cfg, tmp_path / "ref", progress=False)
    (tmp_path / "cfg.yaml").write_text(json.dumps(cfg))  # JSON is YAML
    kill_at = random.Random().randint(25, 100)
    out = tmp_path / "killed"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path / "cfg.yaml"), str(out)], env=os.environ.copy()
    )
    deadline = time.time() + 120
    while len(_complete_lines(out / "metrics.jsonl")) < kill_at and child.poll() is None:
        assert time.time() < deadline, "child run made no progress"
        time.sleep(0.002)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    written = _complete_lines(out / "metrics.jsonl")
    assert kill_at <= len(written) < cfg["train"]["steps"] + 1, f"kill at row {kill_at} missed the run"
    assert json.loads((out / "status.json").read_text())["status"] == "running"
    resumed = ls.train(cfg, out, progress=False)
    assert resumed.state == "completed"
    final = (out / "metrics.jsonl").read_text()
    assert final == (tmp_path / "ref" / "metrics.jsonl").read_text(), f"killed at row {kill_at}"
    assert final.startswith("".join(written)), "rows written before the kill were lost or changed"
    for step in reference.eigen_steps:
        assert np.array_equal(resumed.eigen(step).values, reference.eigen(step).values)


def test_two_writers_are_refused(tmp_path):
    with RunStore(tmp_path / "r"), pytest.raises(RunLockedError, match="being written by pid"):
        ls.train(_small_config(), tmp_path / "r", progress=False)


def test_divergence_is_a_result(tmp_path):
    run = ls.train(
        _small_config(
            optimizer={"name": "gd", "lr": 40.0}, loss="mse", train={"batch_size": None, "clip_norm": None}
        ),
        tmp_path / "d",
        progress=False,
    )
    assert run.state == "diverged"
    last = run.metrics[-1]
    assert last["diverged"] is True and run.status["diverged_step"] == last["step"] < 120
    assert (tmp_path / "d" / "status.json").is_file()


def test_trainer_with_a_user_optimizer_and_adam_preconditioning():
    torch.manual_seed(0)
    ds = load_mnist1d(n_train=300, n_test=100)
    model = mlp(40, 10, width=8, depth=1)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    res = Trainer(
        model,
        torch.nn.functional.cross_entropy,
        ds.train,
        optimizer=opt,
        steps=30,
        batch_size=30,
        measure=MeasureConfig(every=10, k=1, test=False),
    ).fit()
    meas = [r for r in res.metrics if "lambda1" in r]
    assert [r["preconditioned"] for r in meas] == [False, True, True, True]
    assert meas[1]["threshold"] == pytest.approx(38 / 0.01)
    # the preconditioned λ1 is the top eigenvalue of P⁻¹H, checked densely
    P = ls.adam_preconditioner(opt)
    op = ls.HessianOperator(model, torch.nn.functional.cross_entropy, ds.train)
    H = op.to_dense().double()
    lam = torch.linalg.eigvalsh(H / P.sqrt()[:, None] / P.sqrt()[None, :]).max()
    assert meas[-1]["lambda1"] == pytest.approx(float(lam), rel=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, "steps must be a positive integer, got 0"),
        ({"batch_size": 5000}, "batch_size must be an integer in \\[1, 300\\]"),
        ({"clip_norm": -1.0}, "clip_norm must be positive, got -1.0"),
        ({"diverge_factor": 0.5}, "diverge_factor must exceed 1, got 0.5"),
        ({"schedule": 3}, "schedule must be a ScheduleConfig or a callable"),
    ],
)
def test_trainer_bad_input(kwargs, match):
    ds = load_mnist1d(n_train=300, n_test=100)
    with pytest.raises(ls.InputError, match=match):
        Trainer(mlp(40, 10, width=4, depth=1), mse, ds.train, **kwargs)
