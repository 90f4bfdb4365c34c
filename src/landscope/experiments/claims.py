"""Each paper claim defined once: its statistic, the side the claim puts it on, and its words.

Every experiment that tests a claim calls its function here, so the same claim cannot carry two
criteria in two experiments. A claim function reads analysis results of one seed's runs and
returns a :class:`~landscope.experiments.results.Claim` with that seed's statistic; the registry
combines the seeds. Claims that depend on the instability threshold δ are built with
:func:`over_deltas`, which also evaluates them at every δ of the sensitivity set.

All criteria were fixed before the runs of issue 13 and are never tuned to pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from landscope.analysis import (
    DEFAULT_DELTA,
    SENSITIVITY_DELTAS,
    find_instabilities,
    flattening,
    landscape_shift,
)
from landscope.experiments.common import eos_ratio_after_reaching, fmt, spearman
from landscope.experiments.results import Claim, Region, above, at_least, below, between
from landscope.training import Run


def over_deltas(make: Callable[[float], Claim]) -> Claim:
    """The claim at the default δ, with its statistic at each δ of the sensitivity set."""
    claim = make(DEFAULT_DELTA)
    values = tuple((d, (claim.value if d == DEFAULT_DELTA else make(d).value,)) for d in SENSITIVITY_DELTAS)
    return replace(claim, by_delta=values)


def holds(flag: bool | None) -> float | None:
    """A yes/no outcome as a per-seed statistic: 1 held, 0 did not, ``None`` not measurable."""
    return None if flag is None else float(flag)


HELD = at_least(1.0)  # the region of a yes/no claim: it held (1) at every seed


# -- [W&R] -----------------------------------------------------------------------------------------


def critical_lr(grid: Sequence[float], runs: Sequence[Run]) -> Claim:
    """Instabilities appear only above a critical η (none below η_c, some at every η ≥ η_c)."""

    def make(delta: float) -> Claim:
        counts = [len(find_instabilities(r, delta)) for r in runs]
        has = [c > 0 for c in counts]
        ok = has == sorted(has) and any(has) and not all(has)
        crit = next((lr for lr, h in zip(grid, has, strict=True) if h), None)
        return Claim(
            "Instabilities appear only above a critical η",
            "instabilities per η: "
            + ", ".join(f"{lr:g}: {c}" for lr, c in zip(grid, counts, strict=True))
            + (f" (critical η ≈ {crit:g})" if ok else ""),
            "1 if none below some η_c, ≥ 1 at every η ≥ η_c, both present; else 0",
            holds(ok),
            HELD,
        )

    return over_deltas(make)


def eos_hover(
    labels: Sequence[str],
    runs: Sequence[Run],
    preconditioned: bool = False,
    what: str = "λ₁ tracks 2/η at the edge of stability",
) -> Claim:
    """λ₁ (or Adam's P⁻¹H λ₁) hovers at its threshold once it reached it: worst |ratio − 1| ≤ 0.2."""
    ratios = [
        (lab, eos_ratio_after_reaching(r, preconditioned_only=preconditioned))
        for lab, r in zip(labels, runs, strict=True)
    ]
    reached = [(lab, x) for lab, x in ratios if np.isfinite(x)]
    worst = max((abs(x - 1) for _, x in reached), default=None)
    return Claim(
        what,
        "median λ₁ / threshold after reaching it: "
        + (", ".join(f"{lab}: {fmt(x)}" for lab, x in reached) or "no run reached it"),
        "max over runs that reached it of |ratio − 1| ≤ 0.2",
        worst,
        Region(-math.inf, 0.2, closed=True),
    )


def flattening_drop(runs: Sequence[Run]) -> Claim:
    """λ₁ falls across each instability: median of λ₁ after / λ₁ before below 1."""

    def make(delta: float) -> Claim:
        flats = [flattening(r, delta=delta) for r in runs]
        drops = np.concatenate([f.drop for f in flats]) if flats else np.array([])
        drops = drops[np.isfinite(drops)]
        med = float(np.median(drops)) if len(drops) else None
        return Claim(
            "Landscape flattening: λ₁ falls across each instability",
            f"λ₁ after / before over {len(drops)} instabilities: median {fmt(med)}"
            + (f", {int((drops < 1).sum())} of {len(drops)} below 1" if len(drops) else ""),
            "median after/before < 1",
            med,
            below(1.0),
        )

    return over_deltas(make)


def flattening_trend(labels: Sequence[str], runs: Sequence[Run]) -> Claim:
    """λ₁ after each instability falls with the instability's index: mean Spearman ρ below 0."""

    def make(delta: float) -> Claim:
        rhos = [(lab, flattening(r, delta=delta).rho) for lab, r in zip(labels, runs, strict=True)]
        rhos = [(lab, x) for lab, x in rhos if np.isfinite(x)]
        mean = float(np.mean([x for _, x in rhos])) if rhos else None
        text = ", ".join(f"{lab}: ρ = {fmt(x, 2)}" for lab, x in rhos) or "no run with ≥ 3 instabilities"
        return Claim(
            "Landscape flattening: λ₁ after each instability falls with its index",
            text,
            "mean Spearman ρ(index, λ₁ after) over runs with ≥ 3 instabilities < 0",
            mean,
            below(0.0),
        )

    return over_deltas(make)


def below_threshold_after(runs: Sequence[Run]) -> Claim:
    """After an instability λ₁ sits at or below the threshold (at least half the time)."""

    def make(delta: float) -> Claim:
        fr = [f.below_threshold for f in (flattening(r, delta=delta) for r in runs) if len(f.index)]
        mean = float(np.mean(fr)) if fr else None
        return Claim(
            "λ₁ after an instability sits at or below the threshold",
            "fraction below, per run with instabilities: " + (", ".join(fmt(b, 2) for b in fr) or "none"),
            "mean fraction ≥ 0.5",
            mean,
            at_least(0.5),
        )

    return over_deltas(make)


def shift_across(runs: Sequence[Run]) -> Claim:
    """The top subspace turns more across instabilities than over stable windows: ratio > 1."""

    def make(delta: float) -> Claim:
        shifts = [landscape_shift(r, delta=delta) for r in runs if find_instabilities(r, delta)]
        across = np.concatenate([s.across for s in shifts]) if shifts else np.array([])
        stable = np.concatenate([s.stable for s in shifts]) if shifts else np.array([])
        ok = np.isfinite(across) & np.isfinite(stable)
        a, b = (float(across[ok].mean()), float(stable[ok].mean())) if ok.any() else (math.nan, math.nan)
        ratio = a / b if ok.any() and b > 0 else None
        return Claim(
            "Landscape shift: the top subspace turns more across instabilities than over stable windows",
            f"mean shift across {int(ok.sum())} instabilities {fmt(a)} vs stable windows "
            f"at least as long {fmt(b)} (ratio {fmt(ratio)})",
            "mean across / mean stable > 1",
            ratio,
            above(1.0),
        )

    return over_deltas(make)


def shift_grows(xs: Sequence[float], runs: Sequence[Run], name: str = "η") -> Claim:
    """The shift across instabilities grows with η (or the cyclic ratio): Spearman ρ > 0."""

    def make(delta: float) -> Claim:
        pairs = []
        for x, r in zip(xs, runs, strict=True):
            if find_instabilities(r, delta):
                s = landscape_shift(r, delta=delta)
                if len(s.across):
                    pairs.append((x, s.mean_across))
        rho = spearman([p[0] for p in pairs], [p[1] for p in pairs])
        return Claim(
            f"The shift across instabilities grows with {name}",
            f"Spearman ρ({name}, mean shift) = {fmt(rho)} over {len(pairs)} runs; shifts "
            + ", ".join(f"{x:g}: {fmt(a, 2)}" for x, a in pairs),
            "ρ > 0",
            rho if np.isfinite(rho) else None,
            above(0.0),
        )

    return over_deltas(make)


def similarity_falls(grid: Sequence[float], values: Sequence[float], label: str) -> Claim:
    """Similarity to the lowest-η run falls with η: Spearman ρ below 0."""
    rho = spearman(list(grid), list(values))
    return Claim(
        f"Similarity to the low-η baseline falls with η ({label})",
        f"Spearman ρ = {fmt(rho)}; final values "
        + ", ".join(f"{lr:g}: {fmt(v, 2)}" for lr, v in zip(grid, values, strict=True)),
        "ρ < 0",
        rho if np.isfinite(rho) else None,
        below(0.0),
    )


# -- [G] ---------------------------------------------------------------------------------------


def log2_ratio(a: float, b: float, top: float) -> float | None:
    """log₂(a / b) of two largest stable η; NaN means censored above ``top`` (the grid's largest).

    A censored value counts as 2 × top, which understates it: the ratio is then a bound on the
    safe side of the censoring. Both censored: ``None``.
    """
    if not np.isfinite(a) and not np.isfinite(b):
        return None
    a = a if np.isfinite(a) else 2 * top
    b = b if np.isfinite(b) else 2 * top
    return math.log2(a / b)


def larger_eta(
    text: str,
    a_label: str,
    a: float,
    b_label: str,
    b: float,
    grid: Sequence[float],
    region: Region | None = None,
) -> Claim:
    """One largest stable η against another: log₂ of their ratio above 0 (grid steps are ×2)."""

    def txt(x: float) -> str:
        return f"> {grid[-1]:g} (censored)" if not np.isfinite(x) else f"{x:g}"

    value = log2_ratio(a, b, grid[-1])
    return Claim(
        text,
        f"{a_label} {txt(a)} vs {b_label} {txt(b)}; log₂ ratio {fmt(value)}",
        "log₂(η ratio) > 0" if region is None else f"log₂(η ratio) {region_text(region)}",
        value,
        region or above(0.0),
    )


def region_text(r: Region) -> str:
    """The region in words (for criteria)."""
    if math.isinf(r.lo):
        return f"{'≤' if r.closed else '<'} {r.hi:g}"
    if math.isinf(r.hi):
        return f"{'≥' if r.closed else '>'} {r.lo:g}"
    return f"in [{r.lo:g}, {r.hi:g}]"


__all__ = [
    "HELD",
    "above",
    "at_least",
    "below",
    "below_threshold_after",
    "between",
    "critical_lr",
    "eos_hover",
    "flattening_drop",
    "flattening_trend",
    "holds",
    "larger_eta",
    "log2_ratio",
    "over_deltas",
    "region_text",
    "shift_across",
    "shift_grows",
    "similarity_falls",
]
