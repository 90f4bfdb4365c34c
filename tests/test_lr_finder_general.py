"""find_max_stable_lr beyond full-batch SGD: momentum, Nesterov, Adam, AdamW and RMSprop (the
threshold and the preconditioned λ1 against independent computations), minibatches and other data
forms, dead networks, the catapult-factor warning, apply/as_dict, purity and determinism."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from reference import assert_same_state, model_state
from torch import nn
from torch.autograd.functional import hessian
from torch.func import functional_call
from torch.utils.data import DataLoader, TensorDataset

import landscope as ls
import landscope.monitor.lr_finder as lr_finder
from landscope.monitor import LRFinderResult
from landscope.monitor.lr_finder import default_probe_steps
from landscope.monitor.short_runs import outputs_collapsed

N, D, C = 128, 10, 3
# how far below its initial loss a probe must end to count as trained (1.0 if the finder has none)
CLEARLY_BELOW = getattr(lr_finder, "CLEARLY_BELOW", 1.0)
FAST = {"early_steps": 3, "probe_steps": 5}


def _data(n: int = N, seed: int = 0, dtype: torch.dtype = torch.float32, teacher: bool = True):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, D, generator=g, dtype=dtype)
    if teacher:
        return X, (X @ torch.randn(D, C, generator=g, dtype=dtype)).argmax(1)
    return X, torch.randint(0, C, (n,), generator=g)


def _model(seed: int = 0, act: type[nn.Module] = nn.Tanh, bn: bool = False, hidden: int = 16) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(D, hidden)]
    if bn:
        layers.append(nn.BatchNorm1d(hidden))
    layers += [act(), nn.Linear(hidden, C)]
    return nn.Sequential(*layers)


def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((out - F.one_hot(y, C).to(out.dtype)) ** 2).sum(-1).mean()


@pytest.fixture(scope="module")
def data():
    return _data()


def _torch_optimizer(name: str, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
    """The torch optimiser the finder's name stands for, built here."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "nesterov":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay)
    assert name == "rmsprop"
    return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _check_search(res: LRFinderResult) -> None:
    """The prediction is the largest surviving probe, every failure lies above it."""
    assert res.probes
    survived = [p for p in res.probes if p.survived]
    failed = [p for p in res.probes if not p.survived]
    assert max(p.lr for p in survived) == pytest.approx(res.lr, rel=1e-12)
    assert all(p.lr > res.lr for p in failed)
    for p in res.probes:
        assert p.lr == pytest.approx(p.factor * res.threshold_lr, rel=1e-12)
        assert p.steps <= res.probe_steps and (not p.survived or p.steps == res.probe_steps)
        if p.survived:
            assert p.loss_ratio <= CLEARLY_BELOW and not p.dead and not getattr(p, "at_chance", False)
        elif p.steps == res.probe_steps and math.isfinite(p.loss_ratio):  # ran to the end
            assert p.loss_ratio > CLEARLY_BELOW or p.dead or getattr(p, "at_chance", False)


# name, momentum, weight decay, threshold × η (closed form), preconditioned
CASES = [
    ("momentum", 0.9, 0.0, 3.8, False),
    ("nesterov", 0.9, 0.0, 3.8 / 2.8, False),
    ("adam", 0.0, 0.0, 38.0, True),
    ("adamw", 0.0, 0.0, 38.0, True),
    ("rmsprop", 0.0, 0.0, 2.0, True),
    ("sgd", 0.0, 0.05, 2.0, False),
    ("momentum", 0.5, 0.05, 3.0, False),
    ("adamw", 0.0, 0.05, 38.0, True),  # decoupled decay: not added to the curvature
]


@pytest.mark.parametrize(
    "name,momentum,wd,a,preconditioned", CASES, ids=[f"{c[0]}-b{c[1]}-wd{c[2]}" for c in CASES]
)
def test_fields_are_consistent(data, name, momentum, wd, a, preconditioned):
    res = ls.find_max_stable_lr(
        _model(),
        F.cross_entropy,
        data,
        optimizer=name,
        momentum=momentum,
        weight_decay=wd,
        warmup_steps=4,
        **FAST,
    )
    assert res.optimizer == name and res.momentum == momentum and res.rule.startswith("catapult")
    bare = _torch_optimizer(name, [nn.Parameter(torch.zeros(1))], 1.0, momentum)
    assert res.threshold_constant == pytest.approx(ls.stability_threshold(bare), rel=1e-12)
    assert res.threshold_constant == pytest.approx(a, rel=1e-12)
    assert res.preconditioned is preconditioned
    coupled = 0.0 if preconditioned else wd
    assert res.lambda1_steps == (0, 1, 2, 3) and len(res.lambda1_trajectory) == 4
    assert res.lambda1_trajectory[0] == res.lambda1_init and res.lambda1_trajectory[-1] == res.lambda1_early
    assert res.lambda1_init > 0 and res.lambda1_early > 0
    assert res.early_lr == pytest.approx(0.5 * a / (res.lambda1_init + coupled), rel=1e-12)
    assert res.threshold_lr == pytest.approx(a / (res.lambda1_early + coupled), rel=1e-12)
    # the threshold η is where the optimiser's own threshold (with its weight decay) meets λ̂1
    at_thr = _torch_optimizer(name, [nn.Parameter(torch.zeros(1))], res.threshold_lr, momentum, wd)
    assert ls.stability_threshold(at_thr) == pytest.approx(res.lambda1_early, rel=1e-9)
    assert res.lr == pytest.approx(res.catapult_factor * res.threshold_lr, rel=1e-12)
    assert res.suggestion == res.lr and math.isfinite(res.lr) and res.lr > 0
    _check_search(res)
    assert res.probe_steps == 5
    warm = 4 if preconditioned else 0
    assert res.n_train_steps == warm + 3 + sum(p.steps for p in res.probes)
    h = res.history
    assert h["lambda1_steps"] == list(res.lambda1_steps) and h["lambda1"] == list(res.lambda1_trajectory)
    assert h["probe_lr"] == [p.lr for p in res.probes]
    assert h["probe_loss_ratio"] == [p.loss_ratio for p in res.probes]
    assert h["probe_survived"] == [p.survived for p in res.probes]
    assert res.range_test is None


def test_weight_decay_lowers_the_sgd_threshold(data):
    """Coupled decay adds wd to the loss's λ1: λ1 at init is the same, the threshold η lower."""
    kw = dict(rule="curvature", early_steps=1)
    plain = ls.find_max_stable_lr(_model(), F.cross_entropy, data, **kw)
    decay = ls.find_max_stable_lr(_model(), F.cross_entropy, data, weight_decay=0.5, **kw)
    assert decay.lambda1_init == plain.lambda1_init  # the Hessian of the loss, without the decay
    assert decay.early_lr == pytest.approx(1.0 / (plain.lambda1_init + 0.5), rel=1e-12)
    assert decay.threshold_lr == pytest.approx(2.0 / (decay.lambda1_early + 0.5), rel=1e-12)
    assert decay.threshold_lr < plain.threshold_lr


def _dense_preconditioned_lambda1(model: nn.Module, X, y, optimizer: str, warmup: int) -> float:
    """λ1(P^-1/2 H P^-1/2) by hand: torch's optimiser at η = 0 fills P, autograd's dense Hessian."""
    m = copy.deepcopy(model)
    if optimizer == "adam":
        opt = torch.optim.Adam(m.parameters(), lr=0.0, betas=(0.9, 0.999), eps=1e-8)
    else:
        opt = torch.optim.RMSprop(m.parameters(), lr=0.0, alpha=0.99, eps=1e-8)
    for _ in range(warmup):
        opt.zero_grad()
        F.cross_entropy(m(X), y).backward()
        opt.step()
    parts = []
    for p in m.parameters():
        st = opt.state[p]
        # Adam's v̂ is bias-corrected, RMSprop's v is not
        v = st["exp_avg_sq"] / (1 - 0.999 ** float(st["step"])) if optimizer == "adam" else st["square_avg"]
        parts.append((v.sqrt() + 1e-8).reshape(-1))
    P = torch.cat(parts).double()
    names = [n for n, _ in m.named_parameters()]
    shapes = [p.shape for p in m.parameters()]
    sizes = [p.numel() for p in m.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in m.parameters()])

    def loss(th):
        params = {n: t.reshape(s) for n, t, s in zip(names, torch.split(th, sizes), shapes, strict=True)}
        return F.cross_entropy(functional_call(m, params, (X,)), y)

    H = hessian(loss, theta)
    s = P.rsqrt()
    return float(torch.linalg.eigvalsh(s[:, None] * H * s[None, :])[-1])


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_preconditioned_lambda1_against_a_dense_reference(optimizer):
    X, y = _data(64, dtype=torch.float64)
    model = _model(hidden=8).double()
    assert sum(p.numel() for p in model.parameters()) < 200
    res = ls.find_max_stable_lr(
        model,
        F.cross_entropy,
        (X, y),
        optimizer=optimizer,
        warmup_steps=4,
        hessian_samples=None,
        tol=1e-8,
        rule="curvature",
        early_steps=1,
    )
    ref = _dense_preconditioned_lambda1(model, X, y, optimizer, 4)
    assert res.lambda1_init == pytest.approx(ref, rel=1e-6)
    loose = ls.find_max_stable_lr(
        model,
        F.cross_entropy,
        (X, y),
        optimizer=optimizer,
        warmup_steps=4,
        hessian_samples=None,
        rule="curvature",
        early_steps=1,
    )  # tol 1e-3
    assert loose.lambda1_init == pytest.approx(ref, rel=1e-2)
    # the unpreconditioned λ1 is far off: the check is sensitive to P
    sgd = ls.find_max_stable_lr(
        model, F.cross_entropy, (X, y), hessian_samples=None, tol=1e-8, rule="curvature", early_steps=1
    )
    assert abs(sgd.lambda1_init / ref - 1) > 0.5


def test_rmsprop_without_bias_correction_differs_from_adam():
    """After w steps at η = 0 on a fixed gradient, RMSprop's v = (1 − α^w) g², Adam's v̂ = g²."""
    X, y = _data(64, dtype=torch.float64)
    model = _model(hidden=8).double()
    kw = dict(warmup_steps=2, hessian_samples=None, tol=1e-8, rule="curvature", early_steps=1)
    adam = ls.find_max_stable_lr(model, F.cross_entropy, (X, y), optimizer="adam", **kw)
    rms = ls.find_max_stable_lr(model, F.cross_entropy, (X, y), optimizer="rmsprop", **kw)
    # P_rms = sqrt(1 − 0.99²) |g| + ε vs P_adam = |g| + ε: λ1 scales by 1/sqrt(1 − 0.99²)
    assert rms.lambda1_init == pytest.approx(adam.lambda1_init / math.sqrt(1 - 0.99**2), rel=1e-3)


def _pairs(data, size: int = 32):
    X, y = data
    return [(X[i : i + size], y[i : i + size]) for i in range(0, len(X), size)]


def test_data_forms_agree(data):
    pairs = _pairs(data)
    kw = dict(FAST, hessian_samples=64)
    listed = ls.find_max_stable_lr(_model(), F.cross_entropy, pairs, **kw)
    assert math.isfinite(listed.lr) and listed.lr > 0
    _check_search(listed)

    loader = DataLoader(TensorDataset(*data), batch_size=32, shuffle=False)
    from_loader = ls.find_max_stable_lr(_model(), F.cross_entropy, loader, **kw)
    assert from_loader.lr == pytest.approx(listed.lr, rel=1e-6)
    assert from_loader.lambda1_trajectory == pytest.approx(listed.lambda1_trajectory, rel=1e-6)

    dicts = [{"inputs": bx, "labels": by} for bx, by in pairs]
    seen = []

    def weight(b):
        seen.append(len(b["labels"]))
        return float(len(b["labels"]))

    from_dicts = ls.find_max_stable_lr(
        _model(),
        data=dicts,
        batch_loss=lambda m, b: F.cross_entropy(m(b["inputs"]), b["labels"]),
        batch_weight=weight,
        **kw,
    )
    assert seen  # the weight was used
    assert from_dicts.lr == pytest.approx(listed.lr, rel=1e-6)
    assert from_dicts.lambda1_trajectory == pytest.approx(listed.lambda1_trajectory, rel=1e-6)
    assert [p.survived for p in from_dicts.probes] == [p.survived for p in listed.probes]


def _unequal_dicts(data):
    X, y = data
    return [{"inputs": X[:8], "labels": y[:8]}, {"inputs": X[8:72], "labels": y[8:72]}]


def _dict_loss(m, b):
    return F.cross_entropy(m(b["inputs"]), b["labels"])


def test_batch_weight_changes_the_hessian(data):
    """Unequal batches: weighting each by 1 instead of its size changes the measured λ1."""
    X, y = data
    kw = dict(rule="curvature", early_steps=1, tol=1e-6)
    dicts = _unequal_dicts(data)
    by_size = ls.find_max_stable_lr(_model(), data=dicts, batch_loss=_dict_loss, hessian_samples=72, **kw)
    flat = ls.find_max_stable_lr(
        _model(), data=dicts, batch_loss=_dict_loss, hessian_samples=72, batch_weight=lambda b: 1.0, **kw
    )
    full = ls.find_max_stable_lr(_model(), F.cross_entropy, (X[:72], y[:72]), hessian_samples=None, **kw)
    assert by_size.lambda1_init == pytest.approx(full.lambda1_init, rel=1e-4)
    assert abs(flat.lambda1_init / by_size.lambda1_init - 1) > 1e-2


def test_hessian_samples_none_uses_every_batch(data):
    X, y = data
    kw = dict(rule="curvature", early_steps=1, tol=1e-6, hessian_samples=None)
    listed = ls.find_max_stable_lr(_model(), data=_unequal_dicts(data), batch_loss=_dict_loss, **kw)
    full = ls.find_max_stable_lr(_model(), F.cross_entropy, (X[:72], y[:72]), **kw)
    assert listed.lambda1_init == pytest.approx(full.lambda1_init, rel=1e-4)


def test_default_probe_steps_follows_the_run():
    assert default_probe_steps(None) == 10
    assert default_probe_steps(1) == 10  # never shorter than 10
    assert default_probe_steps(10**6) == 100  # never longer than 100
    values = [default_probe_steps(s) for s in range(1, 3000, 37)]
    assert values == sorted(values)  # longer runs, longer probes
    assert default_probe_steps(400) > 10


def test_minibatches_and_probe_length(data):
    res = ls.find_max_stable_lr(
        _model(), F.cross_entropy, data, batch_size=32, steps=400, early_steps=3, hessian_samples=64
    )
    n = default_probe_steps(400)
    assert res.probe_steps == n and math.isfinite(res.lr) and res.lr > 0
    assert all(p.steps <= n for p in res.probes) and any(p.steps == n for p in res.probes)
    _check_search(res)
    short = ls.find_max_stable_lr(
        _model(),
        F.cross_entropy,
        data,
        batch_size=32,
        steps=400,
        probe_steps=7,
        early_steps=3,
        hessian_samples=64,
    )
    assert short.probe_steps == 7 and all(p.steps <= 7 for p in short.probes)
    assert any(p.steps == 7 for p in short.probes)
    assert short.n_train_steps == 3 + sum(p.steps for p in short.probes)


def _dead_model() -> nn.Module:
    m = _model(act=nn.ReLU)
    with torch.no_grad():
        m[0].bias.fill_(-100.0)  # every pre-activation < 0: the hidden layer is dead for all inputs
        m[2].bias.copy_(torch.tensor([3.0, -3.0, 0.0]))  # a poor constant: its loss can fall a lot
    return m


def test_outputs_collapsed_detects_a_dead_network(data):
    X, y = data
    dead, alive = _dead_model(), _model(act=nn.ReLU)
    with torch.no_grad():
        out = dead(X)
    assert torch.equal(out, dead[2].bias.expand_as(out))  # independent: the output is the last bias
    assert outputs_collapsed(dead, [(X, y)], custom_loss=False) is True
    assert outputs_collapsed(alive, [(X, y)], custom_loss=False) is False
    assert outputs_collapsed(dead, [(X, y)], custom_loss=True) is None
    assert outputs_collapsed(alive, [(X[:1], y[:1])], custom_loss=False) is None  # one sample


def test_a_dead_network_never_survives_a_probe(data, monkeypatch):
    """MSE: the dead model is a constant whose Hessian is the identity (λ1 = 1), trainable below η = 2."""
    with pytest.raises(ls.LandscopeError, match="no probe survived"):
        ls.find_max_stable_lr(_dead_model(), _mse, data, **FAST)

    probes = []
    real_probe = lr_finder.Probe

    def spy(**kw):
        probes.append(real_probe(**kw))
        return probes[-1]

    monkeypatch.setattr(lr_finder, "Probe", spy)
    if hasattr(lr_finder, "at_chance"):  # isolate the dead-network check from the chance check
        monkeypatch.setattr(lr_finder, "at_chance", lambda *a, **k: False)
    with pytest.raises(ls.LandscopeError, match="no probe survived"):
        ls.find_max_stable_lr(_dead_model(), _mse, data, **FAST)
    assert probes and not any(p.survived for p in probes)
    ran = [p for p in probes if math.isfinite(p.loss_ratio)]  # η = 4 diverges: not judged dead
    assert ran and all(p.dead for p in ran)
    # the loss did fall well (the output bias learns the class frequencies): only death failed them
    assert any(p.loss_ratio <= CLEARLY_BELOW for p in probes)

    # without the dead-network check the same probes survive and a prediction comes back
    monkeypatch.setattr(lr_finder, "outputs_collapsed", lambda *a, **k: False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the factor is < 1 here
        res = ls.find_max_stable_lr(_dead_model(), _mse, data, **FAST)
    assert res.lambda1_init == pytest.approx(1.0, rel=1e-3)  # only the output bias is alive
    assert res.lr > 0 and any(p.survived for p in res.probes)


def _catches(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = fn()
    return res, [
        w for w in caught if issubclass(w.category, RuntimeWarning) and "catapult factor" in str(w.message)
    ]


def test_catapult_factor_below_one_warns_and_is_noted():
    """Adam on a ReLU MLP, MSE on random labels: training fails far below Adam's threshold η."""
    X, y = _data(teacher=False)
    res, caught = _catches(
        lambda: ls.find_max_stable_lr(
            _model(act=nn.ReLU), _mse, (X, y), optimizer="adam", warmup_steps=4, **FAST
        )
    )
    assert res.catapult_factor < 1
    assert not any(p.survived for p in res.probes if p.lr >= res.threshold_lr)
    assert any(p.survived for p in res.probes) and res.lr < res.threshold_lr
    assert len(caught) == 1 and len(res.notes) == 1
    assert str(caught[0].message) == res.notes[0]
    assert f"catapult factor is {res.catapult_factor:.3g} < 1" in res.notes[0]
    assert caught[0].filename == __file__  # stacklevel points at the caller


def test_catapult_factor_warning_with_a_forced_search(data, monkeypatch):
    monkeypatch.setattr(lr_finder, "_search", lambda survives: (0.5, 1.0))
    res, caught = _catches(lambda: ls.find_max_stable_lr(_model(), F.cross_entropy, data, **FAST))
    assert 0.5 <= res.catapult_factor < 1 and len(res.probes) == 2  # two bisections of [0.5, 1]
    assert len(caught) == 1 and res.notes == (str(caught[0].message),)
    monkeypatch.undo()  # a factor ≥ 1 gives no note
    res, caught = _catches(lambda: ls.find_max_stable_lr(_model(), F.cross_entropy, data, **FAST))
    assert res.catapult_factor >= 1 and res.notes == () and caught == []


@pytest.fixture(scope="module")
def adam_result(data):
    return ls.find_max_stable_lr(_model(), F.cross_entropy, data, optimizer="adam", warmup_steps=4, **FAST)


def test_apply_a_fraction(adam_result):
    m = _model()
    opt = torch.optim.Adam([{"params": m[0].parameters()}, {"params": m[2].parameters(), "lr": 3.0}], lr=1.0)
    got = adam_result.apply(opt, fraction=0.5)
    assert got == pytest.approx(adam_result.lr / 2, rel=1e-15)
    assert all(g["lr"] == got for g in opt.param_groups)
    assert adam_result.apply(opt) == adam_result.lr
    with pytest.raises(ls.InputError, match="no usable learning rate"):
        adam_result.apply(opt, fraction=-1.0)
    with pytest.raises(ls.InputError, match="apply needs a torch optimizer"):
        adam_result.apply("adam")


def test_as_dict_is_json(adam_result):
    diverged = lr_finder.Probe(lr=9.0, factor=8.0, survived=False, steps=2, loss_ratio=math.inf)
    res = dataclasses.replace(adam_result, probes=(*adam_result.probes, diverged))
    d = res.as_dict()
    back = json.loads(json.dumps(d, allow_nan=False))
    assert back["range_test"] is None and "range_test" in back
    assert back["lr"] == res.lr and back["preconditioned"] is True
    assert back["notes"] == list(res.notes) and back["optimizer"] == "adam"
    assert back["lambda1_trajectory"] == list(res.lambda1_trajectory)
    assert len(back["probes"]) == len(res.probes) and back["probes"][-1]["loss_ratio"] is None
    for p, q in zip(back["probes"], res.probes, strict=True):
        assert p["lr"] == q.lr and p["survived"] == q.survived and p["dead"] == q.dead
        assert p["loss_ratio"] == (q.loss_ratio if math.isfinite(q.loss_ratio) else None)


@pytest.mark.filterwarnings("ignore:the catapult factor:RuntimeWarning")
def test_pure_with_batchnorm_and_adam(data):
    model = _model(bn=True)
    model.train()
    model[3].eval()  # a mixed training flag must survive too
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    with torch.no_grad():
        model[1].running_var.fill_(2.0)
    torch.manual_seed(99)
    before = model_state(model)
    res = ls.find_max_stable_lr(
        model,
        F.cross_entropy,
        data,
        optimizer="adam",
        batch_size=32,
        warmup_steps=4,
        hessian_samples=64,
        **FAST,
    )
    assert_same_state(before, model)
    assert res.lr > 0


def test_pure_with_a_dataloader(data):
    loader = DataLoader(TensorDataset(*data), batch_size=32, shuffle=False)
    model = _model()
    torch.manual_seed(99)
    before = model_state(model)
    ls.find_max_stable_lr(model, F.cross_entropy, loader, rule="curvature", early_steps=1)
    assert_same_state(before, model)


@pytest.mark.filterwarnings("ignore:the catapult factor:RuntimeWarning")
def test_deterministic(data):
    kw = dict(FAST, optimizer="momentum", momentum=0.9, batch_size=16, hessian_samples=64, seed=3)
    a = ls.find_max_stable_lr(_model(), F.cross_entropy, data, **kw)
    b = ls.find_max_stable_lr(_model(), F.cross_entropy, data, **kw)
    assert a.lr == b.lr and a.probes == b.probes and a.lambda1_trajectory == b.lambda1_trajectory
    c = ls.find_max_stable_lr(_model(), F.cross_entropy, data, **{**kw, "seed": 4})
    assert c.lambda1_trajectory != a.lambda1_trajectory  # the seed drives the batches and the subset


def test_auto_hessian_samples_is_one_training_batch(data):
    """Default: 256 samples for full batch, one batch of ``batch_size`` for minibatches."""
    kw = dict(rule="curvature", early_steps=1, probe_steps=2, tol=1e-8)  # only λ1(init) is compared
    auto = ls.find_max_stable_lr(_model(), F.cross_entropy, data, batch_size=32, **kw)
    one = ls.find_max_stable_lr(_model(), F.cross_entropy, data, batch_size=32, hessian_samples=32, **kw)
    more = ls.find_max_stable_lr(_model(), F.cross_entropy, data, batch_size=32, hessian_samples=96, **kw)
    assert auto.lambda1_init == one.lambda1_init != more.lambda1_init
    X, y = data
    pairs = [(X[:24], y[:24]), (X[24:72], y[24:72])]
    first = ls.find_max_stable_lr(_model(), F.cross_entropy, pairs, **kw)
    only = ls.find_max_stable_lr(_model(), F.cross_entropy, pairs[:1], **kw)
    assert first.lambda1_init == pytest.approx(only.lambda1_init, rel=1e-9)


@pytest.mark.parametrize("bad", [0, 2.5, "all", True])
def test_bad_hessian_samples_is_named(data, bad):
    with pytest.raises(ls.InputError, match=r"hessian_samples must be a positive integer, None .*'auto'"):
        ls.find_max_stable_lr(_model(), F.cross_entropy, data, hessian_samples=bad)


def test_range_test_attached_and_drawn(data, tmp_path):
    res = ls.find_max_stable_lr(
        _model(), F.cross_entropy, data, optimizer="adamw", batch_size=32, range_test=True, **FAST
    )
    rt = res.range_test
    assert rt is not None and rt.optimizer == "adamw" and len(rt.lrs) == rt.n_train_steps
    alone = ls.lr_range_test(_model(), F.cross_entropy, data, optimizer="adamw", batch_size=32)
    assert rt.losses == alone.losses  # the same run as calling it directly
    path = res.plot(tmp_path / "finder.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert res.as_dict()["range_test"]["suggestions"] == rt.suggestions


def test_chance_is_judged_only_where_the_network_started_at_chance():
    """``chance_ratio`` = loss / loss of the model's mean output; 'at chance' needs a start at 1."""
    from landscope.monitor.short_runs import at_chance, chance_ratio

    g = torch.Generator().manual_seed(3)
    X, y = torch.randn(50, 4, generator=g), torch.randn(50, 2, generator=g)
    model = nn.Linear(4, 2)
    mse_loss = nn.MSELoss()
    with torch.no_grad():
        out = model(X)
        expected = float(mse_loss(out, y)) / float(mse_loss(out.mean(0, keepdim=True).expand_as(out), y))
    assert chance_ratio(model, mse_loss, [(X, y)]) == pytest.approx(expected, rel=1e-12)
    with torch.no_grad():
        model.weight.zero_()  # a constant prediction: exactly at chance
    assert chance_ratio(model, mse_loss, [(X, y)]) == pytest.approx(1.0, rel=1e-12)
    assert at_chance(model, mse_loss, [(X, y)], started=1.0) is True
    assert at_chance(model, mse_loss, [(X, y)], started=1.5) is None  # started above: no verdict
    assert at_chance(model, None, [(X, y)]) is None
