"""Extreme eigenpairs of a curvature operator: thick-restart Lanczos.

The Krylov basis is kept in float64 with full reorthogonalisation (two passes of classical
Gram–Schmidt), whatever the operator's dtype, so Ritz values do not suffer the ghost copies of plain
Lanczos. The projected matrix ``T = QᵀHQ`` is assembled from the products actually computed, and
the basis is compressed to the best Ritz vectors when it would exceed ``max_basis`` (thick restart,
equivalent to Krylov–Schur for symmetric matrices). Memory: ``(max_basis + 1) × dim`` float64 for
the basis, plus the ``k`` returned vectors.

A pair is converged when ``‖H v − θ v‖ ≤ tol · scale`` with ``scale`` the largest Ritz value in
magnitude (≈ |λ₁|, for ``which="LA"`` on a Hessian exactly |θ₁|). While iterating the residual is
estimated from the recurrence (``β_m |s_{m,i}|``); the residuals returned are computed from the
Krylov relation of the products actually taken (the projections are kept unsymmetrised), or
re-measured with ``k`` explicit products with ``confirm=True``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import torch

from landscope.curvature.operators import CurvatureOperator, DenseOperator
from landscope.curvature.results import EigenResult
from landscope.errors import InputError

WHICH = ("LA", "SA", "LM")
METHODS = ("lanczos", "power", "dense")


def _small_eigh(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of the small projected matrix.

    Done by torch, not NumPy: NumPy's OpenBLAS threads spin after each call and steal the cores
    from torch's next matvec (measured: 3× slower matvecs on 2 cores).
    """
    Tt = torch.from_numpy(T)
    theta, S = torch.linalg.eigh(0.5 * (Tt + Tt.T))
    return theta.numpy(), S.numpy()


def _select(theta: np.ndarray, which: str) -> np.ndarray:
    """Indices of Ritz values in order of preference for ``which``."""
    if which == "LA":
        return np.argsort(-theta, kind="stable")
    if which == "SA":
        return np.argsort(theta, kind="stable")
    return np.argsort(-np.abs(theta), kind="stable")


def check_operator(op: object) -> CurvatureOperator:
    """Accept a :class:`CurvatureOperator` or a square tensor (wrapped as a dense operator)."""
    if isinstance(op, CurvatureOperator):
        return op
    if isinstance(op, torch.Tensor):
        return DenseOperator(op)
    raise InputError(f"expected a CurvatureOperator (or a square tensor), got {type(op).__name__}")


def check_k(k: object, dim: int) -> int:
    """``k`` must be a positive int no larger than the operator's dimension."""
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    if k > dim:
        raise InputError(f"k={k} exceeds the operator's dimension {dim}")
    return int(k)


def check_start(v0: torch.Tensor | None, dim: int) -> torch.Tensor | None:
    """A start vector must be a finite, non-zero vector of length ``dim``."""
    if v0 is None:
        return None
    if not isinstance(v0, torch.Tensor) or v0.dim() != 1 or v0.numel() != dim:
        shape = tuple(v0.shape) if isinstance(v0, torch.Tensor) else type(v0).__name__
        raise InputError(f"v0 must be a vector of length {dim}, got {shape}")
    v0 = v0.detach().to(torch.float64)
    if not torch.isfinite(v0).all() or v0.norm() == 0:
        raise InputError("v0 must be finite and non-zero")
    return v0


def random_vector(dim: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """A standard normal float64 vector drawn on the CPU (same numbers on every device)."""
    return torch.randn(dim, generator=generator, dtype=torch.float64).to(device)


def orthogonalise(w: torch.Tensor, Q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove from ``w`` its components along the rows of ``Q`` (two passes: DGKS-safe)."""
    if Q.shape[0] == 0:
        return w, torch.zeros(0, dtype=w.dtype, device=w.device)
    h = Q @ w
    w = w - Q.T @ h
    h2 = Q @ w
    w = w - Q.T @ h2
    return w, h + h2


def eigenpairs(op: CurvatureOperator | torch.Tensor, k: int = 10, which: str = "LA",
               tol: float = 1e-6, method: str = "lanczos", seed: int = 0,
               v0: torch.Tensor | None = None, *, max_basis: int | None = None,
               max_matvecs: int | None = None, return_vectors: bool = True,
               confirm: bool = False, progress: bool | Callable[[int, float], None] = False) -> EigenResult:
    """The ``k`` extreme eigenpairs of a symmetric operator.

    Args:
        op: a :class:`CurvatureOperator` (or a square symmetric tensor).
        k: number of eigenpairs (``1 ≤ k ≤ op.dim``).
        which: ``"LA"`` largest algebraic (top curvature), ``"SA"`` smallest algebraic (negative
            curvature), ``"LM"`` largest magnitude.
        tol: relative residual tolerance, ``‖Hv − θv‖ ≤ tol · scale``.
        method: ``"lanczos"`` (default), ``"power"`` (deflated power iteration, ``LA``/``LM``
            only, slower and less accurate: for comparison), ``"dense"`` (materialises the matrix:
            tiny operators only).
        seed: seeds the start vector (``torch.Generator``); same seed, same result.
        v0: start vector (length ``op.dim``), e.g. the previous top eigenvector.
        max_basis: Krylov basis size before a thick restart (default ``max(3k, k + 40)``, at most
            ``dim``); memory ``(max_basis + 1) × dim`` float64.
        max_matvecs: give up (``converged=False``, with a warning) after this many products.
        return_vectors: keep the eigenvectors in the result.
        confirm: re-measure the residuals with ``k`` explicit products at the end. Without it the
            residuals come from the Krylov relation of the products already computed (exact up to
            float64 rounding in the basis; a test checks both agree), at no extra cost.
        progress: ``True`` for a rich progress bar, or a callable ``(n_matvecs, max_rel_residual)``.

    Returns:
        :class:`EigenResult`, values sorted descending.
    """
    op = check_operator(op)
    k = check_k(k, op.dim)
    if which not in WHICH:
        raise InputError(f"which must be one of {WHICH}, got {which!r}")
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol <= 0:
        raise InputError(f"tol must be a positive number, got {tol!r}")
    v0 = check_start(v0, op.dim)
    if method == "dense":
        return _dense(op, k, which, tol, return_vectors)
    if method == "power":
        from landscope.curvature.power import power_iteration
        if which == "SA":
            raise InputError("method='power' finds the largest-magnitude eigenvalues; "
                             "use method='lanczos' for which='SA'")
        return power_iteration(op, k=k, tol=tol, seed=seed, v0=v0, max_matvecs=max_matvecs,
                               return_vectors=return_vectors, which=which)
    if max_basis is None:
        max_basis = max(3 * k, k + 40)
    if not isinstance(max_basis, int) or max_basis <= k:
        raise InputError(f"max_basis must be an integer larger than k={k}, got {max_basis!r}")
    max_basis = min(max_basis, op.dim)
    if max_matvecs is None:
        max_matvecs = max(20 * max_basis, 2 * op.dim, 1000)
    with _Reporter(progress, f"Lanczos top-{k} ({which})") as report:
        return _thick_restart_lanczos(op, k, which, tol, seed, v0, max_basis, max_matvecs,
                                      return_vectors, confirm, report)


class _Reporter:
    """Context manager yielding ``report(n_matvecs, max_rel_residual)``; a rich bar if asked."""

    def __init__(self, progress: bool | Callable[[int, float], None], title: str) -> None:
        self.progress, self.title, self._bar = progress, title, None

    def __enter__(self) -> Callable[[int, float], None]:
        if callable(self.progress):
            return self.progress
        if self.progress is not True:
            return lambda n, r: None
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
        self._bar = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                             TextColumn("matvecs {task.completed:.0f}"),
                             TextColumn("residual {task.fields[res]}"), TimeElapsedColumn(),
                             transient=True)
        self._bar.__enter__()
        task = self._bar.add_task(self.title, total=None, res="-")
        bar = self._bar

        def report(n: int, res: float) -> None:
            bar.update(task, completed=n, res=f"{res:.1e}")
        return report

    def __exit__(self, *exc: object) -> bool:
        if self._bar is not None:
            self._bar.__exit__(*exc)
        return False


def _finish(op: CurvatureOperator, Y: torch.Tensor, theta: np.ndarray,
            residuals: np.ndarray | None, tol: float, scale: float, which: str, method: str,
            n_matvecs: int, n_restarts: int, return_vectors: bool, confirm: bool) -> EigenResult:
    """Package Ritz pairs, values descending; with ``confirm`` (or no residuals) measure them."""
    if confirm or residuals is None:
        HY = op.matmat(Y)
        n_matvecs += Y.shape[1]
        th = torch.as_tensor(theta, dtype=torch.float64, device=Y.device)
        residuals = (HY - Y * th).norm(dim=0).cpu()
    else:
        residuals = torch.as_tensor(residuals, dtype=torch.float64)
    order = torch.argsort(torch.as_tensor(theta), descending=True)
    values = torch.as_tensor(theta, dtype=torch.float64)[order]
    residuals = residuals[order]
    scale = max(scale, float(values.abs().max()))
    converged = bool((residuals <= tol * max(scale, 1e-300)).all())
    return EigenResult(values=values, vectors=Y[:, order.to(Y.device)] if return_vectors else None,
                       residuals=residuals, n_matvecs=n_matvecs, converged=converged,
                       tol=tol, scale=scale, which=which, method=method, n_restarts=n_restarts)


def _dense(op: CurvatureOperator, k: int, which: str, tol: float,
           return_vectors: bool) -> EigenResult:
    H = op.to_dense(torch.float64)
    H = 0.5 * (H + H.T)
    evals, evecs = torch.linalg.eigh(H)
    idx = _select(evals.cpu().numpy(), which)[:k]
    idx_t = torch.as_tensor(idx.copy(), device=evecs.device)
    scale = float(evals.abs().max())
    return _finish(op, evecs[:, idx_t], evals.cpu().numpy()[idx], None, tol, scale, which,
                   "dense", op.dim, 0, return_vectors, confirm=True)


def _relation_residuals(A: np.ndarray, theta: np.ndarray, S: np.ndarray, beta: float,
                        drift: float) -> np.ndarray:
    """Residuals ``‖H y − θ y‖`` of Ritz pairs from the Krylov relation ``H Q = Q A + β q eᵀ``.

    ``A`` holds the projections of the products actually computed (not symmetrised), so the
    residual includes the operator's own asymmetry (float32 rounding) and needs no extra products:
    ``‖H y − θ y‖² = ‖(A − θ I) s‖² + (β s_m)²`` since ``q ⟂ Q``. ``drift`` bounds what thick
    restarts dropped of that asymmetry.
    """
    R = A @ S - S * theta
    return np.sqrt((R**2).sum(axis=0) + (beta * S[-1]) ** 2) + drift


def _thick_restart_lanczos(op: CurvatureOperator, k: int, which: str, tol: float, seed: int,
                           v0: torch.Tensor | None, m: int, max_matvecs: int,
                           return_vectors: bool, confirm: bool,
                           report: Callable[[int, float], None]) -> EigenResult:
    n, device = op.dim, op.device
    gen = torch.Generator().manual_seed(int(seed))
    Q = torch.zeros(m + 1, n, dtype=torch.float64, device=device)
    # A: Q's projections of the computed products, H Q_j = Q_j A_j + β q_{j+1} e_jᵀ exactly.
    A = np.zeros((m + 1, m + 1))
    q = v0.to(device) if v0 is not None else random_vector(n, gen, device)
    Q[0] = q / q.norm()
    j = 0  # basis vectors whose product has been taken
    n_matvecs = n_restarts = 0
    theta = S = idx = None
    beta, scale, drift = 0.0, 0.0, 0.0
    while True:
        w = op.matvec(Q[j])
        n_matvecs += 1
        w, h = orthogonalise(w, Q[:j + 1])
        A[:j + 1, j] = h.cpu().numpy()
        beta = float(w.norm())
        j += 1
        theta, S = _small_eigh(A[:j, :j])
        idx = _select(theta, which)
        scale = max(scale, float(np.abs(theta).max()))
        floor = max(scale, 1e-300)
        want = idx[:min(k, j)]
        est = beta * np.abs(S[j - 1, want])
        worst = float(est.max() / floor) if j >= k else math.inf
        report(n_matvecs, worst)
        if j >= k and worst <= tol:
            full = _relation_residuals(A[:j, :j], theta[want], S[:, want], beta, drift) / floor
            if full.max() <= tol:
                break
        if j == n:  # the basis spans the whole space: the Ritz pairs are exact
            break
        if n_matvecs >= max_matvecs:
            warnings.warn(f"Lanczos stopped after max_matvecs={max_matvecs} products with relative "
                          f"residual {worst:.2e} > tol={tol:g}", RuntimeWarning, stacklevel=3)
            break
        if beta <= 1e-12 * floor:
            # Invariant subspace found: continue from a fresh direction (repeated eigenvalues,
            # low-rank operators). Its coupling to the basis is zero.
            w, _ = orthogonalise(random_vector(n, gen, device), Q[:j])
            beta_next, q_next = 0.0, w / w.norm()
        else:
            beta_next, q_next = beta, w / beta
        if j == m:
            # Thick restart: keep the best l Ritz vectors. H Y = Y (SᵀAS) + β q sᵀ keeps the
            # Krylov form, so the next product continues the same decomposition.
            keep = idx[:min(m - 1, k + max((m - k) // 2, 1))]
            l = len(keep)
            Sk = S[:, keep]
            Q[:l] = torch.as_tensor(Sk.T.copy(), device=device) @ Q[:j]
            Ak = A[:j, :j] @ Sk
            drift += float(np.sqrt(((Ak - Sk @ (Sk.T @ Ak)) ** 2).sum(axis=0)).max())
            A[:] = 0.0
            A[:l, :l] = Sk.T @ Ak
            A[l, :l] = beta_next * Sk[j - 1]
            j = l
            n_restarts += 1
        else:
            A[j, j - 1] = beta_next
        Q[j] = q_next
    want = idx[:k]
    Y = Q[:j].T @ torch.as_tensor(S[:, want].copy(), device=device)
    residuals = _relation_residuals(A[:j, :j], theta[want], S[:, want], beta, drift)
    return _finish(op, Y, theta[want], residuals, tol, scale, which, "lanczos", n_matvecs,
                   n_restarts, return_vectors, confirm)
