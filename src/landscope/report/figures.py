"""Drawing the typed figure specs of :mod:`landscope.experiments.figures`, dispatched on their type.

:data:`PLOTS` is the one table from a spec class to the function of :mod:`landscope.report.plots`
that draws it; a spec is drawn with its fields as the function's arguments (see
:meth:`landscope.experiments.figures.Figure.data`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from landscope.experiments.figures import (
    Figure,
    FlatteningFigure,
    LossAndSharpnessFigure,
    MetricVsFigure,
    OutliersOverTimeFigure,
    ShiftMatrixFigure,
    SimilarityFigure,
    SpectrumFigure,
    SweepCurvesFigure,
)
from landscope.report import plots

PLOTS: dict[type[Figure], Callable[..., Path]] = {
    LossAndSharpnessFigure: plots.loss_and_sharpness,
    FlatteningFigure: plots.flattening,
    ShiftMatrixFigure: plots.shift_matrix,
    SpectrumFigure: plots.spectrum_plot,
    OutliersOverTimeFigure: plots.outliers_over_time,
    SimilarityFigure: plots.similarity,
    SweepCurvesFigure: plots.sweep_curves,
    MetricVsFigure: plots.metric_vs,
}


def plot_function(spec: Figure) -> Callable[..., Path]:
    """The plot function registered for ``spec``'s class (or its nearest registered base class)."""
    for cls in type(spec).__mro__:
        fn = PLOTS.get(cls)
        if fn is not None:
            return fn
    known = ", ".join(sorted(c.__name__ for c in PLOTS))
    raise TypeError(
        f"no plot function is registered for figure spec type {type(spec).__qualname__!r} "
        f"({type(spec).__module__}); add it to landscope.report.figures.PLOTS (known: {known})"
    )


def draw(spec: Figure, folder: str | Path) -> Path:
    """Draw ``spec`` into ``folder/<spec.name>.png``; returns the path."""
    fn = plot_function(spec)
    return fn(**spec.data(), path=Path(folder) / f"{spec.name}.png")
