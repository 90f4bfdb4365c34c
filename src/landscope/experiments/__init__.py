"""Named experiments of both papers (DESIGN §7), sweeps, and the run cache they share.

``run_experiment("wang2023.lr_sweep", "quick", out)`` returns an :class:`ExperimentResult` (claims,
typed figure specs of :mod:`landscope.experiments.figures`, tables);
:func:`landscope.report.html.render_experiment` draws and writes it.
"""

from landscope.experiments.figures import Figure
from landscope.experiments.registry import (
    EXPERIMENTS,
    PAPERS,
    VARIANTS,
    Context,
    Experiment,
    get_experiment,
    list_experiments,
    run_experiment,
)
from landscope.experiments.results import Claim, ExperimentResult, TableSpec
from landscope.experiments.sweep import SweepPoint, run_sweep, sweep_points

__all__ = [
    "EXPERIMENTS",
    "PAPERS",
    "VARIANTS",
    "Context",
    "Experiment",
    "get_experiment",
    "list_experiments",
    "run_experiment",
    "Claim",
    "ExperimentResult",
    "Figure",
    "TableSpec",
    "SweepPoint",
    "run_sweep",
    "sweep_points",
]
