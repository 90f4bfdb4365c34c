"""lr_range_test (the exponential LR range test): its schedule, smoothing and suggestions against
independent computations, early stopping, optimisers and data forms, purity, apply/plot and bad
input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference import assert_same_state, model_state
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import landscope as ls
from landscope.monitor.range_test import RangeTestResult, lr_range_test

N, D, C = 128, 10, 3


def _data(n: int = N, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Linearly separable 3-class data (a teacher), so the loss can fall."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, D, generator=g)
    W = torch.randn(D, C, generator=g)
    return X, (X @ W).argmax(1)


def _model(seed: int = 0, bn: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(D, 16)]
    if bn:
        layers.append(nn.BatchNorm1d(16))
    layers += [nn.Tanh(), nn.Linear(16, C)]
    return nn.Sequential(*layers)


def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((out - F.one_hot(y, C).to(out.dtype)) ** 2).sum(-1).mean()


def _ema(losses, smooth: float) -> np.ndarray:
    """Bias-corrected exponential moving average, written out."""
    out, avg = [], 0.0
    for t, x in enumerate(losses, start=1):
        avg = smooth * x + (1 - smooth) * avg
        out.append(avg / (1 - (1 - smooth) ** t))
    return np.array(out)


def _central_slope(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """dy/dx by central differences inside, one-sided at the ends."""
    s = np.empty_like(y)
    s[1:-1] = (y[2:] - y[:-2]) / (x[2:] - x[:-2])
    s[0] = (y[1] - y[0]) / (x[1] - x[0])
    s[-1] = (y[-1] - y[-2]) / (x[-1] - x[-2])
    return s


@pytest.fixture(scope="module")
def data():
    return _data()


@pytest.fixture(scope="module")
def full_run(data):
    """A run that does not stop early: CE, SGD, η from 1e-4 to 1 in 50 steps."""
    return lr_range_test(_model(), F.cross_entropy, data, min_lr=1e-4, max_lr=1.0, num_steps=50)


def test_schedule_is_exactly_exponential(full_run):
    r = full_run
    assert isinstance(r, RangeTestResult) and not r.diverged and r.n_train_steps == 50
    assert len(r.lrs) == len(r.losses) == len(r.smoothed) == 50
    np.testing.assert_allclose(r.lrs, np.geomspace(1e-4, 1.0, 50), rtol=1e-12)
    assert r.lrs[0] == 1e-4
    ratios = np.array(r.lrs[1:]) / np.array(r.lrs[:-1])
    np.testing.assert_allclose(ratios, (1.0 / 1e-4) ** (1 / 49), rtol=1e-12)
    assert all(math.isfinite(v) for v in r.losses)


def test_losses_are_the_batch_losses_of_sgd(data):
    """The recorded losses are those of plain SGD on the full batch at the schedule's η."""
    r = lr_range_test(_model(), F.cross_entropy, data, min_lr=1e-3, max_lr=0.5, num_steps=8)
    m = _model()
    X, y = data
    expected = []
    for lr in np.geomspace(1e-3, 0.5, 8):
        m.zero_grad()
        loss = F.cross_entropy(m(X), y)
        expected.append(float(loss.detach()))
        loss.backward()
        with torch.no_grad():
            for p in m.parameters():
                p -= float(lr) * p.grad
    np.testing.assert_allclose(r.losses, expected, rtol=1e-5)


@pytest.mark.parametrize("smooth", [0.05, 0.3, 1.0])
def test_smoothed_is_the_bias_corrected_ema(data, smooth):
    r = lr_range_test(_model(), F.cross_entropy, data, min_lr=1e-4, max_lr=1.0, num_steps=30, smooth=smooth)
    np.testing.assert_allclose(r.smoothed, _ema(r.losses, smooth), rtol=1e-12)
    if smooth == 1.0:
        assert r.smoothed == pytest.approx(r.losses, rel=1e-12)


def test_suggestions_against_an_independent_reading(full_run):
    r = full_run
    lrs, sm = np.array(r.lrs), _ema(r.losses, 0.05)
    assert r.suggestions.keys() == {"steepest", "min/10"}
    assert r.suggestions["min/10"] == pytest.approx(lrs[int(np.argmin(sm))] / 10, rel=1e-12)
    lo, hi = 10, len(lrs) - 5
    slope = _central_slope(sm[lo:hi], np.log(lrs[lo:hi]))
    i = lo + int(np.argmin(slope))
    assert r.suggestions["steepest"] == pytest.approx(lrs[i], rel=1e-12)
    assert lrs[lo] <= r.suggestions["steepest"] <= lrs[hi - 1]
    assert slope.min() < 0  # the loss does fall somewhere
    assert r.rule == "steepest" and r.suggestion == r.suggestions["steepest"]


def test_rule_min10_picks_that_suggestion(data):
    r = lr_range_test(_model(), F.cross_entropy, data, min_lr=1e-4, max_lr=1.0, num_steps=30, rule="min/10")
    assert r.rule == "min/10" and r.suggestion == r.suggestions["min/10"]
    assert r.suggestion == pytest.approx(r.lrs[int(np.argmin(_ema(r.losses, 0.05)))] / 10)


def test_a_short_curve_has_no_steepest_suggestion(data):
    """Steepest needs 3 points between the 10 skipped at the start and the 5 at the end."""
    r = lr_range_test(_model(), F.cross_entropy, data, min_lr=1e-4, max_lr=1e-1, num_steps=17)
    assert r.suggestions["steepest"] is None and r.suggestion is None
    assert r.suggestions["min/10"] == pytest.approx(r.lrs[int(np.argmin(_ema(r.losses, 0.05)))] / 10)
    r = lr_range_test(_model(), F.cross_entropy, data, min_lr=1e-4, max_lr=1e-1, num_steps=18)
    assert r.suggestion is not None


@pytest.mark.parametrize("threshold", [5.0, 2.0])
def test_stops_once_the_smoothed_loss_exceeds_the_threshold(data, threshold):
    r = lr_range_test(
        _model(), _mse, data, min_lr=1e-4, max_lr=100.0, num_steps=80, diverge_threshold=threshold
    )
    assert r.diverged and r.n_train_steps < 80 and len(r.losses) == r.n_train_steps
    sm = _ema(r.losses, 0.05)
    best = np.minimum.accumulate(sm)
    over = np.flatnonzero(sm > threshold * best)
    assert len(over) and over[0] == len(sm) - 1  # it stopped at the first crossing
    np.testing.assert_allclose(r.smoothed, sm, rtol=1e-12)
    np.testing.assert_allclose(r.lrs, np.geomspace(1e-4, 100.0, 80)[: r.n_train_steps], rtol=1e-12)


def test_a_nan_loss_stops_it(data):
    X, y = data
    batches = [(X[i : i + 16].clone(), y[i : i + 16]) for i in range(0, N, 16)]
    batches[4][0][0, 0] = math.nan
    r = lr_range_test(_model(), F.cross_entropy, batches, min_lr=1e-4, max_lr=1e-2, num_steps=20)
    assert r.diverged and r.n_train_steps == 5 and len(r.losses) == 5
    assert all(math.isfinite(v) for v in r.losses[:4]) and math.isnan(r.losses[4])
    assert r.smoothed[-1] == math.inf and len(r.smoothed) == 5
    np.testing.assert_allclose(r.smoothed[:4], _ema(r.losses[:4], 0.05), rtol=1e-12)


def _check_curve(r: RangeTestResult, steps: int) -> None:
    assert r.n_train_steps == steps and len(r.losses) == steps
    assert all(math.isfinite(v) for v in r.losses)
    np.testing.assert_allclose(r.smoothed, _ema(r.losses, 0.05), rtol=1e-12)
    assert r.suggestion is not None and r.suggestion > 0


@pytest.mark.parametrize(
    "optimizer,momentum,torch_opt",
    [
        ("sgd", 0.0, lambda p, lr: torch.optim.SGD(p, lr=lr)),
        ("momentum", 0.9, lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9)),
        ("adam", 0.0, lambda p, lr: torch.optim.Adam(p, lr=lr)),
        ("adamw", 0.0, lambda p, lr: torch.optim.AdamW(p, lr=lr, weight_decay=0.0)),
        ("rmsprop", 0.0, lambda p, lr: torch.optim.RMSprop(p, lr=lr)),
    ],
)
def test_each_optimizer_is_the_torch_one(data, optimizer, momentum, torch_opt):
    """The losses are those of the named torch optimiser on the same schedule."""
    steps = 24
    r = lr_range_test(
        _model(), F.cross_entropy, data, optimizer, momentum, min_lr=1e-4, max_lr=1e-1, num_steps=steps
    )
    assert r.optimizer == optimizer
    _check_curve(r, steps)
    m = _model()
    opt = torch_opt(m.parameters(), 1e-4)
    X, y = data
    expected = []
    for lr in np.geomspace(1e-4, 1e-1, steps):
        for g in opt.param_groups:
            g["lr"] = float(lr)
        opt.zero_grad()
        loss = F.cross_entropy(m(X), y)
        expected.append(float(loss.detach()))
        loss.backward()
        opt.step()
    np.testing.assert_allclose(r.losses, expected, rtol=1e-5)


def test_data_forms_agree(data):
    X, y = data
    kw = {"min_lr": 1e-3, "max_lr": 1.0, "num_steps": 24}
    mini = lr_range_test(_model(), F.cross_entropy, data, batch_size=32, **kw)
    _check_curve(mini, 24)
    full = lr_range_test(_model(), F.cross_entropy, data, **kw)
    assert mini.losses != full.losses  # minibatches are not the full batch

    pairs = [(X[i : i + 32], y[i : i + 32]) for i in range(0, N, 32)]
    listed = lr_range_test(_model(), F.cross_entropy, pairs, **kw)
    _check_curve(listed, 24)
    # cycled: the batch of step t is pairs[t % 4]; the first loss is that of batch 0 at init
    with torch.no_grad():
        first = float(F.cross_entropy(_model()(X[:32]), y[:32]))
    assert listed.losses[0] == pytest.approx(first, rel=1e-6)

    dicts = [{"x": bx, "label": by} for bx, by in pairs]
    from_dicts = lr_range_test(
        _model(), data=dicts, batch_loss=lambda model, b: F.cross_entropy(model(b["x"]), b["label"]), **kw
    )
    np.testing.assert_allclose(from_dicts.losses, listed.losses, rtol=1e-6)

    loader = DataLoader(TensorDataset(X, y), batch_size=32, shuffle=False)
    from_loader = lr_range_test(_model(), F.cross_entropy, loader, **kw)
    np.testing.assert_allclose(from_loader.losses, listed.losses, rtol=1e-6)
    assert from_loader.suggestions == pytest.approx(listed.suggestions, rel=1e-6)


def _unsupervised(model, b):
    return model(b).pow(2).mean()


def test_bare_tensor_batches_with_batch_loss(data):
    X, _ = data
    three = lr_range_test(
        _model(),
        data=[X[:40], X[40:80], X[80:120]],
        batch_loss=_unsupervised,
        min_lr=1e-4,
        max_lr=1e-1,
        num_steps=20,
    )
    with torch.no_grad():
        first = float(_unsupervised(_model(), X[:40]))
    assert three.n_train_steps == 20 and three.losses[0] == pytest.approx(first, rel=1e-6)


def test_a_list_of_two_tensors_is_one_pair_as_for_the_operators(data):
    """``[X, y]`` is one ``(X, y)`` batch (the curvature operators read it so too)."""
    X, _ = data
    two = lr_range_test(
        _model(),
        data=[X[:64], X[64:128]],
        batch_loss=lambda m, b: _unsupervised(m, b[0]),
        min_lr=1e-4,
        max_lr=1e-1,
        num_steps=20,
    )
    with torch.no_grad():
        first = float(_unsupervised(_model(), X[:64]))
    assert two.losses[0] == pytest.approx(first, rel=1e-6)
    assert two.losses[1] != pytest.approx(first, rel=1e-9)  # the same batch again, after a step


def test_pure_with_batchnorm(data):
    model = _model(bn=True)
    model.train()
    model[2].eval()  # a mixed training flag must survive too
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    with torch.no_grad():
        model[1].running_mean.fill_(0.3)
    torch.manual_seed(99)
    before = model_state(model)
    r = lr_range_test(
        model, F.cross_entropy, data, "adam", batch_size=32, min_lr=1e-4, max_lr=1.0, num_steps=20
    )
    assert_same_state(before, model)
    assert r.n_train_steps == 20


def test_pure_with_a_dataloader(data):
    loader = DataLoader(TensorDataset(*data), batch_size=32, shuffle=False)
    model = _model()
    torch.manual_seed(99)
    before = model_state(model)
    lr_range_test(model, F.cross_entropy, loader, min_lr=1e-4, max_lr=1.0, num_steps=10)
    assert_same_state(before, model)


def test_seed_determines_the_result(data):
    kw = {"batch_size": 16, "min_lr": 1e-4, "max_lr": 1.0, "num_steps": 30}
    a = lr_range_test(_model(), F.cross_entropy, data, seed=1, **kw)
    b = lr_range_test(_model(), F.cross_entropy, data, seed=1, **kw)
    assert a.losses == b.losses and a.smoothed == b.smoothed and a.suggestions == b.suggestions
    assert a.lrs == b.lrs
    c = lr_range_test(_model(), F.cross_entropy, data, seed=2, **kw)
    assert c.losses != a.losses
    assert c.lrs == a.lrs  # the schedule does not depend on the seed


def test_apply_sets_every_group(full_run):
    m = _model()
    opt = torch.optim.SGD([{"params": m[0].parameters()}, {"params": m[2].parameters(), "lr": 0.5}], lr=0.1)
    opt.param_groups[1]["initial_lr"] = 0.5  # as a scheduler leaves it
    got = full_run.apply(opt)
    assert got == full_run.suggestions["steepest"]
    assert [g["lr"] for g in opt.param_groups] == [got, got]
    assert opt.param_groups[1]["initial_lr"] == got and "initial_lr" not in opt.param_groups[0]
    assert full_run.apply(opt, lr=0.02) == 0.02 and all(g["lr"] == 0.02 for g in opt.param_groups)


def test_apply_rejects_non_optimizers_and_unusable_lrs(full_run):
    with pytest.raises(ls.InputError, match="apply needs a torch optimizer, got list"):
        full_run.apply([])
    opt = torch.optim.SGD(_model().parameters(), lr=0.1)
    for bad in (-1.0, 0.0, math.nan):
        with pytest.raises(ls.InputError, match="no usable learning rate to apply"):
            full_run.apply(opt, lr=bad)
    short = RangeTestResult(
        lrs=(1e-3,), losses=(1.0,), smoothed=(1.0,), suggestions={"steepest": None, "min/10": None}
    )
    with pytest.raises(ls.InputError, match="no usable learning rate to apply: None"):
        short.apply(opt)
    assert opt.param_groups[0]["lr"] == 0.1  # untouched by the failures


def test_plot_writes_a_png_and_as_dict(full_run, tmp_path):
    path = full_run.plot(tmp_path / "sub" / "range.png")
    assert path == tmp_path / "sub" / "range.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    d = full_run.as_dict()
    assert d["lrs"] == list(full_run.lrs) and d["suggestions"] == full_run.suggestions
    assert d["n_train_steps"] == 50 and d["diverged"] is False


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"min_lr": 0.0}, r"min_lr must be a positive number, got 0\.0"),
        ({"min_lr": -1e-3}, r"min_lr must be a positive number, got -0\.001"),
        ({"min_lr": 1.0, "max_lr": 1.0}, r"min_lr must be below max_lr, got 1\.0 and 1\.0"),
        ({"min_lr": 2.0, "max_lr": 1.0}, r"min_lr must be below max_lr, got 2\.0 and 1\.0"),
        ({"num_steps": 1}, r"num_steps must be an integer ≥ 2, got 1"),
        ({"num_steps": 2.5}, r"num_steps must be an integer ≥ 2, got 2\.5"),
        ({"smooth": 0}, r"smooth must be in \(0, 1\], got 0"),
        ({"smooth": 1.5}, r"smooth must be in \(0, 1\], got 1\.5"),
        ({"diverge_threshold": 1}, r"diverge_threshold must be a number > 1, got 1"),
        ({"rule": "valley"}, r"rule must be one of .*got 'valley'"),
        ({"optimizer": "lamb"}, r"optimizer must be one of .*got 'lamb'"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\), got 1\.0"),
        ({"batch_size": 0}, r"batch_size must be None .* in \[1, 128\], got 0"),
        ({"data": "iterator"}, r"data is an iterator"),
        ({"data": "tensor"}, r"data must be an \(X, y\) pair of tensors .*got Tensor"),
        ({"data": "pairs", "batch_size": 8}, r"batch_size is for \(X, y\) tensors"),
        ({"data": []}, r"data yields no batches"),
    ],
)
def test_bad_input_is_named(data, kwargs, match):
    X, y = data
    forms = {"iterator": iter([(X, y)]), "tensor": X, "pairs": [(X, y)]}
    kwargs = dict(kwargs)
    if "data" in kwargs:
        d = kwargs.pop("data")
        kwargs["data"] = forms[d] if isinstance(d, str) else d
    else:
        kwargs["data"] = data
    with pytest.raises(ls.InputError, match=match):
        lr_range_test(_model(), F.cross_entropy, num_steps=kwargs.pop("num_steps", 10), **kwargs)
