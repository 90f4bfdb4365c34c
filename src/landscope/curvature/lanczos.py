"""Extreme eigenpairs of a curvature operator: thick-restart Lanczos.

The Krylov basis is kept in float64 with full reorthogonalisation (two passes of classical
Gram–Schmidt), whatever the operator's dtype, so Ritz values do not suffer the ghost copies of plain
Lanczos. The projected matrix ``T = QᵀHQ`` is assembled from the products actually computed, and
the basis is compressed to the best Ritz vectors when it would exceed ``max_basis`` (thick restart,
equivalent to Krylov–Schur for symmetric matrices). Memory: ``(max_basis + 1) × dim`` float64 for
the basis, one product vector, and the ``k`` returned vectors; products are orthogonalised in
place and the restart is done in column blocks, so nothing else of size ``dim`` is held
(``tests/test_memory.py`` measures the peak: 13.2 × dim at max_basis 12, 16.0 with 4 vectors
returned). With ``check_multiplicity=True`` the basis grows instead of restarting while a fresh
chain is verified. By default (k ≥ 2) a converged solve is followed by the multiplicity probe of
:mod:`~landscope.curvature.probe` (``PROBE_PRODUCTS`` products on the complement of the returned
vectors, at most ``max_basis − k`` of them, so that it fits in the basis's memory; the ``k``
vectors are then formed even when not returned). If it finds a better value, a block solve started
from the returned vectors and the probe's direction takes over (:mod:`~landscope.curvature.block`,
twice the memory), and the probe is repeated.

A pair is converged when ``‖H v − θ v‖ ≤ tol · scale``. For ``which="LM"`` ``scale`` is the
largest Ritz value in magnitude (≈ ‖H‖); for ``"LA"`` / ``"SA"`` it is the largest magnitude among
the wanted Ritz values, but at least ``tol`` times that (:func:`converge_scale`): on a Hessian
whose top dominates, |θ₁| either way. While iterating the residual is
estimated from the Krylov relation of the products actually taken (``β_m |s_{m,i}|`` plus what
earlier chain ends left outside the basis, see :func:`_chain_residuals`); below float64 one explicit
product adds the operator's own rounding, and ``confirm=True`` re-measures all ``k`` explicitly.
Where that rounding alone fails ``tol`` (a float32 CNN at tol 1e-6: 2e-6 of λ₁), the solve
warns and says ``converged=False``; its ``solver_converged`` and ``rounding`` tell the two apart.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from landscope.curvature.block import DEFAULT_GUARDS, block_solve
from landscope.curvature.operators import CurvatureOperator
from landscope.curvature.power import power_iteration
from landscope.curvature.probe import PROBE_PRODUCTS, beats, kth_value, probe_complement
from landscope.curvature.results import EigenResult
from landscope.curvature.ritz import (
    WHICH,
    Which,
    check_k,
    check_max_basis,
    check_operator,
    check_start,
    combine_rows,
    default_confirm,
    default_max_matvecs,
    finish,
    orthogonalise,
    orthogonalise_with_norm,
    select,
    small_eigh,
    whole_only,
)
from landscope.errors import InputError

if TYPE_CHECKING:
    from rich.progress import Progress

METHODS = ("lanczos", "block", "power", "dense")
PROBE_ROUNDS = 4  # probe → block solve rounds before a warning (each finds at least one value)


def eigenpairs(
    op: CurvatureOperator | torch.Tensor,
    k: int = 10,
    which: Which = "LA",
    tol: float = 1e-6,
    method: str = "lanczos",
    seed: int = 0,
    v0: torch.Tensor | None = None,
    *,
    max_basis: int | None = None,
    max_matvecs: int | None = None,
    return_vectors: bool = True,
    confirm: bool | None = None,
    check_multiplicity: bool | None = None,
    progress: bool | Callable[[int, float], None] = False,
) -> EigenResult:
    """The ``k`` extreme eigenpairs of a symmetric operator.

    Args:
        op: a :class:`CurvatureOperator` (or a square symmetric tensor).
        k: number of eigenpairs (``1 ≤ k ≤ op.dim``).
        which: ``"LA"`` largest algebraic (top curvature), ``"SA"`` smallest algebraic (negative
            curvature), ``"LM"`` largest magnitude.
        tol: relative residual tolerance, ``‖Hv − θv‖ ≤ tol · scale``.
        method: ``"lanczos"`` (default), ``"block"`` (block Rayleigh–Ritz with explicit
            residuals, :mod:`~landscope.curvature.block`: for warm starts), ``"power"``
            (deflated power iteration, ``LA``/``LM`` only, slower and less accurate: for
            comparison), ``"dense"`` (materialises the matrix:
            tiny operators only).
        seed: seeds the start vector and the multiplicity probe (``torch.Generator``); same
            seed, same result.
        v0: start vector (length ``op.dim``), e.g. the previous top eigenvector.
        max_basis: Krylov basis size before a thick restart (default ``max(3k, k + 40)``, at most
            ``dim``); memory ``(max_basis + 1) × dim`` float64.
        max_matvecs: give up (``converged=False``, with a warning) after this many products.
        return_vectors: keep the eigenvectors in the result.
        confirm: how the residuals are measured. ``True``: ``k`` explicit products at the end.
            ``False``: from the Krylov relation of the products already computed, at no cost;
            exact up to float64 rounding in the basis for a float64 operator (a test checks they
            agree with explicit ones). ``None`` (default): ``False`` for float64 operators; below
            float64 one explicit product on the top pair measures how much the operator's own
            rounding adds (a float32 product is not exactly linear; on the BatchNorm CNN of the
            benchmark the relation alone gave 6e-7 where the float64 truth was 1.3e-6), and that
            amount is added to every residual; skipped when ``tol`` ≥ 1000 × the dtype's
            epsilon (1.2e-4 for float32), where that rounding cannot change a verdict.
        check_multiplicity: find every copy of repeated eigenvalues. A single start vector sees
            one copy of an exactly repeated eigenvalue (last-layer blocks of MSE losses are
            Kronecker products with the identity: each eigenvalue repeats C times; symmetric
            models). ``None`` (default): for k ≥ 2, the multiplicity probe
            (:mod:`~landscope.curvature.probe`, ``PROBE_PRODUCTS`` = 12 products) after
            convergence; only if it finds a better value does a block solve follow (the result's
            ``method`` is then ``"block"``). ``True``: the exhaustive check: the Krylov process
            continues from a fresh random direction orthogonal to the basis until the best Ritz
            pair of that segment converges; if it beats the k-th wanted value, another segment
            follows (about a top-1 solve per segment). ``False``: no check (k = 1 needs none:
            λ₁'s value does not depend on its copies).
        progress: ``True`` for a rich progress bar, or a callable ``(n_matvecs, max_rel_residual)``.

    Returns:
        :class:`EigenResult`, values sorted descending.
    """
    op = check_operator(op)
    k = check_k(k, op.layout.global_dim)
    if which not in WHICH:
        raise InputError(f"which must be one of {WHICH}, got {which!r}")
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol <= 0:
        raise InputError(f"tol must be a positive number, got {tol!r}")
    if check_multiplicity is not None and not isinstance(check_multiplicity, bool):
        raise InputError(
            f"check_multiplicity must be True, False or None (the default probe), got {check_multiplicity!r}"
        )
    v0 = check_start(v0, op.layout)
    if method in ("dense", "power"):
        whole_only(op, f"method={method!r}")
    if method == "dense":
        return _dense(op, k, which, tol, return_vectors)
    if method == "power":
        if which == "SA":
            raise InputError(
                "method='power' finds the largest-magnitude eigenvalues; use method='lanczos' for which='SA'"
            )
        return power_iteration(
            op,
            k=k,
            tol=tol,
            seed=seed,
            v0=v0,
            max_matvecs=max_matvecs,
            return_vectors=return_vectors,
            which=which,
        )
    if method == "block":
        if check_multiplicity:
            raise InputError(
                "check_multiplicity is for method='lanczos'; method='block' finds "
                "repeated eigenvalues up to its block size (k + 2) by itself"
            )
        max_basis = check_max_basis(max_basis, k)
        with _Reporter(progress, f"block top-{k} ({which})") as report:
            return block_solve(
                op,
                k,
                which,
                tol,
                start=None if v0 is None else v0[:, None],
                seed=seed,
                max_basis=max_basis,
                max_matvecs=max_matvecs,
                return_vectors=return_vectors,
                confirm=confirm,
                report=report,
            ).result
    max_basis = check_max_basis(max_basis, k)
    with _Reporter(progress, f"Lanczos top-{k} ({which})") as report:
        return _lanczos(
            op,
            k,
            which,
            tol,
            seed,
            v0,
            max_basis,
            max_matvecs,
            return_vectors,
            confirm,
            check_multiplicity,
            report,
        )[0]


def _lanczos(
    op: CurvatureOperator,
    k: int,
    which: Which,
    tol: float,
    seed: int,
    v0: torch.Tensor | None,
    max_basis: int | None,
    max_matvecs: int | None,
    return_vectors: bool,
    confirm: bool | str | None,
    check_multiplicity: bool | None,
    report: Callable[[int, float], None],
    n_extra: int = 0,
) -> tuple[EigenResult, torch.Tensor]:
    """Thick-restart Lanczos with the defaults filled in (``max_basis``, budget, ``confirm``).

    Followed by the multiplicity probe unless ``check_multiplicity`` is ``True`` or ``False``.
    """
    n = op.layout.global_dim
    max_basis = min(max(3 * k, k + 40) if max_basis is None else max_basis, n)
    if max_matvecs is None:
        max_matvecs = default_max_matvecs(max_basis, n)
    if confirm is None:
        confirm = default_confirm(op, tol)
    probe = check_multiplicity is None and 2 <= k < n
    res, extra = _thick_restart_lanczos(
        op,
        k,
        which,
        tol,
        seed,
        v0,
        max_basis,
        max_matvecs,
        return_vectors or probe,
        confirm,
        check_multiplicity is True,
        report,
        n_extra,
    )
    if probe and res.solver_converged:  # also where float32 rounding alone fails the check
        res, extra = _probe_and_refine(
            op, res, extra, tol, seed, max_matvecs, confirm, report, room=max_basis - k
        )
    if not return_vectors and res.vectors is not None:
        res = dataclasses.replace(res, vectors=None)
    return res, extra


def _probe_and_refine(
    op: CurvatureOperator,
    res: EigenResult,
    extra: torch.Tensor,
    tol: float,
    seed: int,
    max_matvecs: int,
    confirm: bool | str,
    report: Callable[[int, float], None],
    room: int,
) -> tuple[EigenResult, torch.Tensor]:
    """Probe the complement of a converged solve; while it finds better values, re-solve.

    Each probe that finds a direction is followed by another on the complement of that one too,
    so that all missing copies are collected (up to ``k``) before one block solve, started from
    the returned vectors, the found directions, the guards and two random columns, takes over.
    Its block is wider than ``k`` by the found directions, so it holds the missing copies by
    construction. The probes take at most ``room`` products and vectors (``max_basis − k``), so
    that they and the ``k`` returned vectors fit in the Lanczos basis's memory.
    """
    gen = torch.Generator().manual_seed(int(seed) + 0x5EED)  # its own stream: v0 alone fixes the solve
    k, which, total = res.k, res.which, res.n_matvecs
    for _ in range(PROBE_ROUNDS):
        assert res.vectors is not None
        Y = res.vectors
        kth = kth_value(res.values.cpu().numpy(), which)
        worst = float(res.relative_residuals.max())
        found: list[torch.Tensor] = []
        while len(found) < k:
            length = min(
                PROBE_PRODUCTS, room - len(found), op.layout.global_dim - k - len(found), max_matvecs - total
            )
            if length <= 0:
                if not found:
                    warnings.warn(
                        f"the multiplicity probe was skipped (max_matvecs={max_matvecs} "
                        f"or max_basis reached); copies of repeated eigenvalues may be "
                        "missing",
                        RuntimeWarning,
                        stacklevel=4,
                    )
                break
            known = torch.cat([Y, torch.stack(found, dim=1).to(Y.device)], dim=1) if found else Y

            def probe_report(n: int, done: int = total, r: float = worst) -> None:
                report(done + n, r)

            z, used = probe_complement(
                op,
                known,
                kth,
                which,
                tol * res.scale,
                length,
                gen,
                report=probe_report,
            )
            total += used
            if z is None:
                break
            found.append(z)
        if not found:
            break
        start = torch.cat(
            [Y.to(found[0].device), torch.stack(found, dim=1), extra.to(found[0].device)], dim=1
        )

        def block_report(n: int, r: float, done: int = total) -> None:
            report(done + n, r)

        # two random columns beyond the start: the block can grow past what the probes found
        solve = block_solve(
            op,
            k,
            which,
            tol,
            start=start,
            guards=start.shape[1] - k + DEFAULT_GUARDS,
            seed=seed,
            max_matvecs=max(max_matvecs - total, k),
            confirm=confirm,
            report=block_report,
        )
        total += solve.result.n_matvecs
        res, extra = solve.result, solve.guards[:, : extra.shape[1]]
        if not res.solver_converged:
            break
    else:
        warnings.warn(
            f"the multiplicity probe still found better values after {PROBE_ROUNDS} "
            "rounds; the top values may be incomplete",
            RuntimeWarning,
            stacklevel=4,
        )
    return dataclasses.replace(res, n_matvecs=total), extra


def lanczos_with_guards(
    op: CurvatureOperator,
    k: int,
    which: Which,
    tol: float,
    *,
    seed: int,
    v0: torch.Tensor | None,
    max_basis: int | None,
    guards: int,
    check_multiplicity: bool | None = None,
) -> tuple[EigenResult, torch.Tensor]:
    """:func:`eigenpairs` (Lanczos) that also returns the next ``guards`` Ritz vectors.

    They are not converged, but they are the directions just below the wanted ones, which the
    next warm start of a tracker must contain to see an eigenvalue rise into the top ``k``.
    """
    return _lanczos(
        op,
        k,
        which,
        tol,
        seed,
        v0,
        max_basis,
        None,
        True,
        None,
        check_multiplicity,
        lambda n, r: None,
        n_extra=guards,
    )


class _Reporter:
    """Context manager yielding ``report(n_matvecs, max_rel_residual)``; a rich bar if asked."""

    def __init__(self, progress: bool | Callable[[int, float], None], title: str) -> None:
        self.progress, self.title = progress, title
        self._bar: Progress | None = None

    def __enter__(self) -> Callable[[int, float], None]:
        if callable(self.progress):
            return self.progress
        if self.progress is not True:
            return lambda n, r: None
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TextColumn("matvecs {task.completed:.0f}"),
            TextColumn("residual {task.fields[res]}"),
            TimeElapsedColumn(),
            transient=True,
        )
        self._bar.__enter__()
        task = self._bar.add_task(self.title, total=None, res="-")
        bar = self._bar

        def report(n: int, res: float) -> None:
            bar.update(task, completed=n, res=f"{res:.1e}")

        return report

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)
        return False


def _dense(op: CurvatureOperator, k: int, which: Which, tol: float, return_vectors: bool) -> EigenResult:
    H = op.to_dense(torch.float64)
    H = 0.5 * (H + H.T)
    evals, evecs = torch.linalg.eigh(H)
    idx = select(evals.cpu().numpy(), which)[:k]
    idx_t = torch.as_tensor(idx.copy(), device=evecs.device)
    scale = float(evals.abs().max())
    return finish(
        op,
        evecs[:, idx_t],
        evals.cpu().numpy()[idx],
        None,
        tol,
        scale,
        which,
        "dense",
        op.dim,
        0,
        return_vectors,
        confirm=True,
    )


def _chain_residuals(A: np.ndarray, S: np.ndarray, beta: float, ends: list[tuple[int, float]]) -> np.ndarray:
    """Residual norms ``‖H y − θ y‖`` of the Ritz pairs ``y = Q s`` (columns of ``S``).

    The basis is one or more Lanczos chains (a new chain starts from a random direction after an
    invariant subspace is found, or while checking multiplicity). ``A = QᵀHQ`` is filled from the
    products actually computed, so ``H Q = Q A + F`` where ``F`` has a column only at chain ends:
    the running chain's residual ``β q`` and, for each earlier chain end ``c`` (with residual norm
    ``b`` when it ended), the part of that residual no later basis vector absorbed, of norm
    ``√(b² − Σ_{r>c} A[r, c]²)``. Bounded by the triangle inequality.
    """
    j = S.shape[0]
    res = beta * np.abs(S[j - 1])
    for c, b in ends:
        left = b * b - float((A[c + 1 : j, c] ** 2).sum())
        res = res + np.sqrt(max(left, 0.0)) * np.abs(S[c])
    return res


def converge_scale(wanted: np.ndarray, scale: float, which: Which, tol: float) -> float:
    """What residuals are relative to: the wanted end's magnitude, floored at ``tol · scale``.

    ``scale`` (the largest Ritz value in magnitude, ≈ ‖H‖) alone lets the top of an indefinite
    spectrum "converge" far from λ_max when the other end dominates: after a destructive step
    (λ_min ≈ −19,000, λ_max ≈ 2,600) four of five cold top-1 solves at tol 3e-2 stopped at 5–14,
    each within its residual of *some* eigenvalue. The floor bounds the work when the wanted
    end is near zero (residual ≤ tol² · scale at worst). For ``"LM"`` the two coincide.
    """
    floor = max(scale, 1e-300)
    if which == "LM" or len(wanted) == 0:
        return floor
    return max(float(np.abs(wanted).max()), tol * floor)


def _thick_restart_lanczos(
    op: CurvatureOperator,
    k: int,
    which: Which,
    tol: float,
    seed: int,
    v0: torch.Tensor | None,
    m: int,
    max_matvecs: int,
    return_vectors: bool,
    confirm: bool | str,
    check_multiplicity: bool,
    report: Callable[[int, float], None],
    n_extra: int = 0,
) -> tuple[EigenResult, torch.Tensor]:
    # n: the whole vectors' length (what the logic counts); a sharded operator's process holds
    # op.dim of it (what is allocated), and ``layout`` sums its inner products over the shards
    layout, device = op.layout, op.device
    n, local = layout.global_dim, op.dim
    gen = torch.Generator().manual_seed(int(seed))
    # Rows are written before they are read, so the basis is not zero-filled: untouched rows of
    # a large allocation are never paged in (a warm top-1 solve uses a few of its 41 rows).
    Q = torch.empty(m + 1, local, dtype=torch.float64, device=device)
    A = np.zeros((m + 1, m + 1))  # QᵀHQ, filled symmetrically from the computed products
    q = v0.to(device) if v0 is not None else layout.normal(gen, device)
    torch.div(q, layout.norm(q), out=Q[0])
    del q  # not kept for the whole solve
    j = 0  # basis vectors whose product has been taken
    n_matvecs = n_restarts = 0
    theta = S = idx = None
    beta, scale, drift = 0.0, 0.0, 0.0
    ends: list[tuple[int, float]] = []  # (row, residual norm) where earlier chains ended
    segment: int | None = None  # first row of the fresh chain while checking multiplicity
    kth_before = 0.0
    while True:
        w = None  # the previous product is freed before the next one is allocated
        w = op.matvec(Q[j])
        n_matvecs += 1
        w, h, beta = orthogonalise_with_norm(w, Q[: j + 1], layout)
        h_np = h.cpu().numpy()
        A[: j + 1, j] = h_np
        A[j, : j + 1] = h_np
        j += 1
        theta, S = small_eigh(A[:j, :j])
        idx = select(theta, which)
        scale = max(scale, float(np.abs(theta).max()))
        want = idx[: min(k, j)]
        floor = converge_scale(theta[want], scale, which, tol)
        est = _chain_residuals(A, S[:, want], beta, ends) + drift
        worst = float(est.max() / floor) if j >= k else math.inf
        report(n_matvecs, worst)
        new_chain = False
        if j >= k and worst <= tol:
            if segment is None and not (check_multiplicity and j < n):
                break
            if segment is None:
                new_chain = True
            else:
                # Verifying: the fresh chain is Lanczos on P H P, P projecting out the earlier
                # basis, so the top of its own block is the top of the complement. Once that has
                # converged, another chain is needed only if it beat the k-th wanted value (a
                # missing copy was found, and merged into the wanted pairs by the full A).
                mu, Sf = small_eigh(A[segment:j, segment:j])
                top = select(mu, which)[0]
                if beta * abs(Sf[-1, top]) <= tol * floor:
                    if j >= n or not beats(mu[top], kth_before, which, tol * floor):
                        break
                    new_chain = True
            if new_chain:
                kth_before = kth_value(theta[want], which)
                segment = j
        if j == n:  # the basis spans the whole space: the Ritz pairs are exact
            break
        if n_matvecs >= max_matvecs:
            warnings.warn(
                f"Lanczos stopped after max_matvecs={max_matvecs} products with relative "
                f"residual {worst:.2e} > tol={tol:g}",
                RuntimeWarning,
                stacklevel=3,
            )
            break
        if new_chain or beta <= 1e-12 * floor:
            # Start a new chain from a fresh direction orthogonal to the basis: after an invariant
            # subspace (low-rank operators), or to look for further copies of repeated
            # eigenvalues. The old chain's residual stays accounted for in ``ends``.
            ends.append((j - 1, beta))
            w, _ = orthogonalise(layout.normal(gen, device), Q[:j], layout)
            q_scale = layout.norm(w)
        else:
            q_scale = beta
        if j == m and segment is not None and m < n:
            # While verifying, grow the basis instead of restarting: a restart would mix the
            # fresh chain into the kept Ritz vectors.
            grow = min(m, n - m)
            Q = torch.cat([Q, Q.new_zeros(grow, local)])
            A = np.pad(A, ((0, grow), (0, grow)))
            m += grow
        if j == m:
            # Thick restart: keep the best l Ritz vectors. H Y = Y Θ + β q sᵀ keeps the Krylov
            # form, so the next product continues the same decomposition; what earlier chain ends
            # left outside the basis is carried as a bound in ``drift``.
            keep = idx[: min(m - 1, k + max((m - k) // 2, 1))]
            l = len(keep)
            Sk = S[:, keep]
            drift += float(_chain_residuals(A, Sk, 0.0, ends).max()) if ends else 0.0
            combine_rows(Q, torch.as_tensor(Sk.T.copy(), device=device), j)
            coupling = 0.0 if ends and ends[-1][0] == j - 1 else beta
            ends = []
            A[:] = 0.0
            A[np.arange(l), np.arange(l)] = theta[keep]
            A[:l, l] = coupling * Sk[j - 1]
            A[l, :l] = A[:l, l]
            j = l
            n_restarts += 1
        torch.div(w, q_scale, out=Q[j])
    w = None
    want = idx[:k]
    want = want[np.argsort(-theta[want], kind="stable")]  # descending: _finish need not reorder
    if return_vectors or confirm is not False:
        Y = Q[:j].T @ torch.as_tensor(S[:, want].copy(), device=device)
    else:
        Y = Q.new_zeros(local, 0)
    residuals = _chain_residuals(A, S[:, want], beta, ends) + drift
    more = idx[k : k + n_extra]  # the next Ritz vectors (not converged): a tracker's guards
    extra = (
        Q[:j].T @ torch.as_tensor(S[:, more].copy(), device=device) if len(more) else Q.new_zeros(local, 0)
    )
    return finish(
        op,
        Y,
        theta[want],
        residuals,
        tol,
        scale,
        which,
        "lanczos",
        n_matvecs,
        n_restarts,
        return_vectors,
        confirm,
    ), extra
