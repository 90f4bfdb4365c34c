"""Claims over seeds: the 95 % interval, the three-way verdict and the combination of seeds."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from landscope.experiments.results import (
    Claim,
    ExperimentResult,
    Region,
    above,
    at_least,
    below,
    between,
    claim_doc,
    combine_seeds,
    decide,
    interval95,
)


def test_interval_is_students_t_over_seeds():
    values = [0.2, 0.5, 0.4, 0.3]
    lo, hi = interval95(values)
    ref = stats.t.interval(0.95, 3, loc=sum(values) / 4, scale=stats.sem(values))
    assert (lo, hi) == pytest.approx(ref)
    assert interval95([1.0]) is None and interval95([None, 1.0, math.nan]) is None
    assert interval95([1.0, 1.0, 1.0]) == (1.0, 1.0)  # zero spread: the common value


@pytest.mark.parametrize(
    ("values", "region", "verdict"),
    [
        ([-0.5, -0.4, -0.6], below(0), "pass"),
        ([0.5, 0.4, 0.6], below(0), "fail"),
        ([-0.5, 0.4, -0.1], below(0), "inconclusive"),
        ([1.0, 1.0, 1.0], at_least(1), "pass"),  # a yes/no claim that held at every seed
        ([1.0, 0.0, 1.0], at_least(1), "inconclusive"),
        ([0.0, 0.0, 0.0], at_least(1), "fail"),
        ([0.0, 0.0], below(0), "fail"),  # the boundary is outside an open region
        ([1.0, 1.05, 0.95], between(0.8, 1.2), "pass"),
        ([2.0], above(1), "inconclusive"),  # one seed: no interval, nothing said about the spread
        ([2.0, None, None], above(1), "inconclusive"),
        ([None, None], above(1), "not measured"),
        ([0.3, 0.2], None, "reported"),
    ],
)
def test_three_way_verdict(values, region, verdict):
    assert decide(values, region)[1] == verdict


def test_region_verdict_on_intervals():
    r = Region(0.0, 1.0)
    assert r.verdict(0.2, 0.8) == "pass" and r.verdict(1.0, 2.0) == "fail"
    assert r.verdict(-1, 0.5) == "inconclusive"
    assert between(0, 1).verdict(1.0, 1.0) == "pass" and between(0, 1).verdict(1.01, 2) == "fail"


def test_combine_seeds_matches_claims_by_text_and_keeps_every_delta():
    def result(value_a, value_b, by_delta):
        a = Claim("A", f"a = {value_a}", "a < 0", value_a, below(0), by_delta=by_delta)
        b = Claim("B", "b", "b > 1", value_b, above(1))
        return ExperimentResult(claims=(a, b) if value_b is not None else (a,))

    seeds = [
        result(-1.0, 2.0, ((0.01, (-1.5,)), (0.1, (0.5,)))),
        result(-2.0, None, ((0.01, (-2.5,)), (0.1, (-0.5,)))),
        result(-1.5, 3.0, ((0.01, (-2.0,)), (0.1, (0.2,)))),
    ]
    out = combine_seeds(seeds, [0, 1, 2])
    a, b = out.claims
    assert a.seeds == (-1.0, -2.0, -1.5) and a.measured == "a = -1.0" and a.verdict == "pass"
    assert b.seeds == (2.0, None, 3.0)
    sens = {d: (vals, verdict) for d, vals, _, verdict in a.sensitivity()}
    assert sens[0.01] == ((-1.5, -2.5, -2.0), "pass") and sens[0.1][1] == "inconclusive"
    doc = claim_doc(a)
    assert doc["seeds"] == [-1.0, -2.0, -1.5] and doc["verdict"] == "pass" and doc["passed"] is True
    assert doc["interval"] == pytest.approx(list(interval95([-1.0, -2.0, -1.5])))
    assert out.seeds == (0, 1, 2) and out.tables[-1].title == "Claims per seed"
