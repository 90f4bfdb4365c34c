"""Repeated eigenvalues: the default multiplicity probe against dense ``eigh``.

A single Krylov start vector sees one copy of an exactly repeated eigenvalue. These cases check
that the default (``check_multiplicity=None``) returns every wanted copy, that the old behaviour
(``False``) really misses them on the same problems (so the tests can fail), and that the probe
never invents a value where the spectrum has none.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from reference import with_spectrum
from torch import nn

import landscope as ls
from landscope.curvature.probe import PROBE_PRODUCTS, probe_complement
from landscope.training.config import MeasureConfig
from landscope.training.measure import Measurer

RTOL = 1e-6


def kronecker_problem(seed: int = 0, classes: int = 5) -> tuple[ls.HessianOperator, torch.Tensor]:
    """The last layer of an MSE model: its Hessian is ``(AᵀA/N) ⊗ I_C`` (each value C times).

    Returns the operator and its exact eigenvalues, descending, from the closed form.
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    X = torch.randn(80, 6, generator=g, dtype=torch.float64)
    Y = torch.randn(80, classes, generator=g, dtype=torch.float64)
    model = nn.Sequential(nn.Linear(6, 7), nn.Tanh(), nn.Linear(7, classes)).double()

    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((out - target) ** 2).sum(dim=1).mean()

    op = ls.HessianOperator(model, loss, (X, Y), params=ls.layers(model, last=1))
    with torch.no_grad():
        A = torch.cat([torch.tanh(model[0](X)), torch.ones(80, 1, dtype=torch.float64)], dim=1)
    gram = torch.linalg.eigvalsh(A.T @ A / 80)
    exact = gram.repeat_interleave(classes).sort(descending=True).values
    return op, exact


def test_kronecker_closed_form_is_the_operator():
    op, exact = kronecker_problem()
    dense = torch.linalg.eigvalsh(op.to_dense()).flip(0)
    assert torch.allclose(dense, exact, rtol=0, atol=1e-12 * float(exact[0]))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [2, 3, 5, 7])
def test_default_returns_every_copy_of_a_kronecker_hessian(k, seed):
    op, exact = kronecker_problem(seed)
    res = ls.eigenpairs(op, k=k, tol=1e-8, seed=seed)
    assert res.converged
    assert torch.allclose(res.values, exact[:k], rtol=RTOL, atol=0), (res.values, exact[:k])
    V = res.vectors
    assert torch.allclose(V.T @ V, torch.eye(k, dtype=torch.float64), atol=1e-8)


def test_without_the_probe_copies_are_missed_with_converged_true():
    """The failure the default fixes, on the same problems: ``False`` returns too few copies."""
    missed = 0
    for seed in range(3):
        op, exact = kronecker_problem(seed)
        res = ls.eigenpairs(op, k=5, tol=1e-8, seed=seed, check_multiplicity=False)
        assert res.converged
        missed += not torch.allclose(res.values, exact[:5], rtol=RTOL, atol=0)
    assert missed >= 2


@pytest.mark.parametrize(
    "which,top,expected",
    [
        ("LA", [10.0, 10.0, 10.0, 7.0], [10.0, 10.0, 10.0]),
        ("SA", [-4.0, -4.0, -4.0, -1.0], [-4.0, -4.0, -4.0]),
        ("LM", [9.0, -9.0, -9.0, 5.0], [9.0, -9.0, -9.0]),
    ],
)
def test_default_finds_copies_for_every_which(which, top, expected):
    lam = torch.cat([torch.tensor(top), torch.linspace(-2.0, 3.0, 76)]).double()
    A, _ = with_spectrum(lam, seed=5)
    res = ls.eigenpairs(ls.DenseOperator(A), k=3, which=which, tol=1e-9)
    exp = torch.tensor(sorted(expected, reverse=True), dtype=torch.float64)
    assert torch.allclose(res.values, exp, rtol=RTOL, atol=0), res.values


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_probe_costs_its_products_and_changes_nothing_on_a_simple_spectrum(seed):
    lam = torch.cat([torch.tensor([9.0, 8.0, 7.0, 6.0]), torch.linspace(0.0, 3.0, 96)]).double()
    A, _ = with_spectrum(lam, seed=seed)
    op = ls.DenseOperator(A)
    off = ls.eigenpairs(op, k=3, tol=1e-8, seed=seed, check_multiplicity=False)
    probed = ls.eigenpairs(op, k=3, tol=1e-8, seed=seed)
    assert probed.n_matvecs == off.n_matvecs + PROBE_PRODUCTS
    assert torch.equal(probed.values, off.values) and torch.equal(probed.vectors, off.vectors)
    assert probed.method == "lanczos"
    assert (
        ls.eigenpairs(op, k=1, seed=seed).n_matvecs
        == ls.eigenpairs(op, k=1, seed=seed, check_multiplicity=False).n_matvecs
    )  # k = 1: no probe


def test_probe_finds_a_missing_copy_and_never_invents_one():
    lam = torch.cat([torch.tensor([6.0, 6.0, 2.0]), torch.linspace(0.0, 1.0, 37)]).double()
    A, Q = with_spectrum(lam, seed=3)
    op = ls.DenseOperator(A)
    gen = torch.Generator().manual_seed(0)
    # one copy of 6 and 2 known, 2 the k-th value: the probe returns as soon as a direction
    # orthogonal to them has a larger Rayleigh quotient (the other copy's, at most 6)
    z, used = probe_complement(op, Q[:, [0, 2]], 2.0, "LA", 1e-8, PROBE_PRODUCTS, gen)
    assert z is not None and used <= PROBE_PRODUCTS
    assert 2.0 < float(z @ A @ z) <= 6.0 + 1e-12
    assert float((Q[:, [0, 2]].T @ z).abs().max()) <= 1e-10
    # both copies known and 2 the k-th value: nothing is better, so nothing is returned
    z, used = probe_complement(op, Q[:, :3], 2.0, "LA", 1e-8, PROBE_PRODUCTS, gen)
    assert z is None and used == PROBE_PRODUCTS


def test_return_vectors_false_with_the_probe():
    op, exact = kronecker_problem()
    res = ls.eigenpairs(op, k=3, tol=1e-8, return_vectors=False)
    assert res.vectors is None
    assert torch.allclose(res.values, exact[:3], rtol=RTOL, atol=0)


def test_probe_skipped_at_the_budget_warns():
    lam = torch.cat([torch.tensor([9.0, 8.0, 7.0]), torch.linspace(0.0, 3.0, 57)]).double()
    A, _ = with_spectrum(lam, seed=1)
    op = ls.DenseOperator(A)
    need = ls.eigenpairs(op, k=2, tol=1e-6, check_multiplicity=False).n_matvecs
    with pytest.warns(RuntimeWarning, match="multiplicity probe was skipped"):
        res = ls.eigenpairs(op, k=2, tol=1e-6, max_matvecs=need)
    assert res.converged and res.n_matvecs == need


def test_a_small_basis_shortens_the_probe():
    """The probe fits in the basis's room (max_basis − k): still finds the copies."""
    op, exact = kronecker_problem()
    res = ls.eigenpairs(op, k=4, tol=1e-8, max_basis=9)
    assert torch.allclose(res.values, exact[:4], rtol=RTOL, atol=0)


@pytest.mark.parametrize("flag", ["yes", 1, 0.0])
def test_bad_check_multiplicity(flag):
    with pytest.raises(ls.InputError, match="check_multiplicity"):
        ls.eigenpairs(torch.eye(4, dtype=torch.float64), k=2, check_multiplicity=flag)
    with pytest.raises(ls.InputError, match="check_multiplicity"):
        ls.EigenTracker(k=2, check_multiplicity=flag)


@pytest.mark.parametrize("method", ["lanczos", "block"])
def test_tracker_keeps_every_copy_along_a_moving_kronecker_hessian(method):
    """A Lanczos warm start is one vector (the sum of the last ones): the probe restores the copies."""
    op, _ = kronecker_problem(seed=4)
    trk = ls.EigenTracker(k=4, tol=1e-7, method=method)
    model, loss, data = op.model, op.loss_fn, op.data._single
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for step in range(5):
            with torch.no_grad():
                model[0].weight.mul_(1.02)  # the features change, the Kronecker form stays
            op = ls.HessianOperator(model, loss, data, params=ls.layers(model, last=1))
            exact = torch.linalg.eigvalsh(op.to_dense()).flip(0)[:4]
            res = trk.update(op)
            assert torch.allclose(res.values, exact, rtol=1e-5, atol=0), (step, res.values, exact)


def test_measurement_config_reaches_the_tracker():
    model = nn.Sequential(nn.Linear(3, 2)).double()
    X = torch.randn(10, 3, dtype=torch.float64)
    y = torch.randn(10, 2, dtype=torch.float64)
    for flag in (None, True, False):
        m = Measurer(
            model, nn.MSELoss(), (X, y), MeasureConfig(k=2, check_multiplicity=flag), batch_size=None, seed=0
        )
        assert m.tracker is not None and m.tracker.check_multiplicity is flag
