"""The analyses on constructed series with known answers, and on short real runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import landscope as ls
from landscope.analysis import (
    Trace,
    coordinates,
    effective_parameters,
    eos_ratio,
    find_instabilities,
    flattening,
    fraction_in_subspace,
    landscape_shift,
    outlier_count,
    overlap_matrix,
    perturbation_test,
    spectrum,
    subspace_overlap,
    trajectory_similarity,
)
from landscope.data import load_mnist1d
from landscope.models import build_model, get_loss
from landscope.training import MeasureConfig, OptimizerSpec, Trainer

# -- constructed series -------------------------------------------------------------------------

SPIKES = [(100, 104, 110), (250, 253, 262), (400, 406, 420)]  # (start, peak, end)


def _three_spikes() -> np.ndarray:
    """A decaying loss with three spikes whose start, peak and end are known by construction at δ = 0.1."""
    t = np.arange(500)
    loss = 1.0 * np.exp(-t / 400)
    for start, peak, end in SPIKES:
        base = loss[:start].min()
        up = np.linspace(1.3, 3.0, peak - start + 1)  # > 1.1 × base from `start` on
        down = np.linspace(2.5, 1.15, end - peak - 1)  # still above 1.1 × base …
        loss[start : peak + 1] = base * up
        loss[peak + 1 : end] = base * down
        loss[end] = base * 1.02  # … until `end`
        loss[end + 1 :] = np.minimum(loss[end + 1 :], base * 1.0)
    return loss


def test_three_spikes_give_three_instabilities_with_their_phases():
    loss = _three_spikes()
    lam_steps = np.arange(0, 500, 10)
    lam = np.where(np.isin(lam_steps, [90, 240, 390]), 5.0, 3.0)  # crosses 4 before each start
    events = find_instabilities(
        Trace.from_arrays(loss, lambda1=lam, lambda_steps=lam_steps, threshold=4.0), delta=0.1
    )
    assert [(e.start, e.peak, e.end) for e in events] == SPIKES
    assert [e.heating for e in events] == [(s, p) for s, p, _ in SPIKES]
    assert [e.cooling for e in events] == [(p, e) for _, p, e in SPIKES]
    assert [e.crossing for e in events] == [90, 240, 390]
    assert all(e.height == pytest.approx(3.0) for e in events)


def test_instability_details():
    # a larger delta ignores the spikes; an unfinished spike has no end; NaN counts as a spike
    assert find_instabilities(Trace.from_arrays(_three_spikes()), delta=5.0) == []
    loss = np.array([1.0, 0.9, 0.8, 2.0, 3.0, 2.5])
    (ev,) = find_instabilities(Trace.from_arrays(loss))
    assert (ev.start, ev.peak, ev.end, ev.crossing) == (3, 4, None, None)
    (ev,) = find_instabilities(Trace.from_arrays([1.0, 0.5, np.nan]))
    assert ev.start == 2 and math.isinf(ev.peak_loss)
    with pytest.raises(ls.InputError, match="delta must be positive, got 0"):
        find_instabilities(Trace.from_arrays(loss), delta=0)
    with pytest.raises(ls.InputError, match="strictly increasing"):
        Trace.from_arrays([1.0, 2.0], loss_steps=[3, 1])


def test_flattening_sign_on_planted_sequences():
    loss = _three_spikes()
    lam_steps = np.arange(0, 500, 2)
    for values, sign in (([4.5, 4.0, 3.2], -1), ([3.0, 3.5, 4.4], 1)):
        lam = np.full(len(lam_steps), 3.0)
        for (start, _, end), v in zip(SPIKES, values, strict=True):
            lam[lam_steps == end] = 9.0  # at the end step itself: not "after" it
            lam[lam_steps == end + 2] = v  # the first measurement after the end
            lam[lam_steps == start - 2] = 2 * v  # the last one before the start
        f = flattening(Trace.from_arrays(loss, lambda1=lam, lambda_steps=lam_steps, threshold=4.2), delta=0.1)
        assert list(f.step) == [end + 2 for _, _, end in SPIKES]
        assert np.sign(f.rho) == sign and abs(f.rho) == pytest.approx(1.0)
        assert f.below_threshold == pytest.approx(2 / 3)
        assert f.drop == pytest.approx([0.5, 0.5, 0.5]) and f.median_drop == pytest.approx(0.5)


def _orthonormal(dim: int, k: int, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    return np.linalg.qr(g.standard_normal((dim, k)))[0]


def test_subspace_overlap_is_rotation_invariant_and_zero_for_orthogonal_subspaces():
    U = _orthonormal(50, 5, 0)
    R = _orthonormal(5, 5, 1)  # any rotation of the columns
    assert subspace_overlap(U, U) == pytest.approx(1.0)
    assert subspace_overlap(U, U @ R) == pytest.approx(1.0)
    Q = _orthonormal(50, 10, 2)
    assert subspace_overlap(Q[:, :5], Q[:, 5:]) == pytest.approx(0.0, abs=1e-12)
    half = np.concatenate([Q[:, :2], Q[:, 5:8]], axis=1)
    assert subspace_overlap(Q[:, :5], half) == pytest.approx(2 / 5)


def test_subspace_overlap_names_a_wrongly_shaped_input():
    """A (dim, 1, 1) tensor (an extra [:, None]) is an error, not a silent batch transpose."""
    U = torch.as_tensor(_orthonormal(50, 1, 0))
    with pytest.raises(ls.InputError, match=r"V must be \(dim, k\) or 1-D, got shape \(50, 1, 1\)"):
        subspace_overlap(U, U[:, None])


def test_spectrum_with_planted_outliers():
    g = np.random.default_rng(0)
    bulk = np.sort(g.uniform(0.05, 0.5, 40))[::-1]
    outliers = np.sort(g.uniform(2.0, 8.0, 10))[::-1]
    values = np.concatenate([outliers, bulk])
    s = spectrum(values)
    assert s.k_star == outlier_count(values) == 10
    assert s.log_gap == pytest.approx(np.log(outliers[-1] / bulk[0]))
    assert list(s.outliers) == list(outliers) and len(s.bulk) == 40
    with pytest.raises(ls.InputError, match="descending"):
        outlier_count(values[::-1])


def test_effective_parameter_coordinates():
    U = _orthonormal(30, 30, 3)
    x = U[:, :3] @ np.array([1.0, 2.0, 2.0]) + 0.0 * U[:, 5]
    assert coordinates(x, U[:, :3]) == pytest.approx([1.0, 2.0, 2.0])
    assert fraction_in_subspace(x, U[:, :2]) == pytest.approx(5 / 9)
    values = np.array([9.0, 8.0, 0.5, 0.4, 0.3, 0.2])
    eff = effective_parameters(values, U[:, :6], theta=x, theta0=np.zeros(30), gradient=U[:, 0])
    assert eff.k_star == 2 and eff.displacement_fraction == pytest.approx(5 / 9)
    assert eff.gradient_fraction == pytest.approx(1.0)


# -- real runs ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_instability_follows_a_threshold_crossing(eos_run):
    events = find_instabilities(eos_run)
    assert len(events) >= 1
    for ev in events:
        assert ev.crossing is not None and ev.crossing <= ev.start, ev
    steps, ratio = eos_ratio(eos_run)
    assert len(steps) == len(eos_run.measurements) and np.nanmax(ratio) > 1


def test_shift_and_overlap_matrix_on_a_run(eos_run):
    steps, M = overlap_matrix(eos_run)
    assert M.shape == (len(steps), len(steps))
    assert np.allclose(np.diag(M), 1.0, atol=1e-5) and np.allclose(M, M.T)
    assert (M >= -1e-9).all() and (M <= 1 + 1e-6).all()
    shift = landscape_shift(eos_run)
    assert len(shift.across) == len([e for e in find_instabilities(eos_run) if e.end is not None])
    assert ((shift.across >= 0) & (shift.across <= 1)).all()


def test_shift_on_a_planted_trajectory():
    """k = 1 vectors at angle φ(t): overlap cos²Δφ. φ turns fast while sharpening (before λ₁
    reaches the threshold at step 50), slowly afterwards, and jumps by 0.5 across each instability."""
    loss = _three_spikes()
    events = find_instabilities(Trace.from_arrays(loss), delta=0.1)
    around = [s for e in events for s in (e.start - 1, e.end + 1)]
    steps = np.array(sorted(set(range(0, 500, 10)) | set(around)))

    def phi(t: float) -> float:
        jumps = sum(0.5 for e in events if t > e.start)
        return 0.05 * min(t, 50) + 0.002 * max(t - 50, 0) + jumps

    vecs = [np.array([[np.cos(phi(t))], [np.sin(phi(t))], [0.0]]) for t in steps]
    lam = np.where(steps >= 50, 5.0, 3.0)
    tr = Trace.from_arrays(loss, lambda1=lam, lambda_steps=steps, threshold=4.0)
    shift = landscape_shift(tr, events, series=(steps, vecs), quiet_delta=0.1)
    expected_across = [np.sin(phi(e.end + 1) - phi(e.start - 1)) ** 2 for e in events]
    assert shift.across == pytest.approx(expected_across)
    # stable windows are the shortest cadence windows at least as long as the span (12, 14 and 22
    # steps: 20, 20 and 30) of slow turning: none starts while sharpening, none touches an
    # instability (or the measurements around it)
    assert shift.stable == pytest.approx([np.sin(0.002 * w) ** 2 for w in (20, 20, 30)])
    assert (shift.windows > 10).all() and shift.ratio > 50


def test_trajectory_similarity_of_a_run_to_itself(eos_run):
    sim = trajectory_similarity([eos_run], eos_run)
    assert np.allclose(sim.cosine[0, 1:], 1.0) and np.allclose(sim.agreement[0], 1.0)
    assert np.allclose(sim.overlap[0], 1.0, atol=1e-5)
    assert sim.final("cosine")[0] == pytest.approx(1.0)


@pytest.mark.slow
def test_cross_entropy_mlp_has_about_c_outliers():
    """MNIST-1D, ReLU MLP 40-64-64-10, SGD (batch 50, η = 0.1), 100 steps: k* = 10 ± 1.

    Measured (issue 5 notes): the same MLP with tanh gives k* = 5 at step 100, and at
    initialisation k* = 1: the C-outlier structure appears once training has started.
    """
    torch.manual_seed(0)
    ds = load_mnist1d(n_train=1000, n_test=200)
    model = build_model("mlp", ds.input_shape, 10, width=64, depth=2, activation="relu", seed=0)
    res = Trainer(
        model,
        get_loss("ce"),
        ds.train,
        optimizer=OptimizerSpec(name="sgd", lr=0.1),
        steps=100,
        batch_size=50,
        measure=MeasureConfig(every=100, k=30, test=False),
    ).fit()
    values = res.metrics[-1]["eigenvalues"]
    assert 9 <= outlier_count(values) <= 11, values


def test_perturbation_outlier_directions_matter_more():
    torch.manual_seed(0)
    ds = load_mnist1d(n_train=500, n_test=300)
    model = build_model("mlp", ds.input_shape, 10, width=32, depth=2, activation="relu", seed=0)
    loss = get_loss("ce")
    Trainer(
        model, loss, ds.train, optimizer=OptimizerSpec(name="sgd", lr=0.1), steps=100, batch_size=50
    ).fit()
    res = ls.eigenpairs(ls.HessianOperator(model, loss, ds.train), k=20, tol=1e-4)
    k = outlier_count(res.values)
    before = [p.detach().clone() for p in model.parameters()]
    p = perturbation_test(model, loss, ds.test, res.vectors, k_star=k, eps=1.0, n_random=10)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    out, bulk, rnd = (p.group(n) for n in ("outlier", "bulk", "random"))
    assert out.n_directions == k and bulk.n_directions == 20 - k and rnd.n_directions == 10
    assert out.loss_change > bulk.loss_change > 0 and out.loss_change > rnd.loss_change
    assert out.output_change > rnd.output_change
