"""Stability thresholds on quadratics (DESIGN §9.3) and the learning-rate schedules."""

from __future__ import annotations

import math

import pytest
import torch

import landscope as ls
from landscope.training import OptimizerSpec, ScheduleConfig, make_optimizer, make_schedule, parse_config

STEPS = 3000
KINDS = {
    "gd": OptimizerSpec(name="gd", lr=0.1),
    "momentum": OptimizerSpec(name="momentum", lr=0.1, momentum=0.9),
    "nesterov": OptimizerSpec(name="nesterov", lr=0.1, momentum=0.9),
    "adam": OptimizerSpec(name="adam", lr=1.0, betas=(0.9, 1 - 1e-15)),
}


def _freeze_adam_preconditioner(opt: torch.optim.Optimizer, x: torch.Tensor, v: float) -> None:
    """Adam state whose second moment stays at v (β₂ → 1) and whose bias corrections are 1.

    With η = 1 the gradients stay small against v (g²/v = (38 x)²), so (1 − β₂)g² leaves v
    unchanged to 1e-9 even after x has grown a million-fold.

    The threshold (2+2β₁)/((1−β₁)η) is for the preconditioned curvature with P held fixed
    (Cohen et al. 2022); this makes torch's Adam run exactly that linear system.
    """
    opt.state[x] = {
        "step": torch.tensor(1e17),
        "exp_avg": torch.zeros_like(x),
        "exp_avg_sq": torch.full_like(x, v),
    }


def _run_quadratic(kind: str, factor: float) -> float:
    """‖x_T‖ / ‖x_0‖ for f(x) = ½ Σ cᵢ xᵢ² whose top (preconditioned) curvature is factor × threshold."""
    spec = KINDS[kind]
    x = torch.nn.Parameter(torch.tensor([1.0, -0.7, 0.3], dtype=torch.float64))
    opt = make_optimizer([x], spec)
    threshold = ls.stability_threshold(opt)
    assert threshold == pytest.approx(ls.stability_threshold(spec))
    P = 1.0
    if kind == "adam":
        _freeze_adam_preconditioner(opt, x, v=4.0)
        P = 2.0 + spec.eps
    curv = torch.tensor([factor, 0.6, 0.3], dtype=torch.float64) * threshold * P
    x0 = x.detach().norm().item()
    for _ in range(STEPS):
        opt.zero_grad()
        loss = 0.5 * (curv * x**2).sum()
        loss.backward()
        opt.step()
        if not torch.isfinite(x).all() or x.norm() > 1e4 * x0:  # diverged; stop before Adam adapts
            break
    return x.detach().norm().item() / x0


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_just_below_threshold_converges_just_above_diverges(kind):
    assert _run_quadratic(kind, 0.99) < 1e-6
    assert _run_quadratic(kind, 1.01) > 1e3


def test_threshold_values():
    eta = 0.2
    assert ls.stability_threshold(OptimizerSpec(name="gd", lr=eta)) == pytest.approx(2 / eta)
    assert ls.stability_threshold(OptimizerSpec(name="momentum", lr=eta, momentum=0.9)) == pytest.approx(
        3.8 / eta
    )
    assert ls.stability_threshold(OptimizerSpec(name="nesterov", lr=eta, momentum=0.9)) == pytest.approx(
        3.8 / (eta * 2.8)
    )
    assert ls.stability_threshold(OptimizerSpec(name="adam", lr=eta)) == pytest.approx(38 / eta)
    # coupled weight decay adds wd to every curvature of plain SGD
    assert ls.stability_threshold(OptimizerSpec(name="sgd", lr=eta, weight_decay=0.5)) == pytest.approx(
        2 / eta - 0.5
    )
    # the optimizer's current lr is read (schedules change it)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    assert ls.stability_threshold(opt) == pytest.approx(4.0)
    assert ls.stability_threshold(opt, lr=0.25) == pytest.approx(8.0)
    # dampening scales η: v ← βv + (1−d)g
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.5, dampening=0.5)
    assert ls.stability_threshold(opt) == pytest.approx(3.0 / 0.05)
    one = [torch.nn.Parameter(torch.zeros(1))]
    assert ls.stability_threshold(torch.optim.RMSprop(one, lr=0.01)) == pytest.approx(2 / 0.01)
    assert ls.stability_threshold(torch.optim.RMSprop(one, lr=0.01, momentum=0.5)) == pytest.approx(
        3 / 0.01
    )  # heavy-ball on the preconditioned step
    assert ls.stability_threshold(torch.optim.Adagrad(one)) is None


def test_threshold_bad_input():
    with pytest.raises(ls.InputError, match="got 'sgd'"):
        ls.stability_threshold("sgd")
    with pytest.raises(ls.InputError, match="-0.1"):
        ls.stability_threshold(OptimizerSpec(name="gd", lr=0.1), lr=-0.1)


def _sched(**kw) -> callable:
    base = kw.pop("base", 0.2)
    total = kw.pop("total", 100)
    return make_schedule(ScheduleConfig(**kw), base, total)


def test_schedules_are_pure_functions_of_the_step():
    s = _sched(name="constant")
    assert [s(t) for t in (0, 50, 99)] == [0.2, 0.2, 0.2]
    s = _sched(name="step", milestones=(10, 20), gamma=0.5)
    assert (s(9), s(10), s(19), s(20)) == pytest.approx((0.2, 0.1, 0.1, 0.05))
    s = _sched(name="delayed_decay", delay=30, final_factor=0.1)
    assert (s(29), s(30), s(99)) == pytest.approx((0.2, 0.02, 0.02))
    s = _sched(name="delayed_decay", delay=50, decay="linear", final_factor=0.0)
    assert (s(50), s(75), s(100)) == pytest.approx((0.2, 0.1, 0.0))
    s = _sched(name="cosine", final_factor=0.0)
    assert (s(0), s(50), s(100)) == pytest.approx((0.2, 0.1, 0.0))
    s = _sched(name="cyclic", ratio=4.0, period=20)
    assert (s(0), s(5), s(10), s(15), s(20)) == pytest.approx((0.05, 0.125, 0.2, 0.125, 0.05))
    s = _sched(name="cyclic", lr_low=0.1, period=10)
    assert min(s.values()) == pytest.approx(0.1) and max(s.values()) == pytest.approx(0.2)
    # warmup composes with any schedule
    s = _sched(name="cosine", warmup_steps=10, final_factor=0.0)
    assert s(0) == pytest.approx(0.02) and s(9) == pytest.approx(
        0.2 * math.cos(math.pi * 9 / 100) * 0.5 + 0.1
    )
    assert len(s.values()) == 100 and len(s.values(7)) == 7


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"name": "step"}, "milestones"),
        ({"name": "delayed_decay"}, "delay"),
        ({"name": "cyclic", "ratio": 2.0}, "period"),
        ({"name": "cyclic", "period": 10}, "exactly one of lr_low and ratio"),
        ({"name": "cosine", "warmup_steps": -1}, "warmup_steps = -1"),
        ({"name": "triangle"}, "name = 'triangle'"),
    ],
)
def test_schedule_config_errors_name_the_key(kw, match):
    with pytest.raises(ls.ConfigError, match=match):
        parse_config({"schedule": kw})


def test_cyclic_low_above_high_is_an_error():
    with pytest.raises(ls.InputError, match="lr_low=0.5"):
        _sched(name="cyclic", lr_low=0.5, period=10)
