"""Run configs (pydantic from YAML) and the `landscope train` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import landscope as ls
from landscope.cli import app
from landscope.training import RunConfig, load_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_example_configs_are_valid(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    assert yaml.safe_load(path.read_text())["optimizer"]["name"] == cfg.optimizer.name


def test_defaults_fill_the_pinned_keys():
    cfg = load_config({})
    d = cfg.resolved()
    assert set(d) >= {"seed", "data", "model", "loss", "optimizer", "schedule", "train", "measure"}
    assert d["train"]["batch_size"] is None and d["measure"]["every"] == 50


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"optimiser": {"name": "gd"}}, r"optimiser: unknown key"),
        ({"optimizer": {"lr": -0.1}}, r"optimizer.lr = -0.1: Input should be greater than 0"),
        ({"optimizer": {"lr": "fast"}}, r"optimizer.lr = 'fast'"),
        ({"optimizer": {"name": "lion"}}, r"optimizer.name = 'lion'"),
        ({"train": {"steps": 0}}, r"train.steps = 0"),
        ({"train": {"steps": 10, "bacth_size": 4}}, r"train.bacth_size: unknown key"),
        ({"measure": {"k": -1}}, r"measure.k = -1"),
        ({"model": {"norm": "group"}}, r"model.norm = 'group'"),
        ({"data": {"name": "imagenet"}}, r"data.name = 'imagenet'"),
        (
            {"data": {"name": "src", "separation": 2.0, "colour": 1}},
            r"unknown key 'colour' for data set 'src'",
        ),
        ({"optimizer": {"name": "gd"}, "train": {"batch_size": 32}}, r"full-batch.*got 32"),
        ({"loss": "ce", "data": {"name": "wreg"}}, r"regression"),
        ({"optimizer": {"betas": [0.9, 1.5]}}, r"betas\[1\] must be in \[0, 1\), got 1.5"),
        ({"measure": {"last_layers": 1, "first_layers": 1}}, r"choose one of"),
    ],
)
def test_bad_configs_name_key_and_value(doc, match):
    with pytest.raises(ls.ConfigError, match=match):
        load_config(doc)


def test_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optimizer: {name: gd, lr: 0.1\ntrain: [")
    with pytest.raises(ls.ConfigError, match=r"malformed YAML at line \d+"):
        load_config(bad)
    with pytest.raises(ls.ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("sweep: {optimizer.lr: [0.1, 0.2]}\n")
    with pytest.raises(ls.ConfigError, match="sweep config"):
        load_config(sweep)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ls.ConfigError, match="expected a mapping"):
        load_config(scalar)


def _tiny(tmp_path: Path, **over) -> Path:
    cfg = {
        "seed": 0,
        "data": {"name": "src", "n_train": 200, "n_test": 100, "dim": 8, "n_classes": 4},
        "model": {"name": "mlp", "width": 8, "depth": 1},
        "loss": "ce",
        "optimizer": {"name": "sgd", "lr": 0.1},
        "train": {"steps": 30, "batch_size": 50},
        "measure": {"every": 10, "k": 2},
        **over,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_train_writes_a_run_and_prints_a_summary(tmp_path):
    cfg = _tiny(tmp_path)
    result = CliRunner().invoke(app, ["train", str(cfg), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "completed" in result.output and "λ₁" in result.output
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 31 and "eigenvalues" in rows[-1]
    again = CliRunner().invoke(app, ["train", str(cfg), "--out", str(tmp_path / "run")])
    assert again.exit_code == 0 and "completed" in again.output


def test_cli_train_bad_config_exits_2(tmp_path):
    bad = _tiny(tmp_path, optimizer={"name": "sgd", "lr": -1})
    result = CliRunner().invoke(app, ["train", str(bad), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "optimizer.lr = -1" in result.output
    assert not (tmp_path / "run").exists()
    missing = CliRunner().invoke(app, ["train", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "not found" in missing.output
