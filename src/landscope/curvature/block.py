"""Block Rayleigh–Ritz with explicit residuals: the eigensolver for warm starts.

Lanczos grows one Krylov chain from one start vector, so a warm start can only be the *sum* of
the previous eigenvectors, and an eigenvalue whose vector is nearly absent from that sum is
missed without any sign in the residuals. Along a training run at a large learning rate the top
eigenvalues are clustered and their vectors turn by 10–40° a step; measured on the η = 0.3 quick
run of ``benchmarks/around_instabilities.py``, the Lanczos tracker missed one of the top-3
eigenvalues on 7 of the 301 steps inside instabilities (checked against a tol-1e-9 solve).

This solver starts from a *block*: the previous top-k vectors plus ``guards`` more (the next Ritz
vectors of the previous solve), so a direction that was fourth or fifth and rises into the top k
is already in the subspace. Each iteration takes the Rayleigh–Ritz pairs of the basis ``Q`` from
the products ``HQ`` kept beside it, so every residual ``‖H y − θ y‖`` is explicit (exact up to
float64 rounding for a float64 operator), and expands ``Q`` by the residuals of the wanted pairs
that have not converged yet (one batched :meth:`~CurvatureOperator.matmat` per iteration).
Converged pairs cost nothing more but stay in the basis. Without a preconditioner the residual
expansion spans the same space as a block Krylov step, so this is block Lanczos with explicit
residuals and locking (a Davidson method with the identity preconditioner). When the basis would
exceed ``max_basis`` it is compressed to its best Ritz vectors; no product is repeated.

Memory: ``2 × max_basis × dim`` float64 (basis and products), twice Lanczos's basis at the same
``max_basis``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from landscope.curvature.linear import VectorLayout
from landscope.curvature.operators import CurvatureOperator
from landscope.curvature.results import EigenResult
from landscope.curvature.ritz import (
    ROUNDING_MARGIN,
    Which,
    combine_rows,
    default_confirm,
    default_max_matvecs,
    finish,
    select,
    small_eigh,
)

DEFAULT_GUARDS = 2  # extra vectors carried beyond k (benchmarks/tracking.py)


@dataclass(frozen=True)
class BlockSolve:
    """A block solve's result and its guard vectors (the next Ritz vectors, for the next start)."""

    result: EigenResult
    guards: torch.Tensor  # (dim, g) float64, orthonormal, orthogonal to result.vectors


def default_max_basis(k: int, guards: int, dim: int) -> int:
    """``max(3b, b + 20)`` for a block of ``b = k + guards``, at most ``dim``."""
    b = k + guards
    return min(max(3 * b, b + 20), dim)


def _append(Q: torch.Tensor, m: int, W: torch.Tensor, floor: float, layout: VectorLayout) -> int:
    """Orthonormalise the rows of ``W`` against ``Q[:m]`` and each other into ``Q[m:]``.

    Two passes of classical Gram–Schmidt per row; a row left with less than ``floor`` of its
    norm (numerically inside the span) is dropped. Returns how many rows were added.
    """
    added = 0
    for w in W:
        w = w.clone()
        norm0 = layout.norm(w)
        if norm0 == 0 or not math.isfinite(norm0):
            continue
        for _ in range(2):
            w.addmv_(Q[: m + added].T, layout.dot(Q[: m + added], w), alpha=-1.0)
        norm = layout.norm(w)
        if norm <= floor * norm0:
            continue
        Q[m + added] = w / norm
        added += 1
    return added


def block_solve(
    op: CurvatureOperator,
    k: int,
    which: Which,
    tol: float,
    *,
    start: torch.Tensor | None = None,
    guards: int = DEFAULT_GUARDS,
    seed: int = 0,
    max_basis: int | None = None,
    max_matvecs: int | None = None,
    return_vectors: bool = True,
    confirm: bool | str | None = None,
    report: Callable[[int, float], None] | None = None,
) -> BlockSolve:
    """Top-``k`` pairs (for ``which``) of ``op`` from a start block; see the module docstring.

    Args:
        op: the operator (already checked).
        k: wanted pairs (already checked: ``1 ≤ k ≤ dim``).
        which: ``"LA"``, ``"SA"`` or ``"LM"``.
        tol: relative residual tolerance, ``‖Hy − θy‖ ≤ tol · scale`` (``scale`` the largest
            |Ritz value| seen), as for Lanczos.
        start: ``(dim, c)`` start columns, e.g. the previous vectors and guards; random columns
            (seeded) fill the block up to ``k + guards``. ``None``: a cold, random block.
        guards: vectors carried beyond ``k``. They need not converge; they make a direction that
            rises into the top ``k`` visible and speed up clustered spectra.
        seed: seeds the random columns.
        max_basis: basis size before compression (default :func:`default_max_basis`). Below
            about ``3 (k + guards)`` each compression discards most of the Krylov history, and
            clustered spectra converge slowly (reported, with ``converged=False`` at the budget).
        max_matvecs: give up (``converged=False``, with a warning) after this many products (the
            first block takes at least ``k``, whatever the budget).
        return_vectors: keep the eigenvectors in the result.
        confirm: ``True`` re-measures the residuals with ``k`` products; ``None`` (default) uses
            the explicit residuals as they are for float64 operators, and below float64 adds the
            rounding that one explicit product on the top pair shows (as Lanczos does; not at
            a ``tol`` ≥ 1000 × the dtype's epsilon).
        report: called with ``(n_matvecs, worst relative residual)`` after each iteration.
    """
    layout, device = op.layout, op.device
    n, local = layout.global_dim, op.dim  # a sharded operator's process holds ``local`` of ``n``
    b = min(k + max(int(guards), 0), n)
    if max_matvecs is not None:
        b = min(b, max(k, int(max_matvecs)))  # the first block is at least the k wanted vectors
    m_max = max_basis if max_basis is not None else default_max_basis(k, b - k, n)
    m_max = min(max(int(m_max), b + 1), n)  # room for at least one expansion
    if max_matvecs is None:
        max_matvecs = default_max_matvecs(m_max, n)
    if confirm is None:
        confirm = default_confirm(op, tol)
    # The residuals here are explicit, from the stored products: below float64 they stall near
    # the products' own rounding (finish's docstring), so asking past it only spends products (a
    # float32 tracker at tol 1e-8 ran to its budget: 1,000 products stalled at 1.5e-8 on an MLP,
    # 7,844 at 1.4e-7 on a BatchNorm CNN, whose products near the top vector are inconsistent by
    # 3-7e-7). So the goal is the dtype's epsilon, and once the residuals come within
    # ROUNDING_MARGIN epsilons, one product near the top Ritz vector measures that rounding (how
    # far a fresh product lies from the same combination of the stored ones): below it a stored
    # residual is not resolved, and the goal rises to it. finish still judges tol.
    eps = float(torch.finfo(op.dtype).eps)
    target = max(tol, eps)
    measured: float | None = None  # that rounding, absolute; finish adds it to the residuals
    probe_below = ROUNDING_MARGIN * eps if op.dtype != torch.float64 and tol < ROUNDING_MARGIN * eps else 0.0
    gen = torch.Generator().manual_seed(int(seed))
    Q = torch.empty(m_max, local, dtype=torch.float64, device=device)
    HQ = torch.empty(m_max, local, dtype=torch.float64, device=device)
    rows = [] if start is None else list(start.to(device=device, dtype=torch.float64).T[:b])
    rows += [layout.normal(gen, device) for _ in range(b - len(rows))]
    m = _append(Q, 0, torch.stack(rows), 1e-8, layout)
    while m < b:  # start columns that were dependent: fill with random directions
        m += _append(Q, m, layout.normal(gen, device)[None], 1e-8, layout)
    HQ[:m] = op.matmat(Q[:m].T).T
    n_matvecs, n_restarts, scale = m, 0, 0.0
    while True:
        T = layout.reduce(Q[:m] @ HQ[:m].T).cpu().numpy()
        theta, S = small_eigh(T)
        order = select(theta, which)
        scale = max(scale, float(np.abs(theta).max()))
        floor = max(scale, 1e-300)
        want = order[:k]
        Sk = torch.as_tensor(S[:, want].T.copy(), device=device)  # (k, m)
        th = torch.as_tensor(theta[want].copy(), device=device)
        Yk = Sk @ Q[:m]  # the wanted Ritz vectors, as rows
        R = Sk @ HQ[:m] - th[:, None] * Yk
        res = layout.column_norms(R, dim=1)
        worst = float(res.max()) / floor
        if worst <= probe_below and m > 1:
            # Once: the rounding is the operator's at this scale. The probe mixes in the next Ritz
            # vector because a warm start's Ritz vector can be a stored row to the bit, whose
            # fresh product repeats the stored one exactly and would show no rounding at all.
            probe_below = 0.0
            c = torch.as_tensor((S[:, want[0]] + 0.1 * S[:, order[1]]) / math.sqrt(1.01), device=device)
            product = op.matvec(c @ Q[:m])
            n_matvecs += 1
            measured = float(layout.norm(product - c @ HQ[:m]))
            target = max(target, measured / floor)
        if report is not None:
            report(n_matvecs, worst)
        todo = torch.nonzero(res > target * floor).flatten()
        if len(todo) == 0 or m == n:
            break
        if n_matvecs >= max_matvecs:
            warnings.warn(
                f"block eigensolver stopped after max_matvecs={max_matvecs} products "
                f"with relative residual {worst:.2e} > tol={tol:g}",
                RuntimeWarning,
                stacklevel=3,
            )
            break
        W = R[todo][: max_matvecs - n_matvecs]  # never past the budget
        if m + len(W) > m_max:
            # Compress to the best Ritz vectors: H Q stays known, so no product is repeated.
            l = max(min(m, b + (m_max - b) // 2, m_max - len(W)), b)
            W = W[: m_max - l]
            keep = order[:l]
            C = torch.as_tensor(S[:, keep].T.copy(), device=device)
            combine_rows(Q, C, m)
            combine_rows(HQ, C, m)
            m = len(keep)
            n_restarts += 1
        added = _append(Q, m, W, 1e-10, layout)
        if added == 0:  # residuals numerically inside the basis: continue from a fresh direction
            added = _append(Q, m, layout.normal(gen, device)[None], 1e-8, layout)
            if added == 0:
                break
        HQ[m : m + added] = op.matmat(Q[m : m + added].T).T
        n_matvecs += added
        m += added
    # the last Rayleigh–Ritz pairs and their explicit residuals, values descending as finish expects
    desc = np.argsort(-theta[want], kind="stable")
    Y = Yk[torch.as_tensor(desc.copy(), device=device)].T.contiguous()
    residuals = res.cpu().numpy()[desc]
    want = want[desc]
    guard_idx = order[k:b]
    G = (
        Q[:m].T @ torch.as_tensor(S[:, guard_idx].copy(), device=device)
        if len(guard_idx)
        else Q.new_zeros(local, 0)
    )
    result = finish(
        op,
        Y,
        theta[want],
        residuals,
        tol,
        scale,
        which,
        "block",
        n_matvecs,
        n_restarts,
        return_vectors,
        confirm,
        resolution=target if target > tol and len(todo) == 0 else 0.0,
        rounding=measured,
    )
    return BlockSolve(result=result, guards=G)
