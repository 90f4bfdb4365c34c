"""Reference loss spikes and detection scores on constructed series with known answers."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

import landscope as ls
from landscope.analysis import (
    DetectionScore,
    Instability,
    Trace,
    detection_scores,
    find_instabilities,
    loss_spikes,
)
from landscope.training import Run

PLANTED = {200: 0.05, 400: 0.10, 600: 0.30, 800: 1.00}  # step: height over the loss before it


def _planted(n: int = 1000) -> np.ndarray:
    """A smoothly decaying loss with one-step spikes of known height at known steps."""
    loss = np.exp(-np.arange(n) / 500)
    for t, h in PLANTED.items():
        if t < n:
            loss[t] = loss[t - 1] * (1 + h)
    return loss


def _spikes(loss, **kw) -> list[int]:
    return loss_spikes(Trace.from_arrays(np.asarray(loss, dtype=float)), **kw).tolist()


# -- loss_spikes --------------------------------------------------------------------------------


def test_planted_spikes_are_found_exactly():
    out = loss_spikes(Trace.from_arrays(_planted()))
    assert out.dtype.kind == "i"
    assert out.tolist() == sorted(PLANTED)
    # the rise threshold selects by height
    assert _spikes(_planted(), rise=0.2) == [600, 800]
    assert _spikes(_planted(), rise=2.0) == []


def test_flat_monotone_and_short_series_have_no_spikes():
    assert _spikes(np.ones(100)) == []
    assert _spikes(np.linspace(2.0, 1.0, 100)) == []
    assert _spikes(np.linspace(1.0, 2.0, 100)) == []  # rising, but never a local maximum
    assert _spikes([]) == [] and _spikes([1.0]) == [] and _spikes([1.0, 2.0]) == []


def test_noise_below_the_rise_is_not_a_spike_but_a_spike_in_noise_is():
    rng = np.random.default_rng(0)
    noisy = 1.0 + rng.uniform(-0.009, 0.009, 2000)  # max/min < 1.009/0.991 < 1.02
    assert _spikes(noisy) == []
    assert len(_spikes(noisy, rise=0.0)) > 100  # every local maximum, when rise is 0
    noisy[1000] = 1.05
    assert _spikes(noisy) == [1000]


def test_edges_of_the_definition():
    # the rise is inclusive: exactly (1 + rise) × the window minimum is a spike
    assert _spikes([1.0, 1.0, 1.5, 1.0], rise=0.5) == [2]
    assert _spikes([1.0, 1.0, 1.4999, 1.0], rise=0.5) == []
    # a flat top counts once, at its first step (loss[t] > loss[t-1] and loss[t] >= loss[t+1])
    assert _spikes([1.0, 1.0, 2.0, 2.0, 1.0]) == [2]
    # first and last values have a missing neighbour: never spikes
    assert _spikes([5.0, 1.0, 1.0, 1.0, 5.0]) == []
    # the window is the `window` values before t: a low value 31 steps back does not count
    loss = np.full(40, 1.015)
    loss[0], loss[35] = 1.0, 1.03
    assert _spikes(loss) == []  # 1.03 / 1.015 < 1.02
    loss[5] = 1.0  # now inside the 30-step window
    assert _spikes(loss) == [35]
    loss[5] = 1.015
    assert _spikes(loss, window=35) == [35]  # a longer window reaches step 0
    assert _spikes(loss, window=34) == []


def test_non_finite_losses_are_never_spikes_and_never_lower_the_window():
    assert _spikes([1.0, 1.0, np.nan, 1.0, 1.0]) == []
    assert _spikes([1.0, 1.0, np.inf, 1.0, 1.0]) == []
    assert _spikes([1.0, 1.0, 1.5, np.nan]) == []  # the step before a divergence
    assert _spikes([1.0, 1.0, np.nan, 1.5, 1.4]) == []  # up from NaN is not up
    assert _spikes([np.nan, 1.0, 1.1, 1.0]) == [2]  # NaN ignored in the window
    assert _spikes([-np.inf, 1.0, 1.0, 1.01, 1.0]) == []  # -inf does not lower the window minimum


def test_steps_are_reported_and_the_window_counts_recorded_values():
    tr = Trace.from_arrays([1.0, 1.0, 1.1, 1.0, 1.0], loss_steps=np.array([0, 10, 20, 30, 40]))
    assert loss_spikes(tr).tolist() == [20]
    tr = Trace.from_arrays([1.0, 1.01, 1.02, 1.03, 1.04, 1.0], loss_steps=np.arange(0, 60, 10))
    assert loss_spikes(tr, window=2).tolist() == []  # 1.04 / 1.02 < 1.02
    assert loss_spikes(tr, window=3).tolist() == [40]  # 1.04 / 1.01 >= 1.02


def test_a_run_is_read_through_trace():
    rows = [{"step": t, "train_loss": float(v)} for t, v in enumerate(_planted(300))]
    rows[50]["train_loss"] = None  # a missing value reads as NaN
    run = Run(path=Path("constructed"), config=None, metrics=rows)
    assert loss_spikes(run).tolist() == [200]
    with pytest.raises(ls.InputError, match="no 'train_loss_full' values"):
        loss_spikes(run, key="train_loss_full")


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"rise": -0.01}, "rise must be a finite number >= 0, got -0.01"),
        ({"rise": math.nan}, "rise must be a finite number >= 0, got nan"),
        ({"rise": "0.02"}, "rise must be a finite number >= 0, got '0.02'"),
        ({"rise": True}, "rise must be a finite number >= 0, got True"),
        ({"window": 0}, "window must be a positive integer, got 0"),
        ({"window": 2.5}, "window must be a positive integer, got 2.5"),
        ({"window": False}, "window must be a positive integer, got False"),
    ],
)
def test_loss_spikes_rejects_bad_arguments(kw, match):
    with pytest.raises(ls.InputError, match=match):
        loss_spikes(Trace.from_arrays(np.ones(10)), **kw)


def test_loss_spikes_rejects_what_is_not_a_run():
    with pytest.raises(ls.InputError, match="expected a Run .* or a Trace, got list"):
        loss_spikes([1.0, 2.0, 1.0])


# -- detection_scores ---------------------------------------------------------------------------


def test_scores_count_spikes_inside_inclusive_intervals():
    s = detection_scores([(10, 20), (50, 60), (90, 95)], [10, 20, 21, 55, 70])
    assert (s.n_spikes, s.n_events, s.n_caught, s.n_hit) == (5, 3, 3, 2)
    assert s.recall == pytest.approx(3 / 5) and s.precision == pytest.approx(2 / 3)
    assert s.f1 == pytest.approx(2 * 0.6 * (2 / 3) / (0.6 + 2 / 3))


def test_an_open_instability_lasts_to_the_end_and_overlaps_count_once():
    s = detection_scores([(10, None)], [5, 10, 10_000])
    assert (s.n_caught, s.recall, s.precision) == (2, pytest.approx(2 / 3), 1.0)
    s = detection_scores([(0, 100), (50, 150)], [75])  # one spike in two instabilities
    assert (s.n_caught, s.recall, s.n_hit, s.precision) == (1, 1.0, 2, 1.0)


def test_instabilities_are_accepted_and_scored_against_planted_spikes():
    tr = Trace.from_arrays(_planted())
    spikes = loss_spikes(tr)
    events = find_instabilities(tr, delta=0.02)
    assert all(isinstance(e, Instability) for e in events)
    assert detection_scores(events, spikes) == DetectionScore(1.0, 1.0, 4, 4, 4, 4)
    # δ above a spike's height misses it: the 5 % and 10 % spikes at δ = 0.2
    s = detection_scores(find_instabilities(tr, delta=0.2), spikes)
    assert (s.n_caught, s.recall, s.precision) == (2, 0.5, 1.0)


def test_empty_denominators_are_nan_and_pooling_counts_each_item_once():
    none = detection_scores([], [3, 4])
    assert none.recall == 0.0 and math.isnan(none.precision) and math.isnan(none.f1)
    quiet = detection_scores([(1, 2)], np.array([], dtype=int))
    assert math.isnan(quiet.recall) and quiet.precision == 0.0
    assert detection_scores([(1, 2)], [9]).f1 == 0.0
    a, b = detection_scores([(0, 10)], [5, 50]), detection_scores([(0, 10), (20, 30)], [25])
    p = DetectionScore.pooled([a, b, none, quiet])
    assert (p.n_spikes, p.n_events, p.n_caught, p.n_hit) == (5, 4, 2, 2)
    assert p.recall == pytest.approx(2 / 5) and p.precision == pytest.approx(2 / 4)
    assert math.isnan(DetectionScore.pooled([]).recall) and math.isnan(DetectionScore.pooled([]).precision)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.recall = 1.0


@pytest.mark.parametrize(
    "events, spikes, match",
    [
        (5, [1], "events must be a list of instabilities, got 5"),
        ("ab", [1], "events must be a list of instabilities, got 'ab'"),
        ([(1, 2, 3)], [1], r"events\[0\] must be an Instability or a \(start, end\) pair"),
        (
            [(0, 1), (5, 3)],
            [1],
            r"events\[1\] needs a finite start and an end >= start or None, "
            r"got start=5, end=3",
        ),
        ([(None, 3)], [1], r"events\[0\] needs a finite start"),
        ([(math.nan, 3)], [1], r"events\[0\] needs a finite start"),
        ([(0, 1)], [[1, 2]], "spikes must be a 1-D array of finite steps"),
        ([(0, 1)], [1, math.nan], "spikes must be a 1-D array of finite steps"),
        ([(0, 1)], ["a"], "spikes must be a 1-D array of steps, got"),
    ],
)
def test_detection_scores_rejects_bad_input(events, spikes, match):
    with pytest.raises(ls.InputError, match=match):
        detection_scores(events, spikes)
