"""``ls.train(config, out)``: build everything a config names, train it into a run folder, resume.

A folder that already holds a run is resumed from its last checkpoint (the config must match the
stored one); a finished run (completed or diverged) is returned as it is.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from landscope.data import Dataset, load_dataset
from landscope.errors import ConfigError
from landscope.models import build_model, get_loss
from landscope.models.init import GRADINIT_STEPS, META_INITS, METAINIT_STEPS
from landscope.training.config import RunConfig, load_config
from landscope.training.store import Run, RunStore, load_run
from landscope.training.trainer import Trainer
from landscope.version import __version__

META_INIT_SAMPLES = 512

INIT_CACHE_FORMAT = 1  # bump when the cache file's layout or key changes meaning
_CACHE_OFF = frozenset({"off", "0", "false", "no", "none"})


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device = {name!r}: not a torch device (use auto, cpu, cuda, cuda:1…)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device = {name!r}, but this machine has no CUDA device (use auto or cpu)")
    return device


def build_dataset(config: RunConfig) -> Dataset:
    """The data set of ``config.data``."""
    return load_dataset(config.data.name, **config.data.loader_kwargs())


def build_run(config: RunConfig, dataset: Dataset | None = None) -> tuple[torch.nn.Module, Callable, Dataset]:
    """Model (initialised, on its device and dtype), loss and data set of a config.

    A meta-initialisation (``model.init`` ``metainit`` or ``gradinit``: seconds to tens of seconds
    each) does not depend on the learning rate or anything else outside ``model``, ``data``,
    ``loss`` and ``seed``, so its result is cached on disk and a sweep over η computes it once a
    seed. The cache folder is ``$LANDSCOPE_CACHE/init`` (default ``~/.cache/landscope/init``);
    ``LANDSCOPE_CACHE=off`` turns the cache off. An entry is the model's state dict after the init,
    keyed by a SHA-256 of everything that determines it (:func:`init_cache_key`): the ``model``
    and ``data`` sections, the loss, the seed, the resolved step count, ``dtype`` and the device
    type, a digest of the init batch itself (so a ``dataset`` override is keyed by its data), torch's
    default dtype, thread count and CPU capability (reductions differ across them), the landscope and
    torch versions with a digest of the source of :mod:`landscope.models`. A hit is bitwise the
    state a fresh init gives; only the :class:`~landscope.models.InitTrace` is not kept, and
    nothing records it (:func:`~landscope.models.build_model` discards it). Files are written
    to a temporary name and renamed into place, so concurrent workers never read a partial
    entry (two computing one entry at once write the same tensors; the last rename wins).
    They are read with ``torch.load(weights_only=True)``, so an entry cannot run code; an
    unreadable or mismatching entry is ignored with a warning and recomputed.
    """
    ds = dataset or build_dataset(config)
    loss_fn = get_loss(config.loss)
    if config.loss == "ce" and ds.n_classes is None:
        raise ConfigError(f"loss = 'ce' needs class labels, but data set {ds.name!r} is a regression")
    n_out = ds.n_classes if ds.n_classes is not None else (ds.y_train.shape[1] if ds.y_train.dim() > 1 else 1)
    g = torch.Generator().manual_seed(config.seed + 104729)
    idx = torch.randperm(ds.X_train.shape[0], generator=g)[:META_INIT_SAMPLES]
    batch = (ds.X_train[idx], ds.y_train[idx])
    m = config.model
    arch: dict[str, Any] = {"width": m.width, "depth": m.depth, "activation": m.activation, "norm": m.norm}

    cache = init_cache_dir() if m.init in META_INITS else None
    key = init_cache_key(config, tuple(ds.input_shape), n_out, batch) if cache is not None else {}
    path = cache / f"{m.init}-{_digest(key)[:40]}.pt" if cache is not None else None
    if path is not None and path.exists():
        # Same architecture and parameter draws as below; the init's result is then loaded.
        model = build_model(m.name, ds.input_shape, n_out, init="default", seed=config.seed, **arch)
        state = _load_init(path, key, model)
        if state is not None:
            model.load_state_dict(state)
            return model, loss_fn, ds
    model = build_model(
        m.name,
        ds.input_shape,
        n_out,
        init=m.init,
        init_scale=m.init_scale,
        seed=config.seed,
        loss_fn=loss_fn,
        init_batch=batch,
        init_steps=m.init_steps,
        **arch,
    )
    if path is not None:
        _save_init(path, key, model)
    return model, loss_fn, ds


def init_cache_dir() -> Path | None:
    """The meta-init cache folder: ``$LANDSCOPE_CACHE/init`` (default ``~/.cache/landscope/init``).

    ``None`` when ``LANDSCOPE_CACHE`` is ``off`` (or ``0``, ``false``, ``no``, ``none``).
    """
    root = os.environ.get("LANDSCOPE_CACHE", "").strip()
    if root.lower() in _CACHE_OFF:
        return None
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "landscope") / "init"


def init_cache_key(
    config: RunConfig, input_shape: tuple[int, ...], n_outputs: int, batch: tuple[torch.Tensor, torch.Tensor]
) -> dict[str, Any]:
    """What a meta-initialisation's result depends on, as a JSON-able dict (see :func:`build_run`)."""
    m = config.model
    steps = (
        m.init_steps
        if m.init_steps is not None
        else (METAINIT_STEPS if m.init == "metainit" else GRADINIT_STEPS)
    )
    h = hashlib.sha256()
    for t in batch:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return {
        "format": INIT_CACHE_FORMAT,
        "model": m.model_dump(mode="json"),
        "data": config.data.model_dump(mode="json"),
        "loss": config.loss,
        "seed": config.seed,
        "init_steps": steps,
        "dtype": config.dtype,
        "device": _device_type(config.device),
        "input_shape": list(input_shape),
        "n_outputs": n_outputs,
        "init_batch": h.hexdigest(),
        "compute": {
            "default_dtype": str(torch.get_default_dtype()),
            "threads": torch.get_num_threads(),
            "cpu": torch.backends.cpu.get_cpu_capability(),
        },
        # str(): torch.__version__ is a TorchVersion, which torch.load(weights_only=True) refuses.
        "versions": {
            "landscope": str(__version__),
            "torch": str(torch.__version__),
            "models_source": _models_source_digest(),
        },
    }


def _digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _device_type(name: str) -> str:
    """``resolve_device(name).type`` without its errors (the init itself runs on the CPU)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return torch.device(name).type
    except RuntimeError:
        return name


@functools.lru_cache(maxsize=1)
def _models_source_digest() -> str:
    """SHA-256 of :mod:`landscope.models`' source: an edit invalidates the cache, without a version bump."""
    import landscope.models

    h = hashlib.sha256()
    for f in sorted(Path(landscope.models.__file__).parent.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def _load_init(path: Path, key: dict[str, Any], model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The cached state dict for ``model``, or ``None`` (with a warning) if ``path`` cannot serve it."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("key") != key:
            raise ValueError("its key does not match this run's")
        state, ref = blob.get("state"), model.state_dict()
        if (
            not isinstance(state, dict)
            or set(state) != set(ref)
            or any(
                not isinstance(state[k], torch.Tensor)
                or state[k].dtype != v.dtype
                or state[k].shape != v.shape
                for k, v in ref.items()
            )
        ):
            raise ValueError("its tensors do not match the model's")
        return state
    except Exception as e:  # a cache must never break a run: any failure means recompute
        why = (str(e).strip().splitlines() or [""])[0][:200]
        warnings.warn(
            f"ignoring init cache file {path} ({type(e).__name__}: {why}); recomputing the init",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def _save_init(path: Path, key: dict[str, Any], model: torch.nn.Module) -> None:
    """Write ``model``'s state dict under ``path`` atomically: a temporary file, then ``os.replace``."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save({"key": key, "state": state}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as e:
        warnings.warn(
            f"could not write init cache file {path} ({e}); the init is not cached",
            RuntimeWarning,
            stacklevel=3,
        )


def _mismatch(stored: RunConfig, given: RunConfig) -> str:
    a, b = stored.without_versions(), given.without_versions()
    diffs = []

    def walk(x: Any, y: Any, key: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y)):
                walk(x.get(k), y.get(k), f"{key}.{k}" if key else k)
        elif x != y:
            diffs.append(f"{key}: stored {x!r}, given {y!r}")

    walk(a, b, "")
    return "; ".join(diffs)


def train(
    config: RunConfig | dict | str | Path | None,
    out: str | Path,
    *,
    progress: bool | Callable = True,
    dataset: Dataset | None = None,
) -> Run:
    """Train the run ``config`` describes into folder ``out`` and return it as a :class:`Run`.

    ``config`` is a :class:`RunConfig`, a mapping or a YAML path; ``None`` resumes whatever run
    ``out`` holds. ``progress``: ``True`` shows a rich progress bar, or pass a callback taking
    each metrics row. ``dataset`` overrides loading the config's data set (tests, sweeps that
    share one in memory).
    """
    out = Path(out)
    with RunStore(out) as store:
        if store.exists:
            stored = store.read_config()
            if config is not None:
                given = load_config(config)
                diff = _mismatch(stored, given)
                if diff:
                    raise ConfigError(
                        f"{out} holds a run with a different config ({diff}); "
                        f"use another folder or the same config to resume it"
                    )
            cfg = stored
            existing = load_run(out)
            if existing.state in ("completed", "diverged"):
                return existing
            resume = store.load_checkpoint()
        elif config is None:
            raise ConfigError(f"{out} holds no run to resume; pass a config")
        else:
            cfg = store.write_config(load_config(config))
            resume = None
        device = resolve_device(cfg.device)
        dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
        model, loss_fn, ds = build_run(cfg, dataset)
        model = model.to(device=device, dtype=dtype)

        def put(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)

        callback, bar = _progress(progress, cfg)
        trainer = Trainer(
            model,
            loss_fn,
            (put(ds.X_train), put(ds.y_train)),
            test_data=(put(ds.X_test), put(ds.y_test)),
            optimizer=cfg.optimizer,
            schedule=cfg.schedule,
            steps=cfg.train.steps,
            batch_size=cfg.train.batch_size,
            measure=cfg.measure,
            clip_norm=cfg.train.clip_norm,
            clip_value=cfg.train.clip_value,
            diverge_factor=cfg.train.diverge_factor,
            seed=cfg.seed,
            checkpoint_every=cfg.train.checkpoint_every,
            store=store,
            progress=callback,
        )
        store.write_status("running", step=int(resume["step"]) if resume else 0, steps=cfg.train.steps)
        try:
            with bar:
                trainer.fit(resume=resume)
        except BaseException as e:
            if not isinstance(e, KeyboardInterrupt):
                store.write_status("failed", error=f"{type(e).__name__}: {e}")
            raise
    return load_run(out)


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _progress(progress: bool | Callable, cfg: RunConfig) -> tuple[Callable | None, Any]:
    """A rich progress bar showing step, loss, λ₁ and the threshold, or the user's callback."""
    if callable(progress):
        return progress, _NoBar()
    if not progress:
        return None, _NoBar()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        transient=False,
    )
    task = bar.add_task("train", total=cfg.train.steps, info="")
    last: dict[str, float | None] = {"lambda1": None, "threshold": None}

    def update(row: dict[str, Any]) -> None:
        if "lambda1" in row:
            last["lambda1"], last["threshold"] = row["lambda1"], row.get("threshold")
        loss = row.get("train_loss")
        info = f"loss {loss:.4g}" if loss is not None else "loss nan"
        if last["lambda1"] is not None:
            info += f"  λ1 {last['lambda1']:.4g}"
        if last["threshold"]:
            info += f"  threshold {last['threshold']:.4g}"
        if row.get("diverged"):
            info += "  [red]diverged"
        bar.update(task, completed=row["step"], info=info)

    return update, bar
