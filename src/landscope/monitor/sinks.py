"""Where a :class:`~landscope.monitor.SharpnessMonitor` sends each record.

A sink is a TensorBoard ``SummaryWriter`` (anything with ``add_scalar``), a path ending in ``.csv``
or ``.jsonl`` (the file is truncated when the monitor is built, so it holds one run's records, and
each record is appended and closed at once, so a crash loses nothing written), or any callable
taking the record.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from landscope.errors import InputError
from landscope.monitor.records import Record

Sink = Callable[[Record], None]
CSV_FIELDS = (
    "step",
    "lr",
    "lambda1",
    "threshold",
    "ratio",
    "status",
    "preconditioned",
    "n_matvecs",
    "seconds",
    "eigenvalues",
)


class _CsvSink:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            csv.writer(f).writerow(CSV_FIELDS)

    def __call__(self, record: Record) -> None:
        row = record.as_dict()
        row["eigenvalues"] = json.dumps(row["eigenvalues"])
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow(["" if row[k] is None else row[k] for k in CSV_FIELDS])


class _JsonlSink:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")

    def __call__(self, record: Record) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record.as_dict()) + "\n")


class _TensorBoardSink:
    """``add_scalar`` of λ1, the threshold and their ratio under ``{name}/``, at the record's step."""

    def __init__(self, writer: Any, name: str) -> None:
        self.writer, self.name = writer, name

    def __call__(self, record: Record) -> None:
        for tag, value in record.scalars(self.name).items():
            self.writer.add_scalar(tag, value, record.step)


def make_sink(sink: object, name: str) -> Sink:
    """One sink as a callable; a bad one is an :class:`InputError` naming it."""
    if isinstance(sink, (str, os.PathLike)):
        path = Path(sink)
        if path.suffix == ".csv":
            return _CsvSink(path)
        if path.suffix in (".jsonl", ".ndjson"):
            return _JsonlSink(path)
        raise InputError(f"sink path {str(path)!r} must end in .csv or .jsonl (the suffix picks the format)")
    if callable(getattr(sink, "add_scalar", None)):
        return _TensorBoardSink(sink, name)
    if callable(sink):
        return sink
    raise InputError(
        f"a sink must be a SummaryWriter, a .csv/.jsonl path or a callable(record), got {type(sink).__name__}"
    )


def make_sinks(sinks: object, name: str) -> list[Sink]:
    """``sinks`` as a list of callables: one sink or a sequence of them."""
    if sinks is None:
        return []
    if isinstance(sinks, (str, os.PathLike)) or callable(sinks) or hasattr(sinks, "add_scalar"):
        return [make_sink(sinks, name)]
    if not isinstance(sinks, (tuple, list)):
        raise InputError(f"sinks must be a sink or a tuple of sinks, got {type(sinks).__name__}")
    return [make_sink(s, name) for s in sinks]
