"""Sweeps: a grid of runs, each point its own run folder (DESIGN §2, §7).

A sweep config is a run config plus a ``sweep:`` mapping from dotted keys to lists; the grid is
their product and every point's folder is named from its values.

Points run in a local process pool by default, or as Ray tasks (``backend="ray"``: a local Ray
or a cluster; ``pip install "landscope[ray]"``). Both call the same :func:`run_point` on the same
folders, so a killed sweep resumes point by point whatever ran it: finished folders are returned as
they are and unfinished ones resume from their checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import multiprocessing
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from landscope.errors import ConfigError, InputError, LandscopeError
from landscope.training import Run, load_run, parse_config, train
from landscope.training.config import read_yaml


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


BACKENDS = ("local", "ray")


class PointFailedError(LandscopeError, RuntimeError):
    """A sweep point's worker died before the point finished (run the sweep again to resume it)."""


def run_points(
    points: Sequence[SweepPoint],
    workers: int = 1,
    on_done: Callable[[SweepPoint, Run], None] | None = None,
    *,
    backend: str = "local",
    address: str | None = None,
    gpus_per_point: float = 0.0,
) -> list[Run]:
    """Train every point and return their runs in order; ``on_done`` fires as each one finishes.

    Args:
        points: from :func:`sweep_points` (each trains into its own folder, so any point already
            finished is returned as it is and an interrupted one resumes from its checkpoint).
        workers: ``"local"``: processes of the pool (1: in this process). ``"ray"``: CPUs of the
            Ray started here when there is no ``address`` (one point a CPU).
        on_done: called in this process with each finished point and its run.
        backend: ``"local"`` (a spawn process pool) or ``"ray"`` (one Ray task a point; needs
            ``pip install "landscope[ray]"``). Both train with one torch thread a point, so the
            same folders hold the same metrics whichever ran them.
        address: Ray only: ``None`` starts a local Ray (``ray.init(num_cpus=workers)``);
            ``"auto"`` or ``"ray://host:10001"`` joins a running cluster, whose resources then
            decide how many points run at once. The run folders must be on a filesystem that every
            node sees at the same path. A Ray already initialised in this process is used as it is.
        gpus_per_point: Ray only: GPUs each task reserves (Ray sets ``CUDA_VISIBLE_DEVICES``, so
            ``1`` runs one point on each GPU of the cluster).

    A point whose training raises does not stop the points already under way (in the pool or on
    Ray): they finish, and then the first error is raised as the worker raised it (its own type
    and message, not wrapped). In this process (``workers=1``, local) it stops the sweep at once.
    """
    if backend not in BACKENDS:
        raise InputError(f"unknown sweep backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers!r}")
    if backend == "ray":
        return run_points_ray(points, workers, on_done, address=address, gpus_per_point=gpus_per_point)
    if address is not None or gpus_per_point:
        raise InputError("address and gpus_per_point are options of the ray backend, not of local")
    if workers == 1 or len(points) == 1:
        runs = []
        for p in points:
            run_point(p.config, p.folder)
            runs.append(load_run(p.folder))
            if on_done:
                on_done(p, runs[-1])
        return runs
    ctx = multiprocessing.get_context("spawn")  # fork after torch threads exist can deadlock
    first_error: BaseException | None = None
    with ProcessPoolExecutor(max_workers=min(workers, len(points)), mp_context=ctx) as pool:
        futures = {pool.submit(run_point, p.config, p.folder): p for p in points}
        for fut in as_completed(futures):
            error = fut.exception()
            if error is not None:
                first_error = first_error or error
            elif on_done:
                on_done(futures[fut], load_run(futures[fut].folder))
    if first_error is not None:
        raise first_error  # the worker's own exception, re-raised here
    return [load_run(p.folder) for p in points]


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError(
            'the ray backend needs Ray, which is not installed: pip install "landscope[ray]"'
        ) from None
    return ray


@contextlib.contextmanager
def ray_session(workers: int = 1, address: str | None = None) -> Iterator[Any]:
    """Yield the ``ray`` module with Ray initialised; shut down on exit only what this started.

    ``address=None`` starts a local Ray with ``workers`` CPUs; ``"auto"`` or ``"ray://…"`` connects
    to a cluster. An already initialised Ray is used as it is (``address`` is then ignored).
    """
    ray = _import_ray()
    if ray.is_initialized():
        yield ray
        return
    if address is None:
        ray.init(num_cpus=workers, include_dashboard=False)
    else:
        try:
            ray.init(address=address)
        except ConnectionError as e:
            raise InputError(f"cannot connect to the Ray cluster at --address {address!r}: {e}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def run_points_ray(
    points: Sequence[SweepPoint],
    workers: int = 1,
    on_done: Callable[[SweepPoint, Run], None] | None = None,
    *,
    address: str | None = None,
    gpus_per_point: float = 0.0,
) -> list[Run]:
    """:func:`run_points` on Ray: one task a point, each calling :func:`run_point` on its folder."""
    if not isinstance(gpus_per_point, int | float) or gpus_per_point < 0:
        raise InputError(f"gpus_per_point must be a number ≥ 0, got {gpus_per_point!r}")
    with ray_session(workers, address) as ray:
        # Application errors are not retried (a bad config fails the same way again); a task whose
        # worker died is (Ray's default), and the retry resumes the point from its checkpoint.
        task = ray.remote(num_cpus=1, num_gpus=gpus_per_point, retry_exceptions=False)(run_point)
        # Absolute folders: a Ray worker's working directory is not the driver's.
        refs = {task.remote(p.config, str(p.folder.resolve())): p for p in points}
        pending, first_error = list(refs), None
        while pending:
            (ref,), pending = ray.wait(pending, num_returns=1)
            point = refs[ref]
            try:
                ray.get(ref)
            except ray.exceptions.RayTaskError as e:
                # The worker's own exception, as the local pool would re-raise it.
                first_error = first_error or (e.cause if isinstance(e.cause, Exception) else e)
                continue
            except ray.exceptions.RayError as e:  # worker died, task cancelled, node lost
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                first_error = first_error or PointFailedError(
                    f"sweep point {point.folder} did not finish on Ray ({type(e).__name__}: "
                    f"{reason}); run the sweep again to resume it from its checkpoint"
                )
                continue
            if on_done:
                on_done(point, load_run(point.folder))
    if first_error is not None:
        raise first_error
    return [load_run(p.folder) for p in points]


def run_sweep(
    config: dict[str, Any] | str | Path,
    out: str | Path,
    workers: int = 1,
    on_done: Callable[[SweepPoint, Run], None] | None = None,
    **backend: Any,
) -> tuple[list[SweepPoint], list[Run]]:
    """Run (or resume) a sweep into ``out``; returns its points and their runs.

    ``backend`` holds the keyword options of :func:`run_points` (``backend``, ``address``,
    ``gpus_per_point``).
    """
    points = sweep_points(config, out)
    return points, run_points(points, workers, on_done, **backend)
