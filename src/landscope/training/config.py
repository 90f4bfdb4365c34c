"""Run configuration: pydantic models of the YAML keys pinned in DESIGN §2, and their loader.

Every level forbids unknown keys, so a typo is an error, not a silently ignored setting. Errors
come out as one :class:`~landscope.errors.ConfigError` whose lines each name the dotted key and the
bad value (``optimizer.lr = -0.1: must be greater than 0``).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from landscope.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(BaseModel):
    """``data:``: the data set and its size; loader-specific keys (``dim``, ``root``…) pass through.

    ``seed`` is the data set's own generator seed (``None``: the loader's default), independent of
    the run's seed, so runs with different seeds can share one data set.
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    name: Literal["mnist1d", "wreg", "src", "fashion_mnist", "cifar10"] = "mnist1d"
    n_train: int | None = Field(1000, gt=0)
    n_test: int | None = Field(1000, gt=0)

    @model_validator(mode="after")
    def _known_loader_keys(self) -> DataConfig:
        extra = dict(self.model_extra or {})
        if not extra:
            return self
        from landscope.data import registry

        allowed = set(inspect.signature(registry.LOADERS[self.name]).parameters) - {"n_train", "n_test"}
        for key in extra:
            if key not in allowed:
                raise ValueError(
                    f"unknown key {key!r} for data set {self.name!r} "
                    f"(its keys: {', '.join(sorted(allowed)) or 'none'})"
                )
        return self

    def loader_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`landscope.data.load_dataset`."""
        kw = {"n_train": self.n_train, "n_test": self.n_test, **(self.model_extra or {})}
        return {k: v for k, v in kw.items() if v is not None}


class ModelConfig(_Section):
    """``model:``: architecture, normalisation and initialisation (DESIGN §5)."""

    name: Literal["mlp", "cnn", "resnet_lite"] = "mlp"
    width: int = Field(64, gt=0)
    depth: int = Field(2, ge=0)
    activation: Literal["tanh", "relu", "gelu", "elu", "sigmoid", "identity"] = "tanh"
    norm: Literal["none", "batch", "layer"] = "none"
    init: Literal["default", "scaled", "fixup", "metainit", "gradinit"] = "default"
    init_scale: float = Field(1.0, gt=0)
    init_steps: int | None = Field(None, gt=0)


class OptimizerSpec(_Section):
    """``optimizer:``; also the :class:`OptimizerSpec` that ``ls.stability_threshold`` accepts.

    ``gd`` is full-batch SGD; ``sgd`` is minibatch SGD without momentum; ``momentum`` is PyTorch's
    heavy-ball form (v ← βv + g, θ ← θ − ηv); ``nesterov`` PyTorch's Nesterov form.
    """

    name: Literal["gd", "sgd", "momentum", "nesterov", "adam", "adamw"] = "gd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _betas_in_range(self) -> OptimizerSpec:
        for i, b in enumerate(self.betas):
            if not 0 <= b < 1:
                raise ValueError(f"betas[{i}] must be in [0, 1), got {b}")
        return self


class ScheduleConfig(_Section):
    """``schedule:``: η as a pure function of the step (see :mod:`landscope.training.schedules`).

    ``warmup_steps`` composes a linear warmup with any schedule.
    """

    name: Literal["constant", "step", "delayed_decay", "cosine", "cyclic"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    milestones: tuple[int, ...] = ()  # step: multiply η by gamma at each milestone
    gamma: float = Field(0.1, gt=0)
    delay: int | None = Field(None, ge=0)  # delayed_decay: hold η₀ for `delay` steps (T_d)
    decay: Literal["step", "linear", "cosine"] = "step"  # delayed_decay: shape after the delay
    final_factor: float = Field(0.1, ge=0)  # delayed_decay / cosine: final η = final_factor·η₀
    lr_low: float | None = Field(None, gt=0)  # cyclic: η_low (default η_high / ratio)
    ratio: float | None = Field(None, ge=1)  # cyclic: r = η_high / η_low
    period: int | None = Field(None, gt=1)  # cyclic: steps of one low → high → low cycle

    @model_validator(mode="after")
    def _needed_keys(self) -> ScheduleConfig:
        if self.name == "step" and not self.milestones:
            raise ValueError("schedule 'step' needs milestones (steps at which η is multiplied by gamma)")
        if self.name == "delayed_decay" and self.delay is None:
            raise ValueError("schedule 'delayed_decay' needs delay (steps at the initial η before decaying)")
        if self.name == "cyclic":
            if self.period is None:
                raise ValueError("schedule 'cyclic' needs period (steps of one low → high → low cycle)")
            if (self.lr_low is None) == (self.ratio is None):
                raise ValueError("schedule 'cyclic' needs exactly one of lr_low and ratio")
        return self


class TrainConfig(_Section):
    """``train:``: length, batch size, clipping, divergence and checkpointing."""

    steps: int = Field(800, gt=0)
    batch_size: int | None = Field(None, gt=0)  # None: full batch
    clip_norm: float | None = Field(None, gt=0)
    clip_value: float | None = Field(None, gt=0)
    diverge_factor: float = Field(1000.0, gt=1)  # diverged when loss > factor × initial loss
    checkpoint_every: int | None = Field(None, gt=0)  # None: at every measurement


class MeasureConfig(_Section):
    """``measure:``: what is measured every ``every`` steps (DESIGN §4).

    ``hessian_samples``: size of the fixed, seeded Hessian set drawn from the training set (None:
    all of it). ``model_mode``: ``train`` measures the function being trained (BatchNorm with the
    statistics of each chunk of ``chunk_size``, default the training batch size); ``eval`` uses
    the running statistics. ``preconditioned``: Adam's P⁻¹H (None: for Adam/AdamW only).
    ``tol`` is the eigensolver's relative residual r = ‖Hv − θv‖/|θ₁|. The eigenvalue error is
    quadratic in it (≲ r²|θ₁|/gap), so 1e-3 gives λ₁ to about 1e-6 relative and the vectors to
    about 1e-3/relative gap, at a fraction of the products of 1e-6. ``background``: measure a
    snapshot of θ in one worker process while training goes on (one more core busy; the rows are
    the same, written in order once their measurement is back).

    ``around_instabilities``: instabilities last a few steps, far fewer than ``every``, so the
    trainer also watches the loss online with the rule of :mod:`landscope.training.detector` (one
    detector per δ of ``around_deltas``, default the analyses' δ) and measures every step from
    ``around_before`` steps before each start to ``around_after`` steps after its end. The steps
    before a start are measured after the fact from a ring buffer of the last ``around_before``
    parameter snapshots; their rows wait that long before being written. Those rows carry
    ``around_instability: true``; the regular cadence is unchanged. Full-batch runs only (a
    minibatch loss fluctuates by more than δ).
    """

    every: int = Field(50, gt=0)
    k: int = Field(1, ge=0)
    hessian_samples: int | None = Field(None, gt=0)
    tol: float = Field(1e-3, gt=0, lt=1)
    model_mode: Literal["train", "eval"] = "train"
    chunk_size: int | None = Field(None, gt=0)
    preconditioned: bool | None = None
    check_multiplicity: bool | None = None  # None: the probe of ls.eigenpairs
    params: tuple[str, ...] | None = None  # names or glob patterns (default: all)
    last_layers: int | None = Field(None, gt=0)  # the k-layer approximation of [W&R]
    first_layers: int | None = Field(None, gt=0)
    cache: bool = True  # keep the linearisation between products
    save_vectors: bool = True
    save_params: bool = False  # θ at each measurement (trajectory analyses)
    save_predictions: bool = False  # test-set predictions at each measurement
    test: bool = True  # test loss/accuracy at measurements
    background: bool = False  # measure snapshots in a worker process
    around_instabilities: bool = False  # also measure every step around each instability
    around_deltas: tuple[float, ...] | None = None  # δ of the online detectors (None: the default δ)
    around_before: int = Field(1, ge=1)  # steps measured before each start (ring buffer)
    around_after: int = Field(1, ge=1)  # steps measured after each end

    @model_validator(mode="after")
    def _around_deltas_positive(self) -> MeasureConfig:
        for d in self.around_deltas or ():
            if not d > 0:
                raise ValueError(f"around_deltas must be positive, got {d}")
        if self.around_deltas is not None and not self.around_deltas:
            raise ValueError("around_deltas must hold at least one δ (or be null for the default)")
        return self

    @model_validator(mode="after")
    def _one_param_selection(self) -> MeasureConfig:
        chosen = [n for n in ("params", "last_layers", "first_layers") if getattr(self, n) is not None]
        if len(chosen) > 1:
            raise ValueError(f"choose one of params, last_layers, first_layers; got {', '.join(chosen)}")
        return self


class RunConfig(_Section):
    """A whole run: the YAML file of ``landscope train`` (DESIGN §2)."""

    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: Literal["mse", "ce"] = "mse"
    optimizer: OptimizerSpec = OptimizerSpec()
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()
    measure: MeasureConfig = MeasureConfig()
    device: Literal["auto", "cpu", "cuda"] | str = "auto"
    dtype: Literal["float32", "float64"] = "float32"
    name: str | None = None
    versions: dict[str, str] | None = None  # filled in by the run store; informational

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if self.optimizer.name == "gd" and self.train.batch_size is not None:
            raise ValueError(
                f"optimizer 'gd' is full-batch, so train.batch_size must be null "
                f"(got {self.train.batch_size}); use 'sgd' for minibatches"
            )
        if self.measure.around_instabilities and self.train.batch_size is not None:
            raise ValueError(
                f"measure.around_instabilities needs full-batch training (train.batch_size "
                f"null), got batch_size {self.train.batch_size}: a minibatch loss fluctuates "
                f"by more than δ"
            )
        if self.loss == "ce" and self.data.name == "wreg":
            raise ValueError("loss 'ce' needs class labels; data set 'wreg' is a regression (use mse)")
        return self

    def resolved(self) -> dict[str, Any]:
        """Plain dict of every key (defaults filled in), as written to ``config.yaml``."""
        return self.model_dump(mode="json")

    def without_versions(self) -> dict[str, Any]:
        """The settings that define the run (what resuming must match)."""
        d = self.resolved()
        d.pop("versions", None)
        d.pop("name", None)
        return d


def _format(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key (value {e['input']!r})")
        elif e["type"] == "missing":
            lines.append(f"{key}: required key is missing")
        elif "input" in e and not isinstance(e["input"], dict):
            lines.append(f"{key} = {e['input']!r}: {msg}")
        else:
            lines.append(f"{key}: {msg}")
    return "; ".join(lines)


def parse_config(data: Any, source: str = "config", model: type[BaseModel] = RunConfig) -> Any:
    """Validate a mapping as a run config; errors name each bad key and value."""
    if isinstance(data, model):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{source}: {_format(e)}") from None


def read_yaml(path: str | Path) -> Any:
    """The YAML document at ``path``; a missing file or malformed YAML is a :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: malformed YAML{where}: {getattr(e, 'problem', e)}") from None


def load_config(source: RunConfig | dict | str | Path) -> RunConfig:
    """A :class:`RunConfig` from a config object, a mapping, or a YAML file path."""
    if isinstance(source, RunConfig):
        return source
    if isinstance(source, dict):
        return parse_config(source)
    data = read_yaml(source)
    if isinstance(data, dict) and "sweep" in data:
        raise ConfigError(f"{source} is a sweep config (it has a 'sweep' key): run it with `landscope sweep`")
    return parse_config(data if data is not None else {}, source=str(source))


def __getattr__(name: str) -> object:
    """``OptimizerConfig``: the optimiser section's second name, kept for old imports."""
    if name == "OptimizerConfig":
        import warnings

        warnings.warn(
            "OptimizerConfig is OptimizerSpec (the pinned name); import OptimizerSpec",
            DeprecationWarning,
            stacklevel=2,
        )
        return OptimizerSpec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
