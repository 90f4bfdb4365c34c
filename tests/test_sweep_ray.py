"""Sweeps on Ray (DESIGN §7): one task a point, the same folders and metrics as the local pool,
resumable point by point after a killed task; errors surface as the worker raised them."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import landscope as ls
from landscope.cli import app
from landscope.experiments.sweep import PointFailedError, run_point, run_points, sweep_points

BASE = {
    "seed": 0,
    "data": {"name": "mnist1d", "n_train": 200, "n_test": 100},
    "model": {"name": "mlp", "width": 16, "depth": 1, "activation": "tanh"},
    "loss": "mse",
    "optimizer": {"name": "gd", "lr": 0.1},
    "train": {"steps": 40},
    "measure": {"every": 5, "k": 1},
}


@pytest.fixture(scope="module")
def ray():
    """One local Ray (2 CPUs) for the whole module."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def rows(folder: Path) -> list[dict]:
    """metrics.jsonl parsed; no row field is a wall-clock time (timings live in status.json),
    but drop any that ever becomes one so the comparison stays about the numbers."""
    out = []
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        out.append({k: v for k, v in row.items() if not k.endswith(("_seconds", "_time", "_s"))})
    return out


def lines(folder: Path) -> int:
    """Complete lines of metrics.jsonl so far (safe while a worker appends to it)."""
    path = folder / "metrics.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines at the terminal width


def test_ray_sweep_equals_local_pool(ray, tmp_path):
    doc = {**BASE, "sweep": {"optimizer.lr": [0.05, 0.1, 0.2, 0.4], "seed": [0, 1]}}
    on_ray, on_pool = sweep_points(doc, tmp_path / "ray"), sweep_points(doc, tmp_path / "local")
    done = []
    runs = run_points(on_ray, 2, on_done=lambda p, r: done.append(p.folder.name), backend="ray")
    assert sorted(done) == sorted(p.folder.name for p in on_ray)  # a callback per finished point
    assert [r.path for r in runs] == [p.folder for p in on_ray] and {r.state for r in runs} == {"completed"}
    run_points(on_pool, 2)
    for a, b in zip(on_ray, on_pool, strict=True):
        assert a.folder.name == b.folder.name
        got, want = rows(a.folder), rows(b.folder)
        assert len(got) == 41 and sum("eigenvalues" in r for r in got) >= 8
        assert got == want, a.folder.name


def test_killed_ray_task_resumes_only_its_point(ray, tmp_path):
    doc = {**BASE, "sweep": {"train.steps": [40, 200]}}
    short, long = points = sweep_points(doc, tmp_path / "ray")
    task = ray.remote(num_cpus=1)(run_point)
    ref_short, ref_long = (task.remote(p.config, str(p.folder)) for p in points)
    ray.get(ref_short)
    deadline = time.monotonic() + 60
    while not (long.folder / "checkpoints" / "latest.pt").exists() or lines(long.folder) < 40:
        assert time.monotonic() < deadline, "the long point never got going"
        time.sleep(0.05)
    ray.cancel(ref_long, force=True)  # SIGKILL of its worker, mid-run
    with pytest.raises((ray.exceptions.TaskCancelledError, ray.exceptions.WorkerCrashedError)):
        ray.get(ref_long, timeout=30)
    assert json.loads((long.folder / "status.json").read_text())["status"] == "running"
    assert lines(long.folder) < 201
    untouched = {f: (short.folder / f).stat().st_mtime_ns for f in ("metrics.jsonl", "status.json")}

    done = []
    runs = run_points(points, 2, on_done=lambda p, r: done.append(p.folder.name), backend="ray")
    assert sorted(done) == sorted(p.folder.name for p in points)
    assert [r.state for r in runs] == ["completed", "completed"]
    assert {f: (short.folder / f).stat().st_mtime_ns for f in untouched} == untouched  # not re-run
    reference = sweep_points(doc, tmp_path / "local")[1]
    run_points([reference], 1)
    assert rows(long.folder) == rows(reference.folder)
    assert len(rows(long.folder)) == 201


def test_failing_point_raises_the_workers_own_error(ray, tmp_path):
    doc = {**BASE, "train": {"steps": 10}, "sweep": {"seed": [0, 1, 2]}}
    points = sweep_points(doc, tmp_path / "out")
    points[1].folder.parent.mkdir(parents=True)
    points[1].folder.write_text("not a run folder")  # RunStore refuses it inside the task
    done = []
    with pytest.raises(ls.InputError, match="not a directory") as info:
        run_points(points, 2, on_done=lambda p, r: done.append(p.folder.name), backend="ray")
    assert type(info.value) is ls.InputError  # the worker's exception, not a Ray wrapper
    assert sorted(done) == [points[0].folder.name, points[2].folder.name]  # the others finished
    # the CLI turns it into one line and exit code 2, as with the local pool
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(json.dumps(doc))
    r = CliRunner().invoke(app, ["sweep", str(cfg), "--out", str(tmp_path / "out"), "--backend", "ray"])
    assert r.exit_code == 2 and "not a directory" in flat(r.output) and "Traceback" not in r.output


def test_point_whose_worker_dies_is_named(ray, tmp_path, monkeypatch):
    doc = {**BASE, "sweep": {"seed": [0]}}
    (point,) = sweep_points(doc, tmp_path / "out")

    def crashed(*args, **kwargs):
        raise ray.exceptions.WorkerCrashedError()

    monkeypatch.setattr(ray, "get", crashed)
    with pytest.raises(PointFailedError, match=r"seed=0 did not finish on Ray.*run the sweep again"):
        run_points([point], 1, backend="ray")


def test_backend_errors(tmp_path, monkeypatch):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(json.dumps({**BASE, "sweep": {"seed": [0]}}))
    (point,) = sweep_points(cfg, tmp_path / "out")
    with pytest.raises(ls.InputError, match="'slurm'"):
        run_points([point], backend="slurm")
    r = CliRunner().invoke(app, ["sweep", str(cfg), "--backend", "dask"])
    assert r.exit_code == 2 and "unknown --backend 'dask'" in flat(r.output)
    r = CliRunner().invoke(app, ["sweep", str(cfg), "--address", "auto"])
    assert r.exit_code == 2 and "need --backend ray" in flat(r.output)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    r = CliRunner().invoke(app, ["sweep", str(cfg), "--out", str(tmp_path / "out"), "--backend", "ray"])
    assert r.exit_code == 2 and 'pip install "landscope[ray]"' in flat(r.output)
    assert "Traceback" not in r.output and not point.folder.exists()


def test_unreachable_cluster_is_one_line(ray, tmp_path, monkeypatch):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(json.dumps({**BASE, "sweep": {"seed": [0]}}))

    def no_cluster(address=None, **kwargs):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh `landscope` process
    monkeypatch.setattr(ray, "init", no_cluster)
    r = CliRunner().invoke(
        app, ["sweep", str(cfg), "--out", str(tmp_path / "out"), "--backend", "ray", "--address", "auto"]
    )
    assert r.exit_code == 2 and "cannot connect to the Ray cluster at --address 'auto'" in flat(r.output)
