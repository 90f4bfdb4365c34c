"""SharpnessMonitor (issue 6): the edge-of-stability acceptance, purity, statuses, sinks, bad input,
the README example, and the Lightning / Hugging Face adapters with the real libraries."""

from __future__ import annotations

import csv
import json
import logging
import math
import warnings

import numpy as np
import pytest
import torch
from reference import assert_same_state, dense_hessian, model_state
from torch import nn

import landscope as ls
from landscope.analysis import Trace, find_instabilities
from landscope.data import load_mnist1d
from landscope.models import mlp, mse
from landscope.monitor import MonitorRecord, SharpnessMonitor, classify


def _gd_run(lr: float, steps: int, every: int) -> tuple[list[float], SharpnessMonitor]:
    """configs/eos_mlp.yaml's setting: MNIST-1D (1,000), tanh 40-32-32-10, default init, MSE, GD."""
    X, y = load_mnist1d(n_train=1000, n_test=1000).train
    torch.manual_seed(0)
    model = mlp(40, 10, width=32, depth=2, activation="tanh")
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    mon = SharpnessMonitor(model, mse, (X, y), every=every)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = mse(model(X), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())  # the loss at θ_t; mon.step after it sees θ_{t+1}
        mon.step(opt)
    return losses, mon


@pytest.mark.slow
def test_flags_unstable_before_the_first_loss_spike():
    losses, mon = _gd_run(lr=0.5, steps=200, every=10)
    events = find_instabilities(Trace.from_arrays(np.array(losses)), delta=0.1)
    assert events, "the η = 0.5 run should have a loss spike within 200 steps"
    spike = events[0].start
    # record.step = optimiser steps taken; the loss at index t is measured before step t+1
    flagged = [r.step for r in mon.history if r.status == "unstable"]
    assert flagged and flagged[0] < spike, (flagged, spike)
    assert 100 <= spike <= 200
    first = next(r for r in mon.history if r.status == "unstable")
    assert first.lambda1 > first.threshold == pytest.approx(4.0)
    assert any(r.status == "edge" for r in mon.history if r.step < first.step)


@pytest.mark.slow
def test_never_unstable_at_a_small_learning_rate(caplog):
    with caplog.at_level(logging.WARNING, logger="landscope.monitor"):
        losses, mon = _gd_run(lr=0.1, steps=300, every=10)
    assert {r.status for r in mon.history} == {"stable"}
    assert max(r.ratio for r in mon.history) < 0.9
    assert not caplog.records
    assert losses[-1] < losses[0]


def _tiny(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = mlp(5, 3, width=6, depth=1).double()
    X = torch.randn(16, 5, generator=g, dtype=torch.float64)
    y = torch.arange(16) % 3
    return model, X, y


def _lambda1(model, X, y) -> float:
    return float(torch.linalg.eigvalsh(dense_hessian(model, mse, X, y))[-1])


def test_statuses_follow_the_threshold_and_log_changes(caplog):
    model, X, y = _tiny()
    lam = _lambda1(model, X, y)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = SharpnessMonitor(model, mse, (X, y), every=1, tol=1e-6)
    expected = []
    with caplog.at_level(logging.WARNING, logger="landscope.monitor"):
        for ratio in (0.5, 0.5, 0.95, 1.2, 1.3, 0.5):  # λ1 / (2/η); the model never moves
            opt.param_groups[0]["lr"] = 2 * ratio / lam
            expected.append(mon.step(opt))
    assert expected == ["stable", "stable", "edge", "unstable", "unstable", "stable"]
    assert [r.lambda1 for r in mon.history] == pytest.approx([lam] * 6, rel=1e-8)
    assert [r.ratio for r in mon.history] == pytest.approx([0.5, 0.5, 0.95, 1.2, 1.3, 0.5], rel=1e-6)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3  # stable→edge, edge→unstable, unstable→stable
    assert "stable -> edge at step 3" in messages[0] and "edge -> unstable at step 4" in messages[1]
    assert all(r.levelno == logging.WARNING and r.name == "landscope.monitor" for r in caplog.records)


def test_measures_on_the_first_and_every_nth_call_only():
    model, X, y = _tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = SharpnessMonitor(model, mse, (X, y), every=3)
    assert mon.status is None and mon.last is None
    statuses = [mon.step(opt) for _ in range(9)]
    assert [r.step for r in mon.history] == [1, 3, 6, 9]
    assert statuses == ["stable"] * 9
    rec = mon.history[-1]
    assert isinstance(rec, MonitorRecord) and rec.lr == 0.01 and rec.threshold == pytest.approx(200.0)
    with pytest.raises(AttributeError):
        rec.lambda1 = 0.0  # frozen


def test_classify_edges():
    assert classify(3.0, 4.0, 0.9) == "stable"
    assert classify(3.7, 4.0, 0.9) == "edge"
    assert classify(4.1, 4.0, 0.9) == "unstable"
    assert classify(math.nan, 4.0, 0.9) == "unstable"
    assert classify(1e9, math.inf, 0.9) == "stable"


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
        lambda p: torch.optim.Adam(p, lr=1e-3, betas=(0.0, 0.999)),  # a one-step warm-up: measured
    ],
    ids=["momentum", "adam"],
)
def test_monitor_leaves_model_and_rng_untouched(bn_dropout_case, make_opt):
    c = bn_dropout_case
    opt = make_opt(c.model.parameters())
    mon = SharpnessMonitor(c.model, torch.nn.functional.cross_entropy, (c.X, c.y), every=1, k=2)
    c.model.train()
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(c.model(c.X), c.y).backward()
        opt.step()
        torch.manual_seed(1234)
        before = model_state(c.model)
        mon.step(opt)
        assert_same_state(before, c.model)
    c.model.eval()  # another start mode, and BN running statistics in use
    before = model_state(c.model)
    mon.measure(opt)
    assert_same_state(before, c.model)
    assert len(mon.history) == 4 and all(len(r.eigenvalues) == 2 for r in mon.history)
    assert mon.history[0].eigenvalues[0] >= mon.history[0].eigenvalues[1]


def test_adam_is_measured_preconditioned():
    model, X, y = _tiny()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):
        opt.zero_grad()
        mse(model(X), y).backward()
        opt.step()
    mon = SharpnessMonitor(model, mse, (X, y), tol=1e-8)
    rec = mon.measure(opt)
    H = dense_hessian(model, mse, X, y)
    P = ls.adam_preconditioner(opt)
    expected = torch.linalg.eigvals(torch.diag(1 / P) @ H).real.max().item()  # eigenvalues of P⁻¹H
    assert rec.preconditioned and rec.lambda1 == pytest.approx(expected, rel=1e-6)
    assert rec.threshold == pytest.approx(38 / 1e-3)


def test_blown_up_model_is_unstable_not_an_error():
    model, X, y = _tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    mon = SharpnessMonitor(model, mse, (X, y))
    assert mon.step(opt) == "unstable"
    assert math.isnan(mon.history[0].lambda1)


def test_real_errors_are_not_reported_as_blow_ups():
    model, X, y = _tiny()
    mon = SharpnessMonitor(model, mse, (X, y), strict=True)
    model[0].weight = nn.Parameter(torch.randn(7, 5, dtype=torch.float64))  # and 7 ≠ 6 hidden units
    with pytest.raises(ls.InputError, match=r"changed shape from \(6, 5\) to \(7, 5\)"):
        mon.step(torch.optim.SGD(model.parameters(), lr=0.1))
    # by default the same error is warned once and the monitor turns itself off
    model, X, y = _tiny()
    mon = SharpnessMonitor(model, mse, (X, y))
    model[0].weight = nn.Parameter(torch.randn(7, 5, dtype=torch.float64))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.warns(RuntimeWarning, match=r"changed shape.*the monitor is off and training goes on"):
        assert mon.step(opt) == "off"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: no second warning
        assert mon.step(opt) == "off" and mon.step(opt) == "off"
    assert isinstance(mon.error, ls.InputError) and mon.history == []


def test_sinks_csv_jsonl_callable_and_tensorboard(tmp_path):
    tb = pytest.importorskip("torch.utils.tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, X, y = _tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    got = []
    writer = tb.SummaryWriter(log_dir=str(tmp_path / "tb"))
    (tmp_path / "old.csv").write_text("stale\n")
    sinks = (tmp_path / "old.csv", str(tmp_path / "m.jsonl"), got.append, writer)
    mon = SharpnessMonitor(model, mse, (X, y), every=2, sinks=sinks, name="sharp")
    for _ in range(4):
        opt.zero_grad()
        mse(model(X), y).backward()
        opt.step()
        mon.step(opt)
    writer.close()
    assert [r.step for r in got] == [1, 2, 4] and got == mon.history
    rows = list(csv.DictReader((tmp_path / "old.csv").open()))  # truncated at construction
    assert [int(r["step"]) for r in rows] == [1, 2, 4]
    assert float(rows[1]["lambda1"]) == pytest.approx(mon.history[1].lambda1)
    assert json.loads(rows[0]["eigenvalues"]) == pytest.approx(list(mon.history[0].eigenvalues))
    lines = [json.loads(s) for s in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [d["status"] for d in lines] == [r.status for r in mon.history]
    assert lines[2]["threshold"] == pytest.approx(40.0)
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert {"sharp/lambda1", "sharp/threshold", "sharp/ratio"} <= set(acc.Tags()["scalars"])
    events = acc.Scalars("sharp/lambda1")
    assert [e.step for e in events] == [1, 2, 4]
    assert events[-1].value == pytest.approx(mon.history[-1].lambda1, rel=1e-6)


def test_a_single_sink_need_not_be_in_a_tuple(tmp_path):
    model, X, y = _tiny()
    mon = SharpnessMonitor(model, mse, (X, y), sinks=tmp_path / "one.jsonl")
    mon.step(torch.optim.SGD(model.parameters(), lr=0.1))
    assert len((tmp_path / "one.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"every": 0}, r"every must be a positive integer.*got 0"),
        ({"every": 2.5}, r"every .*got 2\.5"),
        ({"edge": 1.0}, r"edge must be in \(0, 1\).*got 1\.0"),
        ({"edge": 0}, r"edge must be in \(0, 1\).*got 0"),
        ({"k": 0}, r"k must be a positive integer.*got 0"),
        ({"k": 500}, r"k=500 exceeds the number of parameters 57"),
        ({"tol": 0.0}, r"tol must be in \(0, 1\).*got 0\.0"),
        ({"sinks": "log.txt"}, r"'log\.txt' must end in \.csv or \.jsonl"),
        ({"sinks": (3,)}, r"a sink must be .* got int"),
    ],
)
def test_bad_options_are_named(kwargs, match):
    model, X, y = _tiny()
    with pytest.raises(ls.InputError, match=match):
        SharpnessMonitor(model, mse, (X, y), **kwargs)


def test_bad_model_batch_and_optimizer_are_named():
    model, X, y = _tiny()
    with pytest.raises(ls.InputError, match=r"model must be a torch.nn.Module, got function"):
        SharpnessMonitor(lambda x: x, mse, (X, y))
    with pytest.raises(ls.InputError, match=r"batch must be a tuple \(X, y\) or a dict batch.*got Tensor"):
        SharpnessMonitor(model, mse, X)
    with pytest.raises(ls.InputError, match=r"got tuple of length 3"):
        SharpnessMonitor(model, mse, (X, y, y))
    with pytest.raises(ls.InputError, match=r"X has shape \(16, 5\) and y \(15,\)"):
        SharpnessMonitor(model, mse, (X, y[:15]))
    mon = SharpnessMonitor(model, mse, (X, y))
    with pytest.raises(ls.InputError, match=r"no stability threshold is known for Adagrad"):
        SharpnessMonitor(model, mse, (X, y), strict=True).step(torch.optim.Adagrad(model.parameters()))
    with pytest.warns(RuntimeWarning, match=r"no stability threshold is known for Adagrad"):
        assert SharpnessMonitor(model, mse, (X, y)).step(torch.optim.Adagrad(model.parameters())) == "off"
    for bad, match in (
        (-0.1, "hysteresis must be in"),
        (0.95, "hysteresis must be in"),
        (True, "hysteresis"),
    ):
        with pytest.raises(ls.InputError, match=match):
            SharpnessMonitor(model, mse, (X, y), hysteresis=bad)
    with pytest.raises(ls.InputError, match=r"after optimizer\.step\(\)"):
        mon.measure(torch.optim.RMSprop(model.parameters()))  # RMSprop: P⁻¹H, needs its state
    with pytest.raises(ls.InputError, match=r"after optimizer\.step\(\)"):
        mon.measure(torch.optim.Adam(model.parameters()))
    with pytest.raises(ls.InputError, match=r"needs the torch optimizer.*got str"):
        mon.measure("sgd")


def test_readme_example_runs():
    from reference import run_readme_example

    namespace = run_readme_example("Use it in your loop")
    mon, best = namespace["mon"], namespace["best"]
    assert namespace["status"] in ("stable", "edge", "unstable") and len(mon.history) == 11
    assert best.lr > best.threshold_lr > 0


# -- adapters, with the real libraries ---------------------------------------------------------


def _classification(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 5, generator=g)
    return X, (X[:, 0] > 0).long() + (X[:, 1] > 0).long()


@pytest.mark.filterwarnings("ignore:.*treespec, LeafSpec")  # lightning's own, on torch 2.13
@pytest.mark.parametrize("background", [False, True], ids=["foreground", "background"])
def test_lightning_callback_monitors_and_logs(tmp_path, background):
    pl = pytest.importorskip("lightning.pytorch")
    from landscope.monitor.lightning import SharpnessCallback

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = mlp(5, 3, width=8, depth=1)

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            return torch.nn.functional.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    X, y = _classification()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=16)
    torch.manual_seed(0)
    module = Module()
    cb = SharpnessCallback(
        torch.nn.functional.cross_entropy, (X[:16], y[:16]), every=2, background=background
    )
    trainer = pl.Trainer(
        max_steps=6,
        callbacks=[cb],
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        accumulate_grad_batches=2,
    )
    trainer.fit(module, loader)
    assert trainer.global_step == 6
    assert [r.step for r in cb.monitor.history] == [1, 2, 4, 6]  # accumulation: once per optimizer step
    assert cb.monitor.history[-1].threshold == pytest.approx((2 + 2 * 0.9) / 0.1)
    if not background:  # else the records may all come back after the last step
        assert "sharpness/ratio" in trainer.logged_metrics
        assert trainer.logged_metrics["sharpness/lambda1"] == pytest.approx(cb.monitor.history[-1].lambda1)


def test_lightning_callback_rejects_bad_options():
    pytest.importorskip("lightning.pytorch")
    from landscope.monitor.lightning import SharpnessCallback

    with pytest.raises(ls.InputError, match="every must be a positive integer"):
        SharpnessCallback(mse, _classification(), every=0)


@pytest.mark.parametrize("background", [False, True], ids=["foreground", "background"])
def test_huggingface_callback_monitors_adamw(tmp_path, background):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from landscope.monitor.huggingface import SharpnessCallback

    class Model(nn.Module):  # what Trainer needs: inputs by name, a dict with loss and logits
        def __init__(self):
            super().__init__()
            self.net = mlp(5, 3, width=8, depth=1)

        def forward(self, x, labels=None):
            logits = self.net(x)
            out = {"logits": logits}
            if labels is not None:
                out["loss"] = torch.nn.functional.cross_entropy(logits, labels)
            return out

    X, y = _classification()
    data = [{"x": a, "labels": b} for a, b in zip(X, y, strict=True)]
    torch.manual_seed(0)
    cb = SharpnessCallback(
        torch.nn.functional.cross_entropy, (X[:16], y[:16]), every=2, background=background
    )
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=5,
        per_device_train_batch_size=16,
        learning_rate=1e-3,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
        adam_beta1=0.0,
    )  # a one-step warm-up: every step measured
    trainer = transformers.Trainer(model=Model(), args=args, train_dataset=data, callbacks=[cb])
    trainer.train()
    assert [r.step for r in cb.monitor.history] == [1, 2, 4]
    assert all(r.preconditioned for r in cb.monitor.history)  # AdamW: λ1 of P⁻¹H against 2/η (β₁ = 0)
    lr = cb.monitor.history[-1].lr
    assert cb.monitor.history[-1].threshold == pytest.approx(2 / lr)
    assert all(math.isfinite(r.lambda1) for r in cb.monitor.history)
