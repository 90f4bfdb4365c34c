"""Typed figure specifications: which figure an experiment draws, and the data it takes.

Experiments sit left of the report in the data flow (DESIGN §1), so they do not draw. Each class
here stands for one figure function of :mod:`landscope.report.plots`: its fields are ``name`` (the
PNG's file stem), ``caption`` and then exactly that function's arguments other than ``path``, with
the same names, types and defaults. :mod:`landscope.report.figures` maps each class to its function
and draws it; ``tests/test_figure_specs.py`` checks the fields and the signatures agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from landscope.analysis import DEFAULT_DELTA, Flattening, Instability, Similarity
from landscope.curvature import Density
from landscope.training import Run

__all__ = [
    "Figure",
    "LossAndSharpnessFigure",
    "FlatteningFigure",
    "ShiftMatrixFigure",
    "SpectrumFigure",
    "OutliersOverTimeFigure",
    "SimilarityFigure",
    "SweepCurvesFigure",
    "MetricVsFigure",
]


@dataclass(frozen=True)
class Figure:
    """A figure of an experiment's report: ``name`` is the file stem, ``caption`` its caption."""

    name: str
    caption: str

    def data(self) -> dict[str, Any]:
        """The plot function's arguments (every field but ``name`` and ``caption``), not copied."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("name", "caption")}


@dataclass(frozen=True)
class LossAndSharpnessFigure(Figure):
    """:func:`landscope.report.plots.loss_and_sharpness`: loss and λ₁ against the threshold."""

    run: Run
    instabilities: list[Instability] | None = None
    delta: float = DEFAULT_DELTA


@dataclass(frozen=True)
class FlatteningFigure(Figure):
    """:func:`landscope.report.plots.flattening`: λ₁ after each instability (one series per run)."""

    results: Flattening | dict[str, Flattening]


@dataclass(frozen=True)
class ShiftMatrixFigure(Figure):
    """:func:`landscope.report.plots.shift_matrix`: top-k subspace overlap between measurements."""

    run: Run
    instabilities: list[Instability] | None = None


@dataclass(frozen=True)
class SpectrumFigure(Figure):
    """:func:`landscope.report.plots.spectrum_plot`: top eigenvalues (and the SLQ density)."""

    values: np.ndarray
    density: Density | None = None
    title: str = ""


@dataclass(frozen=True)
class OutliersOverTimeFigure(Figure):
    """:func:`landscope.report.plots.outliers_over_time`: k* and the top eigenvalues over time."""

    run: Run


@dataclass(frozen=True)
class SimilarityFigure(Figure):
    """:func:`landscope.report.plots.similarity`: similarity to the low-η baseline over time."""

    sim: Similarity


@dataclass(frozen=True)
class SweepCurvesFigure(Figure):
    """:func:`landscope.report.plots.sweep_curves`: loss and λ₁ (or λ₁/threshold) of several runs."""

    runs: list[Run]
    labels: list[str]
    ratio: bool = False


@dataclass(frozen=True)
class MetricVsFigure(Figure):
    """:func:`landscope.report.plots.metric_vs`: measured quantities against a swept parameter."""

    x: list[float]
    series: dict[str, Sequence[float]]
    xlabel: str
    ylabel: str
    logx: bool = False
    logy: bool = False
    title: str = ""
    marks: dict[str, float] | None = None
