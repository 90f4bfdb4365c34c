"""find_max_stable_lr and `landscope lr-find` (issue 6): the search, purity, bad input, the CLI,
and (slow) the prediction against a brute-force check on the edge-of-stability MLP."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import yaml
from reference import assert_same_state, model_state
from typer.testing import CliRunner

import landscope as ls
from landscope.cli import app
from landscope.data import load_mnist1d
from landscope.models import mlp, mse
from landscope.monitor import LRFinderResult
from landscope.monitor.lr_finder import CATAPULT_FACTOR
from landscope.training import OptimizerSpec, Trainer

runner = CliRunner()


@pytest.fixture(scope="module")
def data():
    return load_mnist1d(n_train=200, n_test=100).train


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return mlp(40, 10, width=8, depth=1)


def test_result_is_consistent_and_the_search_brackets_it(data):
    res = ls.find_max_stable_lr(_model(), mse, data)
    assert isinstance(res, LRFinderResult) and res.optimizer == "sgd" and res.rule.startswith("catapult")
    assert res.threshold_constant == 2.0
    assert res.lambda1_steps == (0, 1, 2, 3, 4, 5) and len(res.lambda1_trajectory) == 6
    assert res.lambda1_trajectory[-1] == res.lambda1_early
    assert res.lambda1_init == pytest.approx(res.lambda1_trajectory[0], rel=1e-3)  # warm re-measure
    assert res.early_lr == pytest.approx(1.0 / res.lambda1_init)
    assert res.threshold_lr == pytest.approx(2.0 / res.lambda1_early)
    assert res.lr == pytest.approx(res.catapult_factor * res.threshold_lr)
    survived = [p for p in res.probes if p.survived]
    failed = [p for p in res.probes if not p.survived]
    assert max(p.lr for p in survived) == pytest.approx(res.lr)
    assert failed and min(p.lr for p in failed) > res.lr  # the bracket's upper end failed
    assert min(p.lr for p in failed) / res.lr == pytest.approx(2**0.25)  # two bisections
    assert all(p.loss_ratio < 1 for p in survived)
    assert res.n_matvecs > 0 and res.n_train_steps >= 5 + 10 * len(survived)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.lr = 1.0


def test_deterministic_and_pure(data):
    model = _model()
    model.train()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    torch.manual_seed(99)
    before = model_state(model)
    a = ls.find_max_stable_lr(model, mse, data)
    assert_same_state(before, model)
    b = ls.find_max_stable_lr(model, mse, data)
    assert a.lr == b.lr and a.lambda1_trajectory == b.lambda1_trajectory and a.probes == b.probes


def test_curvature_rule_momentum_and_minibatches(data):
    res = ls.find_max_stable_lr(
        _model(), mse, data, optimizer="sgd", momentum=0.9, rule="curvature", batch_size=50
    )
    assert res.optimizer == "momentum" and res.momentum == 0.9 and res.probes == ()
    assert res.threshold_constant == pytest.approx(2 + 2 * 0.9)
    assert res.lr == pytest.approx(CATAPULT_FACTOR * 3.8 / res.lambda1_early)
    nest = ls.find_max_stable_lr(_model(), mse, data, optimizer="nesterov", momentum=0.5, probe_steps=8)
    assert nest.threshold_constant == pytest.approx(3.0 / 2.0)
    assert all(p.steps <= 8 for p in nest.probes)


def test_no_surviving_probe_is_one_clear_error(data, monkeypatch):
    """When no probe brings the loss clearly down (here: a bar nothing can clear), say so."""
    from landscope.monitor import lr_finder

    monkeypatch.setattr(lr_finder, "CLEARLY_BELOW", 0.0)
    with pytest.raises(ls.LandscopeError, match=r"no probe survived.*probe_steps="):
        ls.find_max_stable_lr(_model(), mse, data, optimizer="nesterov", momentum=0.5, probe_steps=3)


def test_plot_and_table(data, tmp_path):
    from rich.console import Console

    res = ls.find_max_stable_lr(_model(), mse, data)
    path = res.plot(tmp_path / "lr.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    console = Console(record=True, width=120)
    console.print(res.table())
    text = console.export_text()
    assert "predicted largest stable η" in text and f"{res.lr:.4g}" in text
    d = res.as_dict()
    assert d["lr"] == res.lr and isinstance(d["probes"], list)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"optimizer": "lamb"}, r"optimizer must be one of .*got 'lamb'"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\), got 1\.0"),
        ({"optimizer": "nesterov"}, r"'nesterov' needs momentum > 0"),
        ({"batch_size": 0}, r"batch_size must be None .* in \[1, 200\], got 0"),
        ({"rule": "guess"}, r"rule must be one of .*got 'guess'"),
        ({"probe_steps": 0}, r"probe_steps must be None or a positive integer, got 0"),
        ({"steps": 2.5}, r"steps must be None or a positive integer, got 2\.5"),
        ({"warmup_steps": 0}, r"warmup_steps must be a positive integer, got 0"),
        ({"betas": (0.9, 1.0)}, r"betas must be two numbers in \[0, 1\)"),
    ],
)
def test_bad_input_is_named(data, kwargs, match):
    with pytest.raises(ls.InputError, match=match):
        ls.find_max_stable_lr(_model(), mse, data, **kwargs)


def test_bad_model_and_data_are_named(data):
    with pytest.raises(ls.InputError, match="model must be a torch.nn.Module, got str"):
        ls.find_max_stable_lr("mlp", mse, data)
    with pytest.raises(ls.InputError, match=r"data must be an \(X, y\) pair of tensors .*got Tensor"):
        ls.find_max_stable_lr(_model(), mse, data[0])


def _config(tmp_path, **optimizer) -> str:
    cfg = {
        "seed": 0,
        "data": {"name": "mnist1d", "n_train": 200, "n_test": 100},
        "model": {"name": "mlp", "width": 8, "depth": 1, "activation": "tanh"},
        "loss": "mse",
        "optimizer": {"name": "gd", "lr": 0.5, **optimizer},
        "train": {"steps": 100},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_cli_lr_find_prints_a_table_and_saves_the_plot(tmp_path):
    plot = tmp_path / "plot.png"
    result = runner.invoke(app, ["lr-find", _config(tmp_path), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert "predicted largest stable η" in result.output and "within" in result.output
    assert plot.exists() and plot.stat().st_size > 1000


def test_cli_lr_find_with_the_range_test(tmp_path):
    plot = tmp_path / "plot.png"
    result = runner.invoke(
        app, ["lr-find", _config(tmp_path, name="adam", lr=1e-3), "--range-test", "--plot", str(plot)]
    )
    assert result.exit_code == 0, result.output
    assert "LR range test suggests: steepest" in result.output and "min/10" in result.output
    assert plot.exists() and plot.stat().st_size > 1000


def test_cli_lr_find_bad_input_exits_2(tmp_path):
    result = runner.invoke(app, ["lr-find", _config(tmp_path, name="lamb", lr=0.001)])
    assert result.exit_code == 2 and "'lamb'" in result.output and "error" in result.output
    result = runner.invoke(app, ["lr-find", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "not found" in result.output
    assert runner.invoke(app, ["lr-find", "--help"]).exit_code == 0


@pytest.mark.slow
def test_prediction_holds_on_the_edge_of_stability_mlp():
    """configs/eos_mlp.yaml's model: η* = 1.52 on the benchmark's grid (benchmarks/lr_finder.py).

    The predicted η must train 200 steps without diverging and be within 1.5× of η*; 1.5× the
    prediction must diverge (the limit is real, not a conservative floor).
    """
    X, y = load_mnist1d(n_train=1000, n_test=1000).train

    def model():
        torch.manual_seed(0)
        return mlp(40, 10, width=32, depth=2, activation="tanh")

    res = ls.find_max_stable_lr(model(), mse, (X, y))
    assert 1.52 / 1.5 <= res.lr <= 1.52 * 1.5

    def status(lr: float) -> str:
        spec = OptimizerSpec(name="gd", lr=lr)
        return Trainer(model(), mse, (X, y), optimizer=spec, steps=200).fit().status

    assert status(res.lr) == "completed"
    assert status(1.5 * res.lr) == "diverged"
    assert math.isfinite(res.lambda1_init) and res.catapult_factor > 1


def test_readme_choose_a_learning_rate_runs():
    """The README's "Choose a learning rate" example, as written."""
    from reference import run_readme_example

    namespace = run_readme_example("Choose a learning rate")
    found, curve, opt = namespace["found"], namespace["curve"], namespace["opt"]
    assert found.optimizer == "adamw" and found.preconditioned and found.lr > 0
    assert all(g["lr"] == pytest.approx(0.5 * found.lr) for g in opt.param_groups)
    assert set(curve.suggestions) == {"steepest", "min/10"} and curve.suggestion is not None
