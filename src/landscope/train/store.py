"""One folder per run (DESIGN §4), written so that a kill at any moment loses nothing.

::

    run/
      config.yaml              resolved config, with seed and package versions
      metrics.jsonl            one JSON object a line, appended and flushed as the run goes
      eigen/step_00000050.npz  eigenvalues, residuals (and vectors) of each measurement
      checkpoints/latest.pt    model, optimiser, tracker and loop state (atomic replace)
      status.json              running | completed | diverged | failed, with the step
      .lock                    held (flock) by the process writing the run

Every file other than ``metrics.jsonl`` is written to a temporary name, fsynced and renamed, so a
reader sees the old or the new version, never a torn one. A checkpoint records the length of
``metrics.jsonl`` at its step; resuming truncates the file there (dropping at most the rows after
the checkpoint, and any half-written line) and the deterministic loop writes those rows again.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from landscope.errors import ConfigError, InputError, LandscopeError
from landscope.train.config import RunConfig, parse_config

STATUSES = ("running", "completed", "diverged", "failed")


class RunLockedError(LandscopeError):
    """Another process is writing this run folder."""


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def versions() -> dict[str, str]:
    """Versions of the packages a result depends on (recorded in ``config.yaml``)."""
    import platform

    import landscope
    return {"landscope": landscope.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


class RunStore:
    """Writer of one run folder. ``with RunStore(path) as store:`` holds the folder's lock.

    The lock is an ``flock`` on ``.lock``: the kernel drops it when the writing process dies (even
    by SIGKILL), so a killed run can be resumed at once, while two live writers are refused.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"run folder {self.path} exists and is not a directory")
        self._lock_file: io.BufferedRandom | None = None
        self._metrics: io.TextIOWrapper | None = None

    # -- lifetime ---------------------------------------------------------------------------
    def __enter__(self) -> RunStore:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the folder's lock (creating the folder); raise if another process holds it."""
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "eigen").mkdir(exist_ok=True)
        (self.path / "checkpoints").mkdir(exist_ok=True)
        f = open(self.path / ".lock", "a+b")  # noqa: SIM115 - held for the store's life
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().decode(errors="replace").strip() or "another process"
            f.close()
            raise RunLockedError(f"run folder {self.path} is being written by {holder}; "
                                 f"two runs never write the same folder") from None
        f.truncate(0)
        f.write(f"pid {os.getpid()}".encode())
        f.flush()
        self._lock_file = f

    def release(self) -> None:
        """Close the metrics file and drop the lock."""
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if self._lock_file is not None:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    # -- config and status ------------------------------------------------------------------
    @property
    def exists(self) -> bool:
        """Whether the folder already holds a run (its config was written)."""
        return (self.path / "config.yaml").is_file()

    def write_config(self, config: RunConfig) -> RunConfig:
        """Write the resolved config with the package versions; return it as written."""
        config = config.model_copy(update={"versions": versions()})
        text = yaml.safe_dump(config.resolved(), sort_keys=False)
        _atomic_write(self.path / "config.yaml", text.encode())
        return config

    def read_config(self) -> RunConfig:
        """The config stored in the folder."""
        return read_config(self.path)

    def write_status(self, status: str, **fields: Any) -> None:
        """Replace ``status.json`` (``status`` is one of :data:`STATUSES`)."""
        if status not in STATUSES:
            raise InputError(f"status must be one of {STATUSES}, got {status!r}")
        doc = {"status": status, **fields, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        _atomic_write(self.path / "status.json", json.dumps(doc, indent=1).encode())

    # -- metrics ----------------------------------------------------------------------------
    def file_descriptors(self) -> tuple[int, ...]:
        """The descriptors this store holds open (a forked helper process closes its copies)."""
        return tuple(f.fileno() for f in (self._lock_file, self._metrics) if f is not None)

    def open_metrics(self, truncate_at: int | None = None) -> None:
        """Open ``metrics.jsonl`` for appending, first cut back to ``truncate_at`` bytes."""
        path = self.path / "metrics.jsonl"
        if truncate_at is not None and path.exists() and path.stat().st_size > truncate_at:
            with open(path, "r+b") as f:
                f.truncate(truncate_at)
                f.flush()
                os.fsync(f.fileno())
        self._metrics = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open while training

    def append(self, row: dict[str, Any]) -> None:
        """Append one row and flush it to the OS (it survives a kill of this process)."""
        if self._metrics is None:
            self.open_metrics()
        self._metrics.write(json.dumps(row, allow_nan=True) + "\n")
        self._metrics.flush()

    def metrics_offset(self) -> int:
        """Bytes of ``metrics.jsonl`` written so far (recorded in checkpoints)."""
        if self._metrics is None:
            self.open_metrics()
        self._metrics.flush()
        os.fsync(self._metrics.fileno())
        return self._metrics.tell()

    # -- eigenpairs and checkpoints --------------------------------------------------------
    def save_eigen(self, step: int, values: np.ndarray | None = None, residuals: np.ndarray | None = None,
                   vectors: np.ndarray | None = None, **extra: np.ndarray) -> Path:
        """Write ``eigen/step_XXXXXXXX.npz`` atomically (eigenpairs and any ``extra`` arrays)."""
        arrays = {k: np.asarray(v) for k, v in extra.items()}
        if values is not None:
            arrays["values"] = np.asarray(values, np.float64)
            arrays["residuals"] = np.asarray(residuals, np.float64)
        if vectors is not None:
            arrays["vectors"] = np.asarray(vectors, np.float32)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        path = self.path / "eigen" / f"step_{step:08d}.npz"
        _atomic_write(path, buf.getvalue())
        return path

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Write ``checkpoints/latest.pt`` atomically (the previous one stays until the rename)."""
        buf = io.BytesIO()
        torch.save(state, buf)
        _atomic_write(self.path / "checkpoints" / "latest.pt", buf.getvalue())

    def load_checkpoint(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The latest checkpoint, or ``None`` when the run has none yet."""
        path = self.path / "checkpoints" / "latest.pt"
        if not path.is_file():
            return None
        return torch.load(path, map_location=map_location, weights_only=False)


def read_config(path: str | Path) -> RunConfig:
    """The :class:`RunConfig` stored in run folder ``path``."""
    file = Path(path) / "config.yaml"
    if not file.is_file():
        raise InputError(f"{path} is not a run folder (no config.yaml)")
    return parse_config(yaml.safe_load(file.read_text()), source=str(file))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of ``metrics.jsonl``; a half-written last line (a killed run) is skipped."""
    file = Path(path) / "metrics.jsonl"
    if not file.is_file():
        return []
    rows = []
    lines = file.read_text(encoding="utf-8").splitlines(keepends=True)
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1 and not line.endswith("\n"):
                break  # torn final line of a killed writer
            raise ConfigError(f"{file}: line {i + 1} is not valid JSON") from None
    return rows


@dataclass(frozen=True)
class EigenSnapshot:
    """The eigenpairs stored for one measurement step."""

    step: int
    values: np.ndarray | None
    residuals: np.ndarray | None
    vectors: np.ndarray | None
    params: np.ndarray | None = None            # θ at the step (measure.save_params)
    test_predictions: np.ndarray | None = None  # predicted classes on the test set


@dataclass(frozen=True)
class Run:
    """A run read back from its folder: what analyses and reports consume.

    ``metrics`` holds every row; ``measurements`` the measurement rows; ``series(key)`` gives
    aligned step and value arrays (NaN where a row lacks the key).
    """

    path: Path
    config: RunConfig
    metrics: list[dict[str, Any]]
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def measurements(self) -> list[dict[str, Any]]:
        """Measurement rows (they carry ``threshold``; ``eigenvalues`` too when ``measure.k`` > 0)."""
        return [r for r in self.metrics if "threshold" in r or "eigenvalues" in r]

    @property
    def cadence_measurements(self) -> list[dict[str, Any]]:
        """Measurement rows of the regular ``measure.every`` cadence (not those around instabilities).

        Statistics over time (medians, trends) read these, so that the dense measurements around
        instabilities do not weigh those few steps more.
        """
        return [r for r in self.measurements if not r.get("around_instability")]

    @property
    def eigen_steps(self) -> list[int]:
        """Steps with an ``eigen/step_*.npz`` file, ascending."""
        return sorted(int(p.stem.split("_")[1]) for p in (self.path / "eigen").glob("step_*.npz"))

    def eigen(self, step: int) -> EigenSnapshot:
        """The eigenpairs measured at ``step``."""
        file = self.path / "eigen" / f"step_{step:08d}.npz"
        if not file.is_file():
            raise InputError(f"run {self.path} has no eigenpairs at step {step} "
                             f"(measured steps: {self.eigen_steps[:5]}…)")
        with np.load(file) as f:
            return EigenSnapshot(step, f.get("values"), f.get("residuals"), f.get("vectors"),
                                 f.get("params"), f.get("test_predictions"))

    def series(self, key: str, rows: list[dict[str, Any]] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of one metric over the rows that carry it."""
        rows = [r for r in (self.metrics if rows is None else rows) if key in r]
        vals = [np.nan if r[key] is None else r[key] for r in rows]
        return np.array([r["step"] for r in rows]), np.array(vals, dtype=float)

    @property
    def state(self) -> str:
        """``running``, ``completed``, ``diverged`` or ``failed``."""
        return self.status.get("status", "running")


def load_run(path: str | Path) -> Run:
    """Read the run in folder ``path`` (complete or not) for analysis."""
    path = Path(path)
    config = read_config(path)
    status_file = path / "status.json"
    status = json.loads(status_file.read_text()) if status_file.is_file() else {}
    return Run(path=path, config=config, metrics=read_metrics(path), status=status)
