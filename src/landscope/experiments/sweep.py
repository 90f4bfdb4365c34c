"""Sweeps: a grid of runs, each point its own run folder (DESIGN §2, §7).

A sweep config is a run config plus a ``sweep:`` mapping from dotted keys to lists; the grid is
their product and every point's folder is named from its values.

Points run in a local process pool by default. A killed sweep resumes point by point: finished
folders are returned as they are and unfinished ones resume from their checkpoints.
"""

from __future__ import annotations

import copy
import itertools
import multiprocessing
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from landscope.errors import ConfigError
from landscope.train import Run, load_run, parse_config, train
from landscope.train.config import read_yaml


@dataclass(frozen=True)
class SweepPoint:
    """One grid point: its overrides, its full config (a dict) and its folder."""

    values: dict[str, Any]
    config: dict[str, Any]
    folder: Path


def set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    """``config["a"]["b"] = value`` for ``key = "a.b"`` (creating sections as needed)."""
    parts = key.split(".")
    node = config
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"sweep key {key!r}: {p!r} is not a section")
    node[parts[-1]] = value


def point_name(values: dict[str, Any]) -> str:
    """A folder name from a point's values: ``optimizer.lr=0.1,seed=0`` (filesystem-safe)."""
    text = ",".join(f"{k}={v}" for k, v in values.items()) or "base"
    return re.sub(r"[^A-Za-z0-9_.=,+-]", "_", text)


def grid(sweep: dict[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the sweep's values, in the order the keys are given."""
    if not isinstance(sweep, dict) or not sweep:
        raise ConfigError("sweep: expected a non-empty mapping from dotted keys to lists of values")
    for key, values in sweep.items():
        if not isinstance(values, list | tuple) or not values:
            raise ConfigError(f"sweep.{key} = {values!r}: expected a non-empty list of values")
    keys = list(sweep)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(sweep[k] for k in keys))]


def sweep_points(config: dict[str, Any] | str | Path, out: str | Path) -> list[SweepPoint]:
    """The validated grid points of a sweep config (a mapping or a YAML path)."""
    doc = read_yaml(config) if isinstance(config, str | Path) else copy.deepcopy(config)
    if not isinstance(doc, dict) or "sweep" not in doc:
        raise ConfigError(f"{config}: a sweep config needs a 'sweep:' mapping of dotted keys to lists")
    sweep = doc.pop("sweep")
    points = []
    for values in grid(sweep):
        cfg = copy.deepcopy(doc)
        for k, v in values.items():
            set_dotted(cfg, k, v)
        parse_config(cfg, source=f"sweep point {point_name(values)}")  # every point valid up front
        points.append(SweepPoint(values, cfg, Path(out) / point_name(values)))
    return points


def run_point(config: dict[str, Any], folder: str | Path, threads: int = 1) -> str:
    """Train one point (in a worker process); one torch thread, so results match across backends."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        train(config, folder, progress=False)
    finally:
        torch.set_num_threads(old)
    return str(folder)


def run_points(points: Sequence[SweepPoint], workers: int = 1,
               on_done: Callable[[SweepPoint, Run], None] | None = None) -> list[Run]:
    """Train every point (``workers`` processes; 1: in this process) and return their runs in order."""
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if workers == 1 or len(points) == 1:
        runs = []
        for p in points:
            run_point(p.config, p.folder)
            runs.append(load_run(p.folder))
            if on_done:
                on_done(p, runs[-1])
        return runs
    ctx = multiprocessing.get_context("spawn")  # fork after torch threads exist can deadlock
    with ProcessPoolExecutor(max_workers=min(workers, len(points)), mp_context=ctx) as pool:
        futures = {pool.submit(run_point, p.config, p.folder): p for p in points}
        for fut in as_completed(futures):
            fut.result()  # re-raise a worker's error here
            if on_done:
                on_done(futures[fut], load_run(futures[fut].folder))
    return [load_run(p.folder) for p in points]


def run_sweep(config: dict[str, Any] | str | Path, out: str | Path, workers: int = 1,
              on_done: Callable[[SweepPoint, Run], None] | None = None) -> tuple[list[SweepPoint], list[Run]]:
    """Run (or resume) a sweep into ``out``; returns its points and their runs."""
    points = sweep_points(config, out)
    return points, run_points(points, workers, on_done)
