"""landscope: watch the loss landscape while a neural network trains.

The public API (pinned in DESIGN §2)::

    import landscope as ls
    op = ls.HessianOperator(model, loss_fn, (X, y))
    res = ls.eigenpairs(op, k=10)
"""

from landscope.curvature import (
    CurvatureOperator,
    DenseOperator,
    Density,
    EigenResult,
    EigenTracker,
    GGNOperator,
    HessianOperator,
    LayerSelection,
    PreconditionedOperator,
    TraceEstimate,
    adam_preconditioner,
    eigenpairs,
    hutchinson_trace,
    layers,
    power_iteration,
    spectral_density,
    subspace_overlap,
)
from landscope.errors import ConfigError, DataError, InputError, LandscopeError

__version__ = "0.1.0"

__all__ = [
    "CurvatureOperator", "DenseOperator", "GGNOperator", "HessianOperator",
    "PreconditionedOperator", "adam_preconditioner", "eigenpairs", "power_iteration",
    "EigenTracker", "subspace_overlap", "spectral_density", "hutchinson_trace", "layers",
    "LayerSelection", "EigenResult", "Density", "TraceEstimate", "LandscopeError", "InputError",
    "DataError", "ConfigError", "__version__",
]
