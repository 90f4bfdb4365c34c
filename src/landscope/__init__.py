"""landscope: watch the loss landscape while a neural network trains.

The public API (pinned in DESIGN §2)::

    import landscope as ls
    op = ls.HessianOperator(model, loss_fn, (X, y))
    res = ls.eigenpairs(op, k=10)
    run = ls.train("configs/eos_mlp.yaml", "runs/eos")   # train while measuring; resumes

``ls.train`` is the function; the training subpackage is :mod:`landscope.training`
(``from landscope.training import RunStore, Trainer, …``; the old ``landscope.train`` imports
still work, with a deprecation warning).
"""

from landscope import analysis, distributed
from landscope.curvature import (
    CurvatureOperator,
    DenseOperator,
    Density,
    DiagonalOperator,
    EigenResult,
    EigenTracker,
    GGNOperator,
    HessianOperator,
    IdentityOperator,
    LayerSelection,
    LinearCombination,
    MatvecOperator,
    ModelCurvatureOperator,
    PreconditionedOperator,
    TraceEstimate,
    adam_preconditioner,
    batch_sharpness,
    eigenpairs,
    hutchinson_trace,
    layers,
    power_iteration,
    spectral_density,
    subspace_overlap,
    valid_tokens,
)
from landscope.errors import ConfigError, DataError, InputError, LandscopeError
from landscope.monitor import SharpnessMonitor, find_max_stable_lr, lr_range_test
from landscope.training import (
    OptimizerSpec,
    Run,
    RunConfig,
    Trainer,
    load_config,
    load_run,
    stability_threshold,
    train,
)
from landscope.version import __version__

__all__ = [
    "CurvatureOperator",
    "DenseOperator",
    "DiagonalOperator",
    "IdentityOperator",
    "LinearCombination",
    "MatvecOperator",
    "ModelCurvatureOperator",
    "GGNOperator",
    "HessianOperator",
    "PreconditionedOperator",
    "adam_preconditioner",
    "eigenpairs",
    "power_iteration",
    "EigenTracker",
    "subspace_overlap",
    "spectral_density",
    "hutchinson_trace",
    "layers",
    "LayerSelection",
    "EigenResult",
    "Density",
    "TraceEstimate",
    "LandscopeError",
    "InputError",
    "DataError",
    "ConfigError",
    "__version__",
    "OptimizerSpec",
    "Run",
    "RunConfig",
    "Trainer",
    "load_config",
    "load_run",
    "stability_threshold",
    "train",
    "analysis",
    "distributed",
    "SharpnessMonitor",
    "find_max_stable_lr",
    "lr_range_test",
    "valid_tokens",
    "batch_sharpness",
]
