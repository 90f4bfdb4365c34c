"""What an experiment hands to the report: claims, figure specifications and tables (data only).

Experiments sit left of the report in the data flow (DESIGN §1), so they do not draw: a
:class:`FigureSpec` names a figure function of :mod:`landscope.report.plots` and the data it
takes, and the report draws it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Claim:
    """One claim of a paper as this experiment measured it.

    ``passed`` is ``None`` when the run could not measure it (say, no instability occurred);
    ``criterion`` is fixed before looking at results and never tuned to pass.
    """

    text: str
    measured: str
    criterion: str
    passed: bool | None
    value: float | None = None

    @property
    def verdict(self) -> str:
        """``pass``, ``fail``, ``reported`` (measured, no criterion) or ``not measured``."""
        return verdict(self.passed, self.criterion)


REPORTED = "reported, no criterion"  # the criterion of a claim measured only to be reported


def verdict(passed: bool | None, criterion: str) -> str:
    """The word a report shows for a claim (also for claims read back from ``claims.json``)."""
    if passed is None:
        return "reported" if criterion == REPORTED else "not measured"
    return "pass" if passed else "fail"


@dataclass(frozen=True)
class FigureSpec:
    """A figure to draw: ``kind`` is a function name in :mod:`landscope.report.plots`."""

    name: str
    kind: str
    data: dict[str, Any]
    caption: str = ""


@dataclass(frozen=True)
class TableSpec:
    """A table of the report."""

    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True)
class ExperimentResult:
    """Everything an experiment measured, for its report and for ``docs/RESULTS.md``."""

    name: str = ""            # name, title, paper, variant, folder, what: filled in by run_experiment
    title: str = ""
    paper: str = ""
    variant: str = ""
    folder: Path = Path(".")
    what: str = ""
    claims: tuple[Claim, ...] = ()
    figures: tuple[FigureSpec, ...] = ()
    tables: tuple[TableSpec, ...] = ()
    runs: tuple[Path, ...] = ()
    notes: tuple[str, ...] = ()
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
