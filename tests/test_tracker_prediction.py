"""The tracker's prediction of the next Ritz vectors: polynomial extrapolation of the chosen order.

The references are closed forms: eigenvectors that rotate at a constant angular speed (where a
polynomial of order p leaves an error of order ``dt^(p+1)``) and random walks (where any
extrapolation amplifies the steps' noise and the last vectors are the best guess).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from reference import random_orthogonal

from landscope.curvature import DenseOperator, EigenTracker
from landscope.curvature.tracking import MAX_ORDER, extrapolate, prediction_errors

N, K = 40, 3
SPECTRUM = torch.cat([torch.tensor([10.0, 9.5, 9.0]), torch.linspace(0.0, 5.0, N - 3)]).double()


def _skew(seed: int) -> torch.Tensor:
    S = torch.randn(N, N, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    S = S - S.T
    return S / torch.linalg.matrix_norm(S, ord=2)


def smooth_bases(n_steps: int, dt: float, seed: int = 0) -> list[torch.Tensor]:
    """Top-K eigenvectors of ``R_t D R_tᵀ``, ``R_t = exp(t·dt·S) R₀``: a constant rotation."""
    S, R0 = _skew(seed), random_orthogonal(N, seed + 1)
    return [(torch.linalg.matrix_exp((t * dt) * S) @ R0)[:, :K] for t in range(n_steps)]


def noisy_bases(n_steps: int, step: float, seed: int = 0) -> list[torch.Tensor]:
    """A random walk of K-dimensional subspaces: each basis the last one plus independent noise."""
    g = torch.Generator().manual_seed(seed)
    U = random_orthogonal(N, seed + 1)[:, :K]
    out = [U]
    for _ in range(n_steps - 1):
        U, _ = torch.linalg.qr(U + step * torch.randn(N, K, generator=g, dtype=torch.float64))
        out.append(U)
    return out


def gap(P: torch.Tensor, U: torch.Tensor) -> float:
    """``1 − ‖QᵀU‖²_F / K`` for ``Q`` an orthonormal basis of ``P``'s columns (written out here)."""
    Q, _ = torch.linalg.qr(P)
    return 1.0 - float(((Q.T @ U) ** 2).sum()) / U.shape[1]


def operators(bases: list[torch.Tensor]) -> list[DenseOperator]:
    """Operators whose top-K eigenvectors are ``bases`` (the rest of the space: a bulk in [0, 5])."""
    ops = []
    for U in bases:
        P = torch.eye(N, dtype=torch.float64) - U @ U.T
        W, _ = torch.linalg.qr(P @ random_orthogonal(N, 9)[:, : N - K])
        R = torch.cat([U, W], dim=1)
        ops.append(DenseOperator(0.5 * ((R * SPECTRUM) @ R.T + ((R * SPECTRUM) @ R.T).T)))
    return ops


@pytest.mark.parametrize("dt", [1e-2, 3e-2])
def test_each_order_gains_a_power_of_dt_on_a_constant_rotation(dt):
    bases = smooth_bases(4, dt)
    history, target = bases[:3], bases[3]
    errors = [gap(extrapolate(history, order, torch.device("cpu")), target) for order in range(3)]
    # the subspace error 1 − overlap is the squared angle: (dt^(p+1))² up to constants
    assert errors[0] > 0
    for p in (1, 2):
        assert errors[p] < 10 * dt**2 * errors[p - 1], errors


def test_extrapolation_ignores_signs_and_rotations_of_older_bases():
    """Older bases are aligned to the newest first, so a flipped or rotated basis predicts the same."""
    bases = smooth_bases(3, 1e-2)
    mixed = [bases[0] @ random_orthogonal(K, 5), -bases[1], bases[2]]
    for order in (1, 2):
        want = extrapolate(bases, order, torch.device("cpu"))
        got = extrapolate(mixed, order, torch.device("cpu"))
        assert torch.allclose(got, want, atol=1e-12, rtol=0)


def test_order_zero_returns_the_last_vectors_and_every_order_has_unit_columns():
    bases = smooth_bases(3, 1e-2)
    assert torch.equal(extrapolate(bases, 0, torch.device("cpu")), bases[-1])
    for order in range(MAX_ORDER + 1):
        P = extrapolate(bases, order, torch.device("cpu"))
        assert torch.allclose(P.norm(dim=0), torch.ones(K, dtype=torch.float64), atol=1e-14)


def best_order(history: list[torch.Tensor], new: torch.Tensor) -> int:
    """The order EigenTracker.update picks: the least prediction error."""
    return int(np.argmin(prediction_errors(history, new)))


def test_best_order_is_quadratic_on_a_rotation_and_none_on_a_random_walk():
    smooth = smooth_bases(4, 1e-2)
    assert best_order(smooth[:3], smooth[3]) == 2
    noisy = noisy_bases(4, 0.05)
    assert best_order(noisy[:3], noisy[3]) == 0
    # with fewer solves the order is capped by the history
    assert best_order(smooth[:1], smooth[1]) == 0
    assert best_order(smooth[:2], smooth[2]) == 1


@pytest.mark.parametrize("method", ["lanczos", "block"])
def test_tracker_learns_the_order_and_saves_products_on_a_smooth_path(method):
    ops = operators(smooth_bases(7, 2e-2))
    runs = {}
    for extrapolate_ in (True, False):
        trk = EigenTracker(k=K, tol=1e-8, method=method, extrapolate=extrapolate_, seed=3)
        runs[extrapolate_] = [trk.update(op) for op in ops]
        if extrapolate_:
            assert trk._order == 2
    for res in runs[True]:
        assert res.converged
    late = slice(4, None)  # from the fourth warm solve the quadratic prediction is in use
    with_, without = (sum(r.n_matvecs for r in runs[e][late]) for e in (True, False))
    assert with_ < without, (with_, without)
    for a, b in zip(runs[True], runs[False], strict=True):
        assert torch.allclose(a.values, b.values, atol=1e-7 * 10, rtol=0)


def test_tracker_falls_back_to_the_last_vectors_on_a_random_walk():
    ops = operators(noisy_bases(5, 0.05))
    trk = EigenTracker(k=K, tol=1e-8, method="block", seed=1)
    for op in ops:
        trk.update(op)
    assert trk._order == 0
    assert torch.equal(trk.predict(N, torch.device("cpu")), trk._history[-1])


def test_order_survives_a_checkpoint_and_old_checkpoints_extrapolate_linearly():
    ops = operators(smooth_bases(6, 2e-2))
    trk = EigenTracker(k=K, tol=1e-8, method="block", seed=2)
    for op in ops[:5]:
        trk.update(op)
    state = copy.deepcopy(trk.state_dict())
    assert state["order"] == 2 and len(state["history"]) == MAX_ORDER + 1
    resumed = EigenTracker(k=K, tol=1e-8, method="block", seed=2)
    resumed.load_state_dict(copy.deepcopy(state))
    got, want = resumed.update(ops[5]), trk.update(ops[5])
    assert torch.equal(got.values, want.values) and got.n_matvecs == want.n_matvecs
    old = {key: value for key, value in state.items() if key != "order"}
    old["history"] = old["history"][-2:]  # what state_dict kept before adaptive orders
    legacy = EigenTracker(k=K, tol=1e-8, method="block", seed=2)
    legacy.load_state_dict(old)
    assert legacy._order == 1
    assert torch.allclose(
        legacy.predict(N, torch.device("cpu")),
        extrapolate(old["history"], 1, torch.device("cpu")),
        atol=0,
        rtol=0,
    )


def test_auto_switches_to_the_block_only_while_a_quadratic_prediction_holds_to_tol():
    """k ≥ 2 below tol 1e-4: Lanczos, but the block from an accurate (quadratic) prediction."""
    smooth = EigenTracker(k=K, tol=1e-6, seed=4)
    assert smooth.method == "lanczos"
    methods = [smooth.update(op).method for op in operators(smooth_bases(8, 2e-2))]
    # cold, then no prediction, linear, and the quadratic once three solves are known
    assert methods[:4] == ["lanczos"] * 4 and methods[4:] == ["block"] * 4, methods
    noisy = EigenTracker(k=K, tol=1e-6, seed=4)
    assert {noisy.update(op).method for op in operators(noisy_bases(8, 0.05))} == {"lanczos"}
    # a fast rotation: the quadratic is still the best order, but off by more than tol
    fast = EigenTracker(k=K, tol=1e-6, seed=4)
    assert {fast.update(op).method for op in operators(smooth_bases(8, 0.15))} == {"lanczos"}
    assert fast._order == 2 and 1e-6 < fast._error < 1e-2
    # the rule is auto's: an explicit Lanczos tracker never switches
    fixed = EigenTracker(k=K, tol=1e-6, seed=4, method="lanczos")
    assert {fixed.update(op).method for op in operators(smooth_bases(8, 2e-2))} == {"lanczos"}
