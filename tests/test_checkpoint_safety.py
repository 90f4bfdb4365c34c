"""Run folders are safe and robust to load: damaged or planted checkpoints and metrics files.

A checkpoint is read with ``torch.load(weights_only=True)`` only, so a shared folder cannot run
code; a damaged ``latest.pt`` falls back to ``previous.pt``; what cannot be used ends
``landscope train`` (or ``analyze``, ``report``) with exit code 2 and one message naming the file.
One tiny run is made uninterrupted and one is stopped at step 25 (checkpoints at steps 10 and 20);
each test damages a copy of the stopped one and resumes it with the CLI.
"""

from __future__ import annotations

import io
import json
import logging
import random
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import landscope as ls
from landscope.cli import app
from landscope.curvature import EigenResult
from landscope.training import RunStore

CONFIG = {
    "seed": 0,
    "data": {"name": "src", "n_train": 200, "n_test": 100, "dim": 8, "n_classes": 4},
    "model": {"name": "mlp", "width": 8, "depth": 1},
    "loss": "ce",
    "optimizer": {"name": "sgd", "lr": 0.1},
    "train": {"steps": 30, "batch_size": 50},
    "measure": {"every": 10, "k": 2},
}
STOP_AT = 25  # checkpoints at steps 10 (previous.pt) and 20 (latest.pt)


class _StopError(Exception):
    pass


def _stop_at(step: int):
    def progress(row: dict) -> None:
        if row["step"] == step:
            raise _StopError

    return progress


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    ls.train(config, root / "reference", progress=False)
    with pytest.raises(_StopError):
        ls.train(config, root / "stopped", progress=_stop_at(STOP_AT))
    return {"config": config, "reference": root / "reference", "stopped": root / "stopped"}


@pytest.fixture()
def run(made, tmp_path) -> Path:
    """A copy of the stopped run (latest.pt at step 20, previous.pt at step 10)."""
    return Path(shutil.copytree(made["stopped"], tmp_path / "run"))


def _resume(made, folder: Path):
    return CliRunner().invoke(app, ["train", str(made["config"]), "--out", str(folder)])


def _flat(text: str) -> str:
    return "".join(text.split())


def _assert_resumed_identically(made, folder: Path, result) -> None:
    assert result.exit_code == 0, result.output
    assert (folder / "metrics.jsonl").read_bytes() == (made["reference"] / "metrics.jsonl").read_bytes()
    for name in ("latest.pt", "previous.pt"):  # both kept checkpoints are good ones again
        assert isinstance(torch.load(folder / "checkpoints" / name, weights_only=True), dict)


def _assert_clear_failure(result, *names: object) -> None:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output and "error:" in result.output
    for name in names:
        assert _flat(str(name)) in _flat(result.output), result.output


def _warnings(caplog) -> str:
    return _flat(" ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING))


# -- damaged checkpoints ------------------------------------------------------------------------
def _half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(0).randbytes(4096))


def _zip_with_garbage(path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", random.Random(1).randbytes(300))
        z.writestr("archive/version", "3\n")
    path.write_bytes(buf.getvalue())


def _not_a_checkpoint(path: Path) -> None:
    torch.save({"weights": torch.ones(3)}, path)


DAMAGE = [_half, _empty, _random_bytes, _zip_with_garbage, _not_a_checkpoint]


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_latest_resumes_from_previous(made, run, damage, caplog):
    latest, previous = run / "checkpoints" / "latest.pt", run / "checkpoints" / "previous.pt"
    damage(latest)
    with caplog.at_level(logging.WARNING, logger="landscope.training.store"):
        result = _resume(made, run)
    _assert_resumed_identically(made, run, result)
    said = _warnings(caplog)
    assert _flat(str(latest)) in said and _flat(str(previous)) in said and "(step10)" in said


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_latest_without_a_good_previous_exits_2(made, run, damage):
    latest, previous = run / "checkpoints" / "latest.pt", run / "checkpoints" / "previous.pt"
    damage(latest)
    previous.unlink()
    _assert_clear_failure(_resume(made, run), latest, "no previous checkpoint")
    previous.write_bytes(b"")  # a damaged previous.pt: both files named
    _assert_clear_failure(_resume(made, run), latest, previous)


def test_a_kill_between_the_renames_resumes_from_previous(made, run):
    (run / "checkpoints" / "latest.pt").unlink()  # save_checkpoint renames latest → previous first
    _assert_resumed_identically(made, run, _resume(made, run))


def test_checkpoints_hold_plain_values_and_the_one_before_is_kept(made, tmp_path):
    latest = torch.load(made["reference"] / "checkpoints" / "latest.pt", weights_only=True)
    previous = torch.load(made["reference"] / "checkpoints" / "previous.pt", weights_only=True)
    assert latest["final"] and latest["step"] == previous["step"] == 30 and not previous.get("final")
    state = RunStore(made["reference"]).load_checkpoint()
    assert isinstance(state["measurer"]["tracker"]["previous"], EigenResult)  # rebuilt on load

    store = RunStore(tmp_path / "r")
    store.acquire()
    base = {
        "step": 1,
        "model": {},
        "optimizer": {},
        "measurer": None,
        "theta0": torch.zeros(2),
        "initial_loss": np.float64(2.5),
        "clip_count": np.int64(0),
        "metrics_offset": 0,
    }
    extra = {"a": np.arange(3), "v": torch.__version__, "f": np.float32(1.5)}
    store.save_checkpoint({**base, "extra": extra})
    back = store.load_checkpoint()
    assert type(back["initial_loss"]) is float and type(back["clip_count"]) is int
    assert isinstance(back["extra"]["a"], np.ndarray) and back["extra"]["a"].tolist() == [0, 1, 2]
    assert type(back["extra"]["v"]) is str and back["extra"]["f"] == 1.5
    with pytest.raises(ls.InputError, match=r"extra.*weights_only=True"):
        store.save_checkpoint({**base, "extra": object()})
    assert store.load_checkpoint()["extra"]["v"] == str(torch.__version__)  # the failed save changed nothing


def test_an_older_landscope_checkpoint_is_refused_clearly(made, run):
    latest = run / "checkpoints" / "latest.pt"
    state = RunStore(run).load_checkpoint()
    torch.save(state, latest)  # as landscope saved before: an EigenResult pickled as a class
    (run / "checkpoints" / "previous.pt").unlink()
    result = _resume(made, run)
    _assert_clear_failure(result, latest, "older landscope")


# -- planted code -------------------------------------------------------------------------------
def _plant(marker: str) -> None:
    Path(marker).write_text("code ran")


class _Payload:
    """Unpickling this calls ``how`` with the marker's path."""

    def __init__(self, marker: Path, how: str) -> None:
        self.marker, self.how = str(marker), how

    def __reduce__(self):
        if self.how == "exec":
            return exec, (f"open({self.marker!r}, 'w').write('code ran')",)
        return _plant, (self.marker,)


def _plant_checkpoint(path: Path, marker: Path, how: str) -> None:
    torch.save({"step": 20, "model": _Payload(marker, how), "metrics_offset": 0}, path)


@pytest.mark.parametrize("how", ["function", "exec"])
def test_planted_code_is_never_run(made, run, tmp_path, how, caplog):
    marker = tmp_path / "marker"
    latest = run / "checkpoints" / "latest.pt"
    _plant_checkpoint(latest, marker, how)
    with caplog.at_level(logging.WARNING, logger="landscope.training.store"):
        result = _resume(made, run)
    assert not marker.exists(), "resuming ran code from the checkpoint"
    _assert_resumed_identically(made, run, result)
    assert "couldruncode" in _warnings(caplog)

    _plant_checkpoint(latest, marker, how)
    (run / "checkpoints" / "previous.pt").unlink()
    with pytest.raises(ls.InputError, match="could run code"):
        RunStore(run).load_checkpoint()
    assert not marker.exists(), "loading ran code from the checkpoint"


def test_planted_code_without_previous_exits_2(made, run, tmp_path):
    marker = tmp_path / "marker"
    latest = run / "checkpoints" / "latest.pt"
    _plant_checkpoint(latest, marker, "function")
    (run / "checkpoints" / "previous.pt").unlink()
    _assert_clear_failure(_resume(made, run), latest, "could run code")
    assert not marker.exists()


def test_every_checkpoint_load_is_weights_only(made, run, monkeypatch):
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    _half(run / "checkpoints" / "latest.pt")  # both files are read
    assert RunStore(run).load_checkpoint()["step"] == 10
    assert calls and all(w is True for w in calls), calls


# -- damaged metrics.jsonl ----------------------------------------------------------------------
def _offset(run: Path) -> int:
    return RunStore(run).load_checkpoint()["metrics_offset"]


def _replace_line(file: Path, index: int, text: bytes) -> None:
    lines = file.read_bytes().splitlines(keepends=True)
    lines[index] = text
    file.write_bytes(b"".join(lines))


def _line_after(file: Path, offset: int) -> int:
    """Index of the first line starting at or after byte ``offset``."""
    return file.read_bytes()[:offset].count(b"\n")


def test_garbage_before_the_checkpoint_offset_exits_2(made, run):
    metrics = run / "metrics.jsonl"
    assert _line_after(metrics, _offset(run)) > 5
    _replace_line(metrics, 4, b"\x00garbage\xff{\n")
    result = _resume(made, run)
    _assert_clear_failure(result, metrics, "line 5")


@pytest.mark.parametrize("text", [b"{not json\n", b"\xff\xfe\n", b"[1, 2]\n"])
def test_garbage_after_the_checkpoint_offset_is_rewritten(made, run, text, caplog):
    metrics = run / "metrics.jsonl"
    index = _line_after(metrics, _offset(run)) + 2
    _replace_line(metrics, index, text)
    with caplog.at_level(logging.WARNING, logger="landscope.training.store"):
        result = _resume(made, run)
    _assert_resumed_identically(made, run, result)
    assert f"line{index + 1}" in _warnings(caplog)


def test_a_torn_last_line_is_rewritten(made, run):
    with open(run / "metrics.jsonl", "ab") as f:
        f.write(b'{"step": 26, "lr": 0.')
    _assert_resumed_identically(made, run, _resume(made, run))


def test_metrics_shorter_than_the_checkpoint_offset_exits_2(made, run):
    metrics = run / "metrics.jsonl"
    metrics.write_bytes(metrics.read_bytes()[: _offset(run) // 2])
    _assert_clear_failure(_resume(made, run), metrics)


def test_an_unreadable_status_file_is_ignored(made, run):
    (run / "status.json").write_bytes(b"\x00\x01 not json")
    _assert_resumed_identically(made, run, _resume(made, run))


def test_analysis_of_corrupted_metrics_names_file_and_line(made, tmp_path):
    done = Path(shutil.copytree(made["reference"], tmp_path / "done"))
    metrics = done / "metrics.jsonl"
    _replace_line(metrics, 30, b"garbage\n")  # the last row of a finished run: final, not rewritten
    with pytest.raises(ls.ConfigError, match="line 31 is not valid JSON"):
        ls.load_run(done)
    for command in (["analyze", str(done)], ["report", str(done)]):
        result = CliRunner().invoke(app, command)
        _assert_clear_failure(result, metrics, "line 31")
    assert json.loads((done / "status.json").read_text())["status"] == "completed"


def test_eigen_files_keep_extra_arrays_and_refuse_clashing_names(tmp_path):
    store = RunStore(tmp_path / "r")
    store.acquire()
    store.save_eigen(3, np.array([2.0, 1.0]), np.array([1e-7, 1e-7]), None, params=np.arange(4.0))
    with np.load(tmp_path / "r" / "eigen" / "step_00000003.npz") as f:
        assert f["values"].tolist() == [2.0, 1.0] and f["params"].tolist() == [0.0, 1.0, 2.0, 3.0]
    for name in ("file", "allow_pickle"):
        with pytest.raises(ls.InputError, match=f"cannot be named {name}"):
            store.save_eigen(4, np.array([1.0]), np.array([0.0]), None, **{name: np.zeros(1)})
    assert not (tmp_path / "r" / "eigen" / "step_00000004.npz").exists()
