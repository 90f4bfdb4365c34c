"""Training with measurement (DESIGN §4): optimisers and thresholds, schedules, the Trainer, runs.

``ls.train(config, out)`` trains the run a config describes into a run folder (resuming it if
the folder holds one); ``ls.load_run(out)`` reads it back; :class:`Trainer` trains any model.
"""

from landscope.train.config import (
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
from landscope.train.measure import evaluate
from landscope.train.optim import is_preconditioned, make_optimizer, stability_threshold
from landscope.train.run import build_run, train
from landscope.train.schedules import Schedule, make_schedule
from landscope.train.store import EigenSnapshot, Run, RunLockedError, RunStore, load_run
from landscope.train.trainer import Checkpoint, Trainer, TrainResult

__all__ = [
    "DataConfig", "MeasureConfig", "ModelConfig", "OptimizerSpec", "RunConfig",
    "ScheduleConfig", "TrainConfig", "load_config", "parse_config", "evaluate", "is_preconditioned",
    "make_optimizer", "stability_threshold", "build_run", "train", "Schedule", "make_schedule",
    "EigenSnapshot", "Run", "RunLockedError", "RunStore", "load_run", "Checkpoint", "Trainer",
    "TrainResult",
]


def __getattr__(name: str) -> object:
    """Deprecated names (see :mod:`landscope.train.config`)."""
    if name == "OptimizerConfig":
        from landscope.train import config
        return config.OptimizerConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
