"""Typed figure specs: every class has a plot function, its fields are that function's arguments
(less ``path``) so the two cannot drift, every experiment draws only typed specs, and an unknown
spec type fails with an error naming it."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from landscope.experiments import figures as F
from landscope.report import plots
from landscope.report.figures import PLOTS, draw, plot_function

SRC = Path(__file__).resolve().parents[1] / "src" / "landscope"
BASE_FIELDS = ("name", "caption")


def spec_classes() -> list[type[F.Figure]]:
    """Every concrete spec class of landscope.experiments.figures."""
    return [
        obj
        for _, obj in inspect.getmembers(F, inspect.isclass)
        if issubclass(obj, F.Figure) and obj is not F.Figure and obj.__module__ == F.__name__
    ]


def test_every_spec_class_has_a_registered_plot_function():
    classes = spec_classes()
    assert len(classes) == 8
    assert set(PLOTS) == set(classes)
    for cls in classes:
        fn = PLOTS[cls]
        assert getattr(plots, fn.__name__) is fn, f"{cls.__name__} → {fn.__name__} is not in report.plots"
    assert len({fn for fn in PLOTS.values()}) == len(PLOTS), "two spec classes draw the same figure"


@pytest.mark.parametrize("cls", spec_classes(), ids=lambda c: c.__name__)
def test_spec_fields_are_the_plot_functions_arguments(cls):
    """Same names in the same order, same defaults, same annotations (as written), minus ``path``."""
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
    params = [p for p in inspect.signature(PLOTS[cls]).parameters.values() if p.name != "path"]
    fields = dataclasses.fields(cls)
    assert tuple(f.name for f in fields[:2]) == BASE_FIELDS
    data = fields[2:]
    assert [f.name for f in data] == [p.name for p in params]
    for f, p in zip(data, params, strict=True):
        default = p.default if p.default is not inspect.Parameter.empty else dataclasses.MISSING
        assert f.default == default, f"{cls.__name__}.{f.name}: default {f.default!r} vs {default!r}"
        assert f.default_factory is dataclasses.MISSING
        assert str(f.type) == str(p.annotation), f"{cls.__name__}.{f.name}: {f.type} vs {p.annotation}"
        assert p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)


def test_data_is_the_fields_less_name_and_caption_not_copied():
    values = np.array([3.0, 2.0, 1.0])
    spec = F.SpectrumFigure("spectrum", "top eigenvalues", values=values, title="t")
    data = spec.data()
    assert list(data) == ["values", "density", "title"]
    assert data["density"] is None and data["title"] == "t"
    assert data["values"] is values  # not deep-copied (asdict would turn dataclasses into dicts)


def test_draw_writes_the_named_png(tmp_path):
    spec = F.MetricVsFigure(
        "scan",
        "a scan",
        x=[1.0, 2.0, 3.0],
        series={"y": [1.0, 4.0, 9.0]},
        xlabel="x",
        ylabel="y",
        logy=True,
        marks={"two": 2.0},
    )
    path = draw(spec, tmp_path / "figures")
    assert path == tmp_path / "figures" / "scan.png"
    assert path.read_bytes().startswith(b"\x89PNG")


def test_unknown_spec_type_raises_a_clear_error(tmp_path):
    @dataclass(frozen=True)
    class HistogramFigure(F.Figure):
        values: list[float]

    spec = HistogramFigure("hist", "not registered", values=[1.0])
    with pytest.raises(TypeError, match="HistogramFigure") as err:
        draw(spec, tmp_path)
    assert "PLOTS" in str(err.value)
    with pytest.raises(TypeError, match="'Figure'"):
        plot_function(F.Figure("bare", "the base class draws nothing"))
    assert not list(tmp_path.iterdir())


def test_a_subclass_of_a_registered_spec_draws_with_its_base_function():
    @dataclass(frozen=True)
    class Titled(F.MetricVsFigure):
        pass

    assert plot_function(Titled("a", "b", x=[1.0], series={}, xlabel="", ylabel="")) is plots.metric_vs


def test_experiments_build_only_typed_specs():
    """No experiment names a plot function by string, and every figure class it uses is registered."""
    used: set[str] = set()
    for path in sorted((SRC / "experiments").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id == "FigureSpec":
                pytest.fail(f"{path.name}:{node.lineno} still uses FigureSpec")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id.endswith("Figure")
            ):
                used.add(node.func.id)
    assert used, "no experiment builds a figure spec"
    assert used <= {c.__name__ for c in PLOTS}
