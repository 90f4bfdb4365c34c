"""The exact, matrix-free curvature engine: operators, eigensolvers, tracking and densities."""

from landscope.curvature.batch_sharpness import BatchSharpness, batch_sharpness
from landscope.curvature.batches import valid_tokens
from landscope.curvature.density import hutchinson_trace, spectral_density
from landscope.curvature.lanczos import eigenpairs
from landscope.curvature.linear import (
    CurvatureOperator,
    DenseOperator,
    DiagonalOperator,
    IdentityOperator,
    LinearCombination,
    MatvecOperator,
    PreconditionedOperator,
)
from landscope.curvature.operators import (
    GGNOperator,
    HessianOperator,
    ModelCurvatureOperator,
    adam_preconditioner,
)
from landscope.curvature.params import LayerSelection, layers, resolve_params
from landscope.curvature.power import power_iteration
from landscope.curvature.results import Density, EigenResult, TraceEstimate
from landscope.curvature.tracking import EigenTracker, subspace_overlap

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
    "resolve_params",
    "EigenResult",
    "Density",
    "TraceEstimate",
    "valid_tokens",
    "batch_sharpness",
    "BatchSharpness",
]
