"""A monitor you can leave on: Adam warm-up, the current threshold, hysteresis, dead networks,
and errors that never stop training (issue 15's acceptance tests)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import landscope as ls
from landscope.data import load_mnist1d
from landscope.monitor import SharpnessMonitor, classify
from landscope.monitor.monitor import optimizer_steps, warmup_steps

CE = nn.CrossEntropyLoss()


@pytest.fixture(scope="module")
def data():
    return load_mnist1d(n_train=600, n_test=100).train


def _gelu_mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(40, 48), nn.GELU(), nn.Linear(48, 48), nn.GELU(), nn.Linear(48, 10))


def _train(model, opt, data, steps, mon=None, seed=0, batch=64, lr_at=None):
    X, y = data
    g = torch.Generator().manual_seed(seed)
    statuses = []
    for t in range(steps):
        if lr_at is not None:
            for group in opt.param_groups:
                group["lr"] = lr_at(t)
        idx = torch.randint(0, len(X), (batch,), generator=g)
        opt.zero_grad()
        CE(model(X[idx]), y[idx]).backward()
        opt.step()
        if mon is not None:
            statuses.append(mon.step(opt))
    return statuses


def test_warmup_steps_closed_form():
    p = [nn.Parameter(torch.zeros(1))]
    assert warmup_steps(torch.optim.Adam(p, betas=(0.9, 0.999))) == 30
    assert warmup_steps(torch.optim.AdamW(p, betas=(0.5, 0.999))) == 6
    assert warmup_steps(torch.optim.SGD(p, lr=0.1)) == 0
    assert warmup_steps(torch.optim.RMSprop(p)) == 0
    opt = torch.optim.Adam(p)
    assert optimizer_steps(opt) is None
    p[0].grad = torch.ones(1)
    opt.step()
    opt.step()
    assert optimizer_steps(opt) == 2


@pytest.mark.parametrize(
    "cls,lr,seed", [(torch.optim.Adam, 1e-3, 0), (torch.optim.AdamW, 1e-2, 1), (torch.optim.AdamW, 3e-3, 2)]
)
def test_a_healthy_adam_run_never_reads_unstable(data, cls, lr, seed):
    model = _gelu_mlp(seed)
    opt = cls(model.parameters(), lr=lr)
    X, y = data
    mon = SharpnessMonitor(model, CE, (X[:64], y[:64]), every=10, strict=True)
    statuses = _train(model, opt, data, 200, mon, seed=seed)
    assert statuses[0] == "warming_up"  # step 1: Adam's threshold does not apply yet
    assert set(statuses[:29]) == {"warming_up"} and statuses[30] != "warming_up"
    assert "unstable" not in statuses and "dead" not in statuses and "off" not in statuses
    # nothing is measured while the verdict is held; the first measurement comes as it ends
    first = mon.history[0]
    assert first.step == 30 and first.preconditioned and first.status in ("stable", "edge")


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_the_first_call_after_an_lr_jump_to_a_divergent_value_reads_unstable(data, kind):
    model = _gelu_mlp(3)
    X, y = data
    opt = (
        torch.optim.SGD(model.parameters(), lr=0.01)
        if kind == "sgd"
        else torch.optim.Adam(model.parameters(), lr=3e-3)
    )
    mon = SharpnessMonitor(model, CE, (X[:64], y[:64]), every=100, strict=True)
    statuses = _train(model, opt, data, 60, mon)
    assert statuses[-1] == "stable"
    n_records = len(mon.history)
    lam1, thr, lr = mon.last.lambda1, mon.last.threshold, opt.param_groups[0]["lr"]
    jump = 3.0 * lr * thr / lam1  # threshold × η is constant: at this η, λ1 = 3 × the threshold
    for g in opt.param_groups:
        g["lr"] = jump
    status = _train(model, opt, data, 1, mon)[0]
    assert status == "unstable"
    assert len(mon.history) == n_records + 1  # the jump triggered a measurement at once
    if kind == "sgd":
        assert mon.ratio is not None and mon.ratio > 1
    # (Adam's η-sized step can land on flatter ground at once; the step was still taken at
    # 3 × the threshold of the curvature it started from, which is what the status says)


def test_the_status_follows_the_current_threshold_between_measurements(data):
    """An lr change below 1.5× measures nothing: the last λ1 meets the new threshold at once."""
    model = _gelu_mlp(4)
    X, y = data
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = SharpnessMonitor(model, CE, (X[:64], y[:64]), every=1000, strict=True)
    _train(model, opt, data, 5, mon)
    n, lam1 = len(mon.history), mon.last.lambda1
    for g in opt.param_groups:
        g["lr"] = 0.05 * 1.4
    status = mon.step(opt)
    assert len(mon.history) == n
    assert mon.ratio == pytest.approx(lam1 * 0.07 / 2.0, rel=1e-12)
    assert status == classify(lam1, 2.0 / 0.07, 0.9)


def test_hysteresis_on_a_closed_sequence():
    ratios = [0.5, 0.95, 1.02, 0.98, 1.01, 0.97, 0.85, 0.75, 0.5]
    with_h, without = [], []
    prev_h = prev = None
    for r in ratios:
        prev_h = classify(r, 1.0, 0.9, prev_h, 0.1)
        prev = classify(r, 1.0, 0.9, prev, 0.0)
        with_h.append(prev_h)
        without.append(prev)
    assert with_h == [
        "stable",
        "edge",
        "unstable",
        "unstable",
        "unstable",
        "unstable",
        "edge",
        "stable",
        "stable",
    ]
    assert without == ["stable", "edge", "unstable", "edge", "unstable", "edge", "stable", "stable", "stable"]
    assert classify(math.nan, 1.0, 0.9, "stable", 0.1) == "unstable"


def test_a_dead_network_does_not_read_stable(data):
    X, y = data
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(40, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = SharpnessMonitor(model, CE, (X[:64], y[:64]), every=5, strict=True)
    statuses = _train(model, opt, data, 40, mon)
    assert statuses[-1] == "stable" and mon.last.collapsed is False
    with torch.no_grad():  # every hidden unit dead for every input: outputs = the last bias
        model[0].bias.fill_(-1e3)
    statuses = _train(model, opt, data, 10, mon)
    assert mon.last.collapsed is True
    assert statuses[-1] == "dead" and "stable" not in statuses[-5:]


def test_a_network_back_at_chance_after_learning_reads_dead(data):
    """Outputs that still vary, but no better than the model's own mean output: dead too."""
    X, y = data
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(40, 32), nn.Tanh(), nn.Linear(32, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    mon = SharpnessMonitor(model, CE, (X[:64], y[:64]), every=10, strict=True)
    _train(model, opt, data, 100, mon)
    assert mon.last.chance < 0.9 and mon.status != "dead"
    with torch.no_grad():  # forget everything but a whisper of the inputs
        model[2].weight.mul_(1e-4)
    for g in opt.param_groups:
        g["lr"] = 1e-9  # no recovery
    statuses = _train(model, opt, data, 10, mon)
    assert mon.last.collapsed is False and mon.last.chance >= 0.98
    assert statuses[-1] == "dead"


def test_a_measurement_that_raises_does_not_stop_training(data, monkeypatch):
    model = _gelu_mlp(7)
    X, y = data
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mon = SharpnessMonitor(model, CE, (X[:64], y[:64]), every=10)
    calls = []

    def boom(op):
        calls.append(1)
        raise RuntimeError(
            "derivative for aten::_scaled_dot_product_flash_attention_backward is not implemented"
        )

    _train(model, opt, data, 15, mon)
    monkeypatch.setattr(mon.tracker, "update", boom)
    with pytest.warns(RuntimeWarning, match=r"failed \(RuntimeError: derivative.*training goes on"):
        statuses = _train(model, opt, data, 50, mon)
    assert statuses[-1] == "off" and len(calls) == 1  # logged once, then off: never called again
    assert isinstance(mon.error, RuntimeError)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert set(_train(model, opt, data, 20, mon)) == {"off"}
    strict = SharpnessMonitor(model, CE, (X[:64], y[:64]), every=10, strict=True)
    monkeypatch.setattr(strict.tracker, "update", boom)
    with pytest.raises(RuntimeError, match="not implemented"):
        strict.step(opt)


def test_rmsprop_has_a_threshold_and_reads_its_preconditioned_sharpness(data):
    model = _gelu_mlp(8)
    X, y = data
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    # tol 1e-3: λ1 to ~1e-6, so that a wrong preconditioner shows at rel 1e-3
    mon = SharpnessMonitor(model, CE, (X[:64], y[:64]), every=10, tol=1e-3, strict=True)
    statuses = _train(model, opt, data, 50, mon)
    r = mon.last
    assert r.preconditioned and r.threshold == pytest.approx(2 / 1e-3)
    assert "warming_up" not in statuses and "off" not in statuses
    # λ1 of P⁻¹H with RMSprop's own P (no bias correction): reproduced independently
    P = torch.cat(
        [(opt.state[p]["square_avg"].double().sqrt() + 1e-8).reshape(-1) for p in model.parameters()]
    )
    pre = ls.PreconditionedOperator(ls.HessianOperator(model, CE, (X[:64], y[:64]), model_mode="train"), P)
    ref = float(ls.eigenpairs(pre, k=1, tol=1e-8).values[0])
    assert r.lambda1 == pytest.approx(ref, rel=1e-3)


def _hf_setup(tmp_path, make_cb, steps=6, logging_steps=None):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))

        def forward(self, x, labels=None):
            logits = self.net(x)
            out = {"logits": logits}
            if labels is not None:
                out["loss"] = nn.functional.cross_entropy(logits, labels)
            return out

    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(64, 5, generator=g), torch.randint(0, 3, (64,), generator=g)
    data = [{"x": a, "labels": b} for a, b in zip(X, y, strict=True)]
    cb = make_cb(X, y)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=steps,
        per_device_train_batch_size=16,
        learning_rate=1e-3,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
        adam_beta1=0.0,  # AdamW with a one-step warm-up: a short run is measured from step 1
        logging_strategy="steps" if logging_steps else "no",
        logging_steps=logging_steps or 500,
    )
    return transformers.Trainer(model=Model(), args=args, train_dataset=data, callbacks=[cb]), cb


def test_huggingface_callback_writes_log_history_and_reaches_the_reporters(tmp_path):
    from landscope.monitor.huggingface import SharpnessCallback

    trainer, cb = _hf_setup(
        tmp_path, lambda X, y: SharpnessCallback(nn.functional.cross_entropy, (X[:16], y[:16]), every=2)
    )
    seen = []

    class Reporter(__import__("transformers").TrainerCallback):  # what report_to integrations are
        def on_log(self, args, state, control, logs=None, **kwargs):
            seen.append(dict(logs or {}))

    trainer.add_callback(Reporter())
    cb.put_first(trainer)
    trainer.train()
    steps = [r.step for r in cb.monitor.history]
    assert {1, 2, 4, 6} <= set(steps)  # (and where the decaying lr moved by > 1.5×)
    logged = [h for h in trainer.state.log_history if "sharpness/lambda1" in h]
    assert [h["step"] for h in logged] == steps
    assert [h["sharpness/lambda1"] for h in logged] == [r.lambda1 for r in cb.monitor.history]
    assert [d["sharpness/lambda1"] for d in seen if "sharpness/lambda1" in d] == [
        r.lambda1 for r in cb.monitor.history
    ]


def test_a_failing_measurement_does_not_stop_the_huggingface_trainer(tmp_path):
    from landscope.monitor.huggingface import SharpnessCallback

    def broken(model, batch):
        raise RuntimeError("derivative for aten::_flash_attention_backward is not implemented")

    trainer, cb = _hf_setup(
        tmp_path, lambda X, y: SharpnessCallback(batch=(X[:16], y[:16]), every=2, batch_loss=broken), steps=8
    )
    with pytest.warns(RuntimeWarning, match="training goes on"):
        out = trainer.train()
    assert out.global_step == 8 and cb.monitor is None
    assert isinstance(cb.error, ls.LandscopeError) and "not implemented" in str(cb.error)


def test_adam_is_measured_anew_when_its_warm_up_ends(data):
    """The warm-up λ1 says nothing about the threshold: the step it ends at measures."""
    model = _gelu_mlp(9)
    X, y = data
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    mon = SharpnessMonitor(model, CE, (X[:64], y[:64]), every=50, strict=True)
    statuses = _train(model, opt, data, 40, mon)
    assert [r.step for r in mon.history] == [30]  # none while warming up
    assert set(statuses[:29]) == {"warming_up"} and statuses[29] == mon.history[0].status != "warming_up"
    # an explicit request during the warm-up is measured, and recorded as warming up
    model2 = _gelu_mlp(9)
    opt2 = torch.optim.Adam(model2.parameters(), lr=1e-3)
    mon2 = SharpnessMonitor(model2, CE, (X[:64], y[:64]), every=50, strict=True)
    _train(model2, opt2, data, 3, mon2)
    assert mon2.measure(opt2).status == "warming_up" and mon2.status == "warming_up"
    _train(model2, opt2, data, 30, mon2)
    assert [r.step for r in mon2.history] == [3, 30]  # and the end of the warm-up still measures


def test_background_auto_follows_the_spare_cores(monkeypatch):
    from landscope.monitor import monitor as M

    model = nn.Linear(3, 2)
    monkeypatch.setattr(
        M.os if hasattr(M, "os") else __import__("os"),
        "sched_getaffinity",
        lambda pid: {0, 1, 2, 3},
        raising=False,
    )
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert M.spare_core(model) is True
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert M.spare_core(model) is False
    X, y = torch.randn(8, 3), torch.randn(8, 2)
    assert SharpnessMonitor(model, nn.MSELoss(), (X, y), background="auto").background is False
    with pytest.raises(ls.InputError, match=r"background must be True, False or 'auto', got 'yes'"):
        SharpnessMonitor(model, nn.MSELoss(), (X, y), background="yes")


def test_background_asks_once_per_due_measurement_and_holds_warming_up(data):
    """While a post-warm-up (or post-jump) measurement is in flight, no call asks again."""
    model = _gelu_mlp(10)
    X, y = data
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with SharpnessMonitor(model, CE, (X[:64], y[:64]), every=50, strict=True, background=True) as mon:
        statuses = _train(model, opt, data, 120, mon)
    assert [r.step for r in mon.history] == [30, 50, 100]
    assert set(statuses[:30]) == {"warming_up"}  # until the step-30 measurement comes back
    assert "unstable" not in statuses


def test_an_adam_run_whose_state_blew_up_reads_unstable_and_the_monitor_stays_on(data):
    """A diverged run is a result: a non-finite second moment gives λ1 = NaN, not an error."""
    model = _gelu_mlp(11)
    X, y = data
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    mon = SharpnessMonitor(model, CE, (X[:64], y[:64]), every=5, strict=True)
    _train(model, opt, data, 35, mon)
    assert mon.status == "stable"
    with torch.no_grad():  # what an overflowing run leaves behind
        next(iter(opt.state.values()))["exp_avg_sq"].fill_(float("inf"))
    record = mon.measure(opt)
    assert math.isnan(record.lambda1) and record.n_matvecs == 0
    assert mon.status == "unstable" and mon.error is None


def test_an_lr_rise_measures_at_once_and_a_decay_does_not():
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(64, 40, generator=g), torch.randint(0, 10, (64,), generator=g)
    model = _gelu_mlp(12)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = SharpnessMonitor(model, CE, (X, y), every=100, strict=True)
    data = (X, y)
    _train(model, opt, data, 5, mon)
    ratio = mon.ratio
    for group in opt.param_groups:
        group["lr"] = 0.01  # 10× down: the last λ1 against a 10× higher threshold, no new solve
    _train(model, opt, data, 1, mon)
    assert [r.step for r in mon.history] == [1] and mon.ratio == pytest.approx(ratio / 10, rel=1e-9)
    for group in opt.param_groups:
        group["lr"] = 0.02  # 2× up from 0.01, but still 5× below the η last measured at
    _train(model, opt, data, 1, mon)
    assert [r.step for r in mon.history] == [1]
    for group in opt.param_groups:
        group["lr"] = 0.2  # 2× above the last measured one: measured at once
    _train(model, opt, data, 1, mon)
    assert [r.step for r in mon.history] == [1, 8]
