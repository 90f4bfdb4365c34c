"""``ls.train(config, out)``: build everything a config names, train it into a run folder, resume.

A folder that already holds a run is resumed from its last checkpoint (the config must match the
stored one); a finished run (completed or diverged) is returned as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from landscope.data import Dataset, load_dataset
from landscope.errors import ConfigError
from landscope.models import build_model, get_loss
from landscope.train.config import RunConfig, load_config
from landscope.train.store import Run, RunStore, load_run
from landscope.train.trainer import Trainer

META_INIT_SAMPLES = 512


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
    """Model (initialised, on its device and dtype), loss and data set of a config."""
    ds = dataset or build_dataset(config)
    loss_fn = get_loss(config.loss)
    if config.loss == "ce" and ds.n_classes is None:
        raise ConfigError(f"loss = 'ce' needs class labels, but data set {ds.name!r} is a regression")
    n_out = ds.n_classes if ds.n_classes is not None else \
        (ds.y_train.shape[1] if ds.y_train.dim() > 1 else 1)
    g = torch.Generator().manual_seed(config.seed + 104729)
    idx = torch.randperm(ds.X_train.shape[0], generator=g)[:META_INIT_SAMPLES]
    m = config.model
    model = build_model(m.name, ds.input_shape, n_out, width=m.width, depth=m.depth,
                        activation=m.activation, norm=m.norm, init=m.init, init_scale=m.init_scale,
                        seed=config.seed, loss_fn=loss_fn, init_batch=(ds.X_train[idx], ds.y_train[idx]),
                        init_steps=m.init_steps)
    return model, loss_fn, ds


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


def train(config: RunConfig | dict | str | Path | None, out: str | Path, *, progress: bool | Callable = True,
          dataset: Dataset | None = None) -> Run:
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
                    raise ConfigError(f"{out} holds a run with a different config ({diff}); "
                                      f"use another folder or the same config to resume it")
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
        trainer = Trainer(model, loss_fn, (put(ds.X_train), put(ds.y_train)),
                          test_data=(put(ds.X_test), put(ds.y_test)), optimizer=cfg.optimizer,
                          schedule=cfg.schedule, steps=cfg.train.steps, batch_size=cfg.train.batch_size,
                          measure=cfg.measure, clip_norm=cfg.train.clip_norm, clip_value=cfg.train.clip_value,
                          diverge_factor=cfg.train.diverge_factor, seed=cfg.seed,
                          checkpoint_every=cfg.train.checkpoint_every, store=store, progress=callback)
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
    bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[info]}"), transient=False)
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
