"""The analyses of both papers as pure functions of a run (or of arrays) (DESIGN §6).

- :func:`find_instabilities` / :func:`eos_ratio`: loss spikes with heating and cooling phases, and
  λ₁ against the stability threshold.
- :func:`loss_spikes` / :func:`detection_scores`: δ-free reference spikes, and the recall and
  precision of detected instabilities against them (how δ is chosen).
- :func:`flattening`: λ₁ after each instability against its index ([W&R] landscape flattening).
- :func:`landscape_shift`, :func:`overlap_matrix`, :func:`subspace_overlap`: how the top-k
  eigen-subspace turns across instabilities ([W&R] landscape shift).
- :func:`spectrum` / :func:`outlier_count`, :func:`effective_parameters`,
  :func:`perturbation_test`: outliers vs bulk and the effective parameters.
- :func:`trajectory_similarity`: runs at several η against the low-η baseline.

Definitions marked *ours* in the docstrings are documented choices where the papers' exact rule
could not be checked.
"""

from landscope.analysis.flattening import Flattening, flattening
from landscope.analysis.instabilities import (
    DEFAULT_DELTA,
    SENSITIVITY_DELTAS,
    Instability,
    eos_ratio,
    find_instabilities,
)
from landscope.analysis.perturbation import Perturbation, PerturbationGroup, perturbation_test
from landscope.analysis.shift import (
    Shift,
    eigenvector_series,
    landscape_shift,
    overlap_matrix,
    subspace_overlap,
)
from landscope.analysis.similarity import Similarity, trajectory_similarity
from landscope.analysis.spectrum import (
    EffectiveParameters,
    Spectrum,
    coordinates,
    effective_parameters,
    fraction_in_subspace,
    outlier_count,
    spectrum,
)
from landscope.analysis.spikes import DetectionScore, detection_scores, loss_spikes
from landscope.analysis.trace import Trace, loss_key, trace

__all__ = [
    "Flattening",
    "flattening",
    "Instability",
    "eos_ratio",
    "find_instabilities",
    "Perturbation",
    "PerturbationGroup",
    "perturbation_test",
    "Shift",
    "eigenvector_series",
    "landscape_shift",
    "overlap_matrix",
    "subspace_overlap",
    "Similarity",
    "trajectory_similarity",
    "EffectiveParameters",
    "Spectrum",
    "coordinates",
    "effective_parameters",
    "fraction_in_subspace",
    "outlier_count",
    "spectrum",
    "Trace",
    "loss_key",
    "trace",
    "DetectionScore",
    "detection_scores",
    "loss_spikes",
    "DEFAULT_DELTA",
    "SENSITIVITY_DELTAS",
]
