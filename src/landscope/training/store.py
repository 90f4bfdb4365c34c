"""One folder per run (DESIGN §4), written so that a kill at any moment loses nothing.

::

    run/
      config.yaml              resolved config, with seed and package versions
      metrics.jsonl            one JSON object a line, appended and flushed as the run goes
      eigen/step_00000050.npz  eigenvalues, residuals (and vectors) of each measurement
      checkpoints/latest.pt    model, optimiser, tracker and loop state (atomic replace)
      checkpoints/previous.pt  the checkpoint before it (a fallback when latest.pt is damaged)
      status.json              running | completed | diverged | failed, with the step
      .lock                    held (flock) by the process writing the run

Every file other than ``metrics.jsonl`` is written to a temporary name, fsynced and renamed, so a
reader sees the old or the new version, never a torn one. A checkpoint records the length of
``metrics.jsonl`` at its step; resuming truncates the file there (dropping at most the rows after
the checkpoint, and any half-written line) and the deterministic loop writes those rows again.

Run folders get shared, so reading one must never run code: checkpoints hold only tensors and
plain Python values and are read with ``torch.load(weights_only=True)``, never with
``weights_only=False``. A damaged or unsafe ``latest.pt`` falls back to ``previous.pt`` (with a
warning); anything that cannot be read ends in one :class:`~landscope.errors.InputError` naming
the file, which the CLI prints as one line with exit code 2.
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from landscope.errors import ConfigError, InputError, LandscopeError
from landscope.training.checkpoint_file import CheckpointError, checkpoint_advice, read_checkpoint, to_plain
from landscope.training.config import RunConfig, parse_config
from landscope.version import __version__

STATUSES = ("running", "completed", "diverged", "failed")

logger = logging.getLogger(__name__)


class RunLockedError(LandscopeError):
    """Another process is writing this run folder."""


def _write_temporary(path: Path, data: bytes) -> Path:
    """``data`` written and fsynced under a temporary name next to ``path``; returns that name."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def _atomic_write(path: Path, data: bytes) -> None:
    os.replace(_write_temporary(path, data), path)


def versions() -> dict[str, str]:
    """Versions of the packages a result depends on (recorded in ``config.yaml``)."""
    import platform

    return {
        "landscope": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


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
        self._latest_ok: bool | None = None  # whether latest.pt is known good (None: not checked)

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
            raise RunLockedError(
                f"run folder {self.path} is being written by {holder}; two runs never write the same folder"
            ) from None
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
        """Open ``metrics.jsonl`` for appending, first cut back to ``truncate_at`` bytes.

        A resume passes its checkpoint's ``metrics_offset``: the rows kept must then be whole and
        valid (the run appends to them), else an error names the file, rather than a metrics
        file with a gap or a bad line in the middle of it.
        """
        path = self.path / "metrics.jsonl"
        if truncate_at:
            self._check_metrics_prefix(path, truncate_at)
        if truncate_at is not None and path.exists() and path.stat().st_size > truncate_at:
            with open(path, "r+b") as f:
                f.truncate(truncate_at)
                f.flush()
                os.fsync(f.fileno())
        self._metrics = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open while training

    @staticmethod
    def _check_metrics_prefix(path: Path, size: int) -> None:
        """Whether the first ``size`` bytes of ``path`` are the whole rows a checkpoint recorded."""
        have = path.stat().st_size if path.is_file() else 0
        if have < size:
            raise InputError(
                f"{path} holds {have} bytes, fewer than the {size} its checkpoint recorded: "
                f"rows were lost, so the run cannot be resumed; start a new run in another "
                f"folder"
            )
        with open(path, "rb") as f:
            head = f.read(size)
        _, bad = _scan_metrics(head)
        if bad is not None:
            raise ConfigError(_corrupt_metrics(path, bad[0], bad[2], size))
        if not head.endswith(b"\n"):
            raise InputError(
                f"{path} does not match its checkpoint: byte {size}, where the checkpoint's "
                f"rows end, is not the end of a row; start a new run in another folder"
            )

    def append(self, row: dict[str, Any]) -> None:
        """Append one row and flush it to the OS (it survives a kill of this process)."""
        metrics = self._metrics_file()
        metrics.write(json.dumps(row, allow_nan=True) + "\n")
        metrics.flush()

    def metrics_offset(self) -> int:
        """Bytes of ``metrics.jsonl`` written so far (recorded in checkpoints)."""
        metrics = self._metrics_file()
        metrics.flush()
        os.fsync(metrics.fileno())
        return metrics.tell()

    def _metrics_file(self) -> io.TextIOWrapper:
        if self._metrics is None:
            self.open_metrics()
        assert self._metrics is not None  # open_metrics opened it
        return self._metrics

    # -- eigenpairs and checkpoints --------------------------------------------------------
    def save_eigen(
        self,
        step: int,
        values: np.ndarray | None = None,
        residuals: np.ndarray | None = None,
        vectors: np.ndarray | None = None,
        **extra: np.ndarray,
    ) -> Path:
        """Write ``eigen/step_XXXXXXXX.npz`` atomically (eigenpairs and any ``extra`` arrays).

        An extra array may not be named ``file`` or ``allow_pickle``: ``np.savez`` would take it
        for its own argument, not store it.
        """
        clash = sorted(set(extra) & {"file", "allow_pickle"})
        if clash:
            raise InputError(f"RunStore.save_eigen: extra arrays cannot be named {', '.join(clash)}")
        arrays: dict[str, Any] = {k: np.asarray(v) for k, v in extra.items()}
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
        """Write ``checkpoints/latest.pt`` atomically, keeping the one before as ``previous.pt``.

        ``state`` is stored as tensors and plain Python values only (:func:`to_plain`), so that
        :meth:`load_checkpoint` can read it with ``weights_only=True``. The new file is written
        and fsynced under a temporary name, then ``latest.pt`` is renamed to ``previous.pt`` and
        the new file to ``latest.pt``: a kill at any point leaves at least one whole checkpoint
        (a kill between the renames leaves only ``previous.pt``, which :meth:`load_checkpoint`
        then uses). A ``latest.pt`` found damaged by :meth:`load_checkpoint` is not rotated: it
        would replace the good ``previous.pt``.
        """
        buf = io.BytesIO()
        torch.save(to_plain(state), buf)
        latest, previous = self._checkpoint_paths()
        tmp = _write_temporary(latest, buf.getvalue())
        if self._latest_ok is not False and latest.is_file():
            os.replace(latest, previous)
        os.replace(tmp, latest)
        self._latest_ok = True

    def _checkpoint_paths(self) -> tuple[Path, Path]:
        folder = self.path / "checkpoints"
        return folder / "latest.pt", folder / "previous.pt"

    def load_checkpoint(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The latest good checkpoint, or ``None`` when the run has none yet.

        Read with ``torch.load(weights_only=True)``: a checkpoint from someone else's folder
        cannot run code. When ``latest.pt`` is missing, damaged or holds types a safe load
        refuses, ``previous.pt`` is used instead, with a logged warning naming both files (its
        ``metrics_offset`` is earlier, and resuming rewrites the rows after it). When no
        checkpoint can be used, an :class:`InputError` names the file and why.
        """
        latest, previous = self._checkpoint_paths()
        if not latest.is_file() and not previous.is_file():
            return None
        problem: CheckpointError | None = None
        if latest.is_file():
            try:
                state = read_checkpoint(latest, map_location)
            except CheckpointError as e:
                problem = e
                self._latest_ok = False
            else:
                self._latest_ok = True
                return state
        if not previous.is_file():
            assert problem is not None  # latest is a file that failed to load (both missing: None above)
            raise InputError(
                f"checkpoint {latest} {problem.why}, and there is no previous checkpoint to "
                f"fall back on; {checkpoint_advice(self.path)}"
            )
        try:
            state = read_checkpoint(previous, map_location)
        except CheckpointError as e:
            first = "is missing" if problem is None else problem.why
            raise InputError(
                f"no usable checkpoint in {latest.parent}: {latest} {first}, and {previous} "
                f"{e.why}; {checkpoint_advice(self.path)}"
            ) from None
        first = "is missing" if problem is None else problem.why
        logger.warning(
            "checkpoint %s %s; resuming from the previous checkpoint %s (step %s) instead, "
            "and the rows after it are computed again",
            latest,
            first,
            previous,
            state["step"],
        )
        return state


def read_config(path: str | Path) -> RunConfig:
    """The :class:`RunConfig` stored in run folder ``path``."""
    file = Path(path) / "config.yaml"
    if not file.is_file():
        raise InputError(f"{path} is not a run folder (no config.yaml)")
    try:
        doc = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        why = " ".join(str(e).split())[:200]
        raise ConfigError(f"{file} is corrupted: not valid YAML ({why})") from None
    return parse_config(doc, source=str(file))


def _scan_metrics(data: bytes) -> tuple[list[dict[str, Any]], tuple[int, int, str] | None]:
    """The rows in ``metrics.jsonl`` bytes before the first bad line, and where that line is.

    The second value is ``(line number, byte offset, what is wrong)``, or ``None`` when no line is bad.
    A last line without its newline that does not parse is the torn write of a killed run: it is
    dropped, not reported.
    """
    rows: list[dict[str, Any]] = []
    start, number = 0, 1
    while start < len(data):
        end = data.find(b"\n", start)
        torn = end < 0
        chunk = data[start:] if torn else data[start:end]
        try:
            row = json.loads(chunk.decode("utf-8"))
            why = None if isinstance(row, dict) else f"is not a JSON object (it is a {type(row).__name__})"
        except UnicodeDecodeError:
            why = "is not valid UTF-8"
        except json.JSONDecodeError:
            why = "is not valid JSON"
        if why is not None:
            return rows, None if torn else (number, start, why)
        rows.append(row)
        if torn:
            break
        start, number = end + 1, number + 1
    return rows, None


def _resume_offset(path: Path) -> int | None:
    """``metrics_offset`` of the checkpoint a resume of the unfinished run ``path`` would use.

    ``None`` for a finished run (its rows are final) or when no checkpoint can be read.
    """
    if _read_status(path).get("status") in ("completed", "diverged"):
        return None
    store = RunStore(path)
    try:
        state = store.load_checkpoint()
    except LandscopeError:
        return None
    return None if state is None else int(state["metrics_offset"])


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of ``metrics.jsonl``; a half-written last line (a killed run) is skipped.

    A bad line elsewhere is a :class:`ConfigError` naming the file and the line, except in an
    unfinished run when the line lies after the checkpoint a resume would start from: resuming
    rewrites those rows anyway, so the rows before the bad line are returned, with a warning.
    """
    path = Path(path)
    file = path / "metrics.jsonl"
    if not file.is_file():
        return []
    try:
        data = file.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {file}: {e}") from None
    rows, bad = _scan_metrics(data)
    if bad is None:
        return rows
    line, start, why = bad
    offset = _resume_offset(path)
    if offset is not None and start >= offset:
        logger.warning(
            "%s: line %d %s; it lies after the last checkpoint (byte %d) of this unfinished run, "
            "so the rows from it on are ignored, and resuming the run writes them again",
            file,
            line,
            why,
            offset,
        )
        return rows
    raise ConfigError(_corrupt_metrics(file, line, why, offset))


def _corrupt_metrics(file: Path, line: int, why: str, offset: int | None) -> str:
    where = (
        ""
        if offset is None
        else f", before the last checkpoint (byte {offset}), so resuming cannot rewrite it"
    )
    return (
        f"{file} is corrupted: line {line} {why}{where}; restore the file from a copy, or start a new "
        f"run in another folder"
    )


def _read_status(path: Path) -> dict[str, Any]:
    """``status.json`` of run folder ``path`` (``{}`` when absent or unreadable, with a warning).

    The status only summarises the other files: a run without one is resumed from its checkpoint,
    which knows whether the run had finished.
    """
    file = path / "status.json"
    if not file.is_file():
        return {}
    try:
        status = json.loads(file.read_bytes().decode("utf-8"))
        if not isinstance(status, dict):
            raise ValueError(f"it holds a {type(status).__name__}, not an object")
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        logger.warning("ignoring %s, which cannot be read (%s)", file, " ".join(str(e).split())[:200])
        return {}
    return status


@dataclass(frozen=True)
class EigenSnapshot:
    """The eigenpairs stored for one measurement step."""

    step: int
    values: np.ndarray | None
    residuals: np.ndarray | None
    vectors: np.ndarray | None
    params: np.ndarray | None = None  # θ at the step (measure.save_params)
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
            raise InputError(
                f"run {self.path} has no eigenpairs at step {step} (measured steps: {self.eigen_steps[:5]}…)"
            )
        try:
            with np.load(file) as f:
                return EigenSnapshot(
                    step,
                    f.get("values"),
                    f.get("residuals"),
                    f.get("vectors"),
                    f.get("params"),
                    f.get("test_predictions"),
                )
        except Exception as e:  # np.load never unpickles here (allow_pickle is False)
            why = " ".join(f"{type(e).__name__}: {e}".split())[:200]
            raise InputError(f"{file} is corrupt or truncated ({why})") from None

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
    return Run(path=path, config=config, metrics=read_metrics(path), status=_read_status(path))
