"""Training with measurement (DESIGN §4): optimisers and thresholds, schedules, the Trainer, runs.

``ls.train(config, out)`` trains the run a config describes into a run folder (resuming it if
the folder holds one); ``ls.load_run(out)`` reads it back; :class:`Trainer` trains any model.
"""

from landscope.training.config import (
    DataConfig,
    MeasureConfig,
    ModelConfig,
    OptimizerSpec,
    RunConfig,
    ScheduleConfig,
    TrainConfig,
    load_config,
    parse_config,
)
from landscope.training.measure import evaluate
from landscope.training.optim import is_preconditioned, make_optimizer, stability_threshold
from landscope.training.run import build_run, train
from landscope.training.schedules import Schedule, make_schedule
from landscope.training.store import EigenSnapshot, Run, RunLockedError, RunStore, load_run
from landscope.training.trainer import Checkpoint, Trainer, TrainResult

__all__ = [
    "DataConfig",
    "MeasureConfig",
    "ModelConfig",
    "OptimizerSpec",
    "RunConfig",
    "ScheduleConfig",
    "TrainConfig",
    "load_config",
    "parse_config",
    "evaluate",
    "is_preconditioned",
    "make_optimizer",
    "stability_threshold",
    "build_run",
    "train",
    "Schedule",
    "make_schedule",
    "EigenSnapshot",
    "Run",
    "RunLockedError",
    "RunStore",
    "load_run",
    "Checkpoint",
    "Trainer",
    "TrainResult",
]


def __getattr__(name: str) -> object:
    """Deprecated names (see :mod:`landscope.training.config`)."""
    if name == "OptimizerConfig":
        from landscope.training import config

        return config.OptimizerConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
