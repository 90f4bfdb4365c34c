"""What an experiment hands to the report: claims, figure specifications and tables (data only).

Experiments sit left of the report in the data flow (DESIGN §1), so they do not draw: a typed
figure spec of :mod:`landscope.experiments.figures` (one class per figure function of
:mod:`landscope.report.plots`) holds the data the figure takes, and the report draws it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from scipy.stats import t as student_t

from landscope.experiments.figures import Figure


@dataclass(frozen=True)
class Region:
    """The side of a statistic a claim puts it on: ``lo < x < hi`` (``closed``: ``lo ≤ x ≤ hi``)."""

    lo: float = -math.inf
    hi: float = math.inf
    closed: bool = False

    def contains(self, x: float) -> bool:
        """Whether ``x`` lies in the region."""
        if self.closed:
            return self.lo <= x <= self.hi
        return self.lo < x < self.hi

    def verdict(self, lo: float, hi: float) -> str:
        """``pass`` when all of ``[lo, hi]`` is inside, ``fail`` when none of it is, else ``inconclusive``."""
        if self.contains(lo) and self.contains(hi):
            return PASS
        outside = hi < self.lo or lo > self.hi or (not self.closed and (hi <= self.lo or lo >= self.hi))
        return FAIL if outside else INCONCLUSIVE


def below(x: float) -> Region:
    """``value < x``."""
    return Region(hi=x)


def above(x: float) -> Region:
    """``value > x``."""
    return Region(lo=x)


def between(lo: float, hi: float) -> Region:
    """``lo ≤ value ≤ hi``."""
    return Region(lo, hi, closed=True)


def at_least(x: float) -> Region:
    """``value ≥ x`` (for a 0/1 outcome per seed: ``at_least(1)`` means it held)."""
    return Region(x, math.inf, closed=True)


PASS, FAIL, INCONCLUSIVE, REPORTED_VERDICT, NOT_MEASURED = (
    "pass",
    "fail",
    "inconclusive",
    "reported",
    "not measured",
)
REPORTED = "reported, no criterion"  # the criterion of a claim measured only to be reported


def _number(x: Any) -> float | None:
    """``x`` as a finite float, or ``None`` (anything ``float`` refuses, and non-finite numbers)."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def interval95(values: Sequence[float | None]) -> tuple[float, float] | None:
    """Student-t 95 % interval of the mean over seeds: mean ± t₀.₉₇₅,ₙ₋₁ · s/√n.

    ``None`` with fewer than two finite values. Identical values (discrete outcomes such as a
    grid step or 0/1) give a zero-width interval at that value.
    """
    xs = [v for v in (_number(x) for x in values) if v is not None]
    if len(xs) < 2:
        return None
    n, mean = len(xs), sum(xs) / len(xs)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(student_t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def decide(values: Sequence[float | None], region: Region | None) -> tuple[tuple[float, float] | None, str]:
    """``(interval, verdict)`` of per-seed values against the claimed region.

    ``reported`` without a region; ``not measured`` without a finite value; ``inconclusive`` with
    one finite value (no interval: a single seed, or the only seed that could be measured, says
    nothing about the spread); otherwise the three-way verdict of :meth:`Region.verdict` on the
    95 % interval.
    """
    if region is None:
        return interval95(values), REPORTED_VERDICT
    xs = [v for v in (_number(x) for x in values) if v is not None]
    if not xs:
        return None, NOT_MEASURED
    ci = interval95(xs)
    if ci is None:
        return None, INCONCLUSIVE
    return ci, region.verdict(*ci)


@dataclass(frozen=True)
class Claim:
    """One claim of a paper as an experiment measured it, over one or more seeds.

    ``value`` is the claim's statistic (fixed before the runs, like ``region``: the side the claim
    puts it on, ``None`` for a claim that is only reported); ``measured`` says it in words for the
    first seed. After :func:`combine_seeds`, ``seeds`` holds the statistic of every seed and
    ``verdict`` is three-way on their 95 % interval. ``by_delta`` holds, for claims that depend on
    the instability threshold, the per-seed statistic at each δ of the sensitivity set.
    """

    text: str
    measured: str
    criterion: str
    value: float | None
    region: Region | None
    seeds: tuple[float | None, ...] = ()
    by_delta: tuple[tuple[float, tuple[float | None, ...]], ...] = ()

    def __post_init__(self) -> None:
        if not self.seeds:
            object.__setattr__(self, "seeds", (_number(self.value),))
        object.__setattr__(self, "value", _number(self.value))

    @property
    def interval(self) -> tuple[float, float] | None:
        """The 95 % interval of the per-seed statistic (``None`` below two finite seeds)."""
        return decide(self.seeds, self.region)[0]

    @property
    def verdict(self) -> str:
        """``pass``, ``fail``, ``inconclusive``, ``reported`` or ``not measured``."""
        return decide(self.seeds, self.region)[1]

    @property
    def passed(self) -> bool | None:
        """``True`` for pass, ``False`` for fail, ``None`` otherwise."""
        return {PASS: True, FAIL: False}.get(self.verdict)

    @property
    def mean(self) -> float | None:
        """Mean of the finite per-seed values."""
        xs = [v for v in (_number(x) for x in self.seeds) if v is not None]
        return sum(xs) / len(xs) if xs else None

    def sensitivity(self) -> list[tuple[float, tuple[float | None, ...], tuple[float, float] | None, str]]:
        """``(δ, per-seed values, interval, verdict)`` at each δ of the sensitivity set."""
        return [(d, vals, *decide(vals, self.region)) for d, vals in self.by_delta]


def verdict(passed: bool | None, criterion: str) -> str:
    """The word for a claim read back from an old ``claims.json`` (before per-seed verdicts)."""
    if passed is None:
        return REPORTED_VERDICT if criterion == REPORTED else NOT_MEASURED
    return PASS if passed else FAIL


def claim_doc(c: Claim) -> dict[str, Any]:
    """A claim as ``claims.json`` stores it."""
    ci = c.interval
    return {
        "text": c.text,
        "measured": c.measured,
        "criterion": c.criterion,
        "passed": c.passed,
        "value": c.mean,
        "seeds": list(c.seeds),
        "interval": list(ci) if ci else None,
        "verdict": c.verdict,
        "sensitivity": [
            {"delta": d, "seeds": list(v), "interval": list(i) if i else None, "verdict": w}
            for d, v, i, w in c.sensitivity()
        ],
    }


@dataclass(frozen=True)
class TableSpec:
    """A table of the report."""

    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True)
class ExperimentResult:
    """Everything an experiment measured, for its report and for ``docs/RESULTS.md``."""

    name: str = ""  # name, title, paper, variant, folder, what: filled in by run_experiment
    title: str = ""
    paper: str = ""
    variant: str = ""
    folder: Path = Path(".")
    what: str = ""
    claims: tuple[Claim, ...] = ()
    figures: tuple[Figure, ...] = ()
    tables: tuple[TableSpec, ...] = ()
    runs: tuple[Path, ...] = ()
    notes: tuple[str, ...] = ()
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)  # the seeds (initialisation and data order) every claim ran at


def combine_seeds(results: Sequence[ExperimentResult], seeds: Sequence[int]) -> ExperimentResult:
    """One result from the same experiment run at each seed: every claim gets its per-seed values.

    Claims are matched by their text (a claim a seed could not state counts as not measured
    there); ``measured``, the figures and the tables are the first seed's.
    """
    if not results:
        raise ValueError("combine_seeds needs at least one result")
    texts: list[str] = []
    for r in results:
        texts += [c.text for c in r.claims if c.text not in texts]
    claims = []
    for text in texts:
        found = [next((c for c in r.claims if c.text == text), None) for r in results]
        first = next(c for c in found if c is not None)
        values = tuple(c.value if c is not None else None for c in found)
        deltas = [d for d, _ in first.by_delta]
        by_delta = tuple((d, tuple(_delta_value(c, d) for c in found)) for d in deltas)
        claims.append(replace(first, seeds=values, by_delta=by_delta))
    head = results[0]
    per_seed = TableSpec(
        "Claims per seed", ("claim", *(f"seed {s}" for s in seeds)), tuple((c.text, *c.seeds) for c in claims)
    )
    tables = (*head.tables, per_seed) if len(seeds) > 1 else head.tables
    return replace(
        head,
        claims=tuple(claims),
        tables=tables,
        runs=tuple(p for r in results for p in r.runs),
        seeds=tuple(seeds),
        notes=(*head.notes, *(n for r in results[1:] for n in r.notes if n not in head.notes)),
    )


def _delta_value(claim: Claim | None, delta: float) -> float | None:
    if claim is None:
        return None
    for d, vals in claim.by_delta:
        if d == delta:
            return vals[0] if vals else None
    return None
