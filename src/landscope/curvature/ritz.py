"""What every eigensolver here shares: input checks, start vectors, orthogonalisation, Ritz pairs.

One module, so that the solvers (:mod:`~landscope.curvature.lanczos`,
:mod:`~landscope.curvature.block`, :mod:`~landscope.curvature.power`) and the densities import the
same rules from below instead of from each other.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from landscope.checks import positive_int
from landscope.curvature.linear import VectorLayout
from landscope.curvature.operators import CurvatureOperator, DenseOperator
from landscope.curvature.results import EigenResult, Which
from landscope.errors import InputError

WHICH: tuple[Which, ...] = ("LA", "SA", "LM")


def small_eigh(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of the small projected matrix.

    Done by torch, not NumPy: NumPy's OpenBLAS threads spin after each call and steal the cores
    from torch's next matvec (measured: 3× slower matvecs on 2 cores).
    """
    Tt = torch.from_numpy(T)
    theta, S = torch.linalg.eigh(0.5 * (Tt + Tt.T))
    return theta.numpy(), S.numpy()


def select(theta: np.ndarray, which: Which) -> np.ndarray:
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


def whole_only(op: CurvatureOperator, what: str) -> None:
    """Refuse a sharded operator in code that reads whole vectors (one clear message)."""
    if op.layout.sharded:
        raise InputError(
            f"{what} needs whole vectors; {type(op).__name__} is sharded over processes: "
            "use eigenpairs (method='lanczos' or 'block')"
        )


def check_k(k: object, dim: int) -> int:
    """``k`` must be a positive int no larger than the operator's dimension."""
    k = positive_int("k", k)
    if k > dim:
        raise InputError(f"k={k} exceeds the operator's dimension {dim}")
    return k


def check_max_basis(max_basis: int | None, k: int) -> int | None:
    """A Krylov basis size must be an integer larger than ``k`` (``None``: the solver's default)."""
    if max_basis is not None and (
        not isinstance(max_basis, int) or isinstance(max_basis, bool) or max_basis <= k
    ):
        raise InputError(f"max_basis must be an integer larger than k={k}, got {max_basis!r}")
    return max_basis


def check_start(v0: torch.Tensor | None, layout: VectorLayout) -> torch.Tensor | None:
    """A start vector must be a finite, non-zero vector: this process's part (``layout.dim``)."""
    if v0 is None:
        return None
    dim = layout.dim
    if not isinstance(v0, torch.Tensor) or v0.dim() != 1 or v0.numel() != dim:
        shape = tuple(v0.shape) if isinstance(v0, torch.Tensor) else type(v0).__name__
        raise InputError(f"v0 must be a vector of length {dim}, got {shape}")
    v0 = v0.detach().to(torch.float64)
    # summed over the shards, so that every process of a sharded operator gives the same verdict
    bad = float(layout.reduce((~torch.isfinite(v0)).sum().to(torch.float64)[None]).item())
    if bad > 0 or layout.norm(v0) == 0:
        raise InputError("v0 must be finite and non-zero")
    return v0


def random_vector(dim: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """A standard normal float64 vector drawn on the CPU (same numbers on every device)."""
    return VectorLayout(dim).normal(generator, device)


def orthogonalise(
    w: torch.Tensor, Q: torch.Tensor, layout: VectorLayout
) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove from ``w``, in place, its components along the rows of ``Q``; return ``w`` and ``Q w``.

    Two passes (DGKS-safe) with ``addmv_``: no dim-sized temporaries. ``layout``: the inner
    products of a sharded operator's vectors are summed over its shards.
    """
    if Q.shape[0] == 0:
        return w, torch.zeros(0, dtype=w.dtype, device=w.device)
    h = layout.dot(Q, w)
    w.addmv_(Q.T, h, alpha=-1.0)
    h2 = layout.dot(Q, w)
    w.addmv_(Q.T, h2, alpha=-1.0)
    return w, h + h2


def orthogonalise_with_norm(
    w: torch.Tensor, Q: torch.Tensor, layout: VectorLayout
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """:func:`orthogonalise`, and the norm of the result, with one reduction less.

    A sharded Lanczos step pays an all-reduce per reduction, each a latency (benchmarks/
    sharded.py). The second pass sums ``Q w'`` and ``w'·w'`` in one, and the norm follows by
    Pythagoras, ``‖w' − Qᵀh₂‖² = ‖w'‖² − ‖h₂‖²`` (orthonormal rows): exact up to rounding while
    the correction ``h₂`` is small against ``w'``, as after a first pass it is unless ``w`` lay
    almost inside the basis. Past ``‖h₂‖² > ‖w'‖² / 2`` the subtraction would cancel, and the
    norm is measured directly.
    """
    if Q.shape[0] == 0:
        return w, torch.zeros(0, dtype=w.dtype, device=w.device), layout.norm(w)
    h = layout.dot(Q, w)
    w.addmv_(Q.T, h, alpha=-1.0)
    sums = layout.reduce(torch.cat([Q @ w, torch.dot(w, w).reshape(1)]))
    h2, ww = sums[:-1], float(sums[-1])
    w.addmv_(Q.T, h2, alpha=-1.0)
    hh = float(torch.dot(h2, h2))
    norm = math.sqrt(ww - hh) if hh <= 0.5 * ww else layout.norm(w)
    return w, h + h2, norm


def finish(
    op: CurvatureOperator,
    Y: torch.Tensor,
    theta: np.ndarray,
    residuals: np.ndarray | None,
    tol: float,
    scale: float,
    which: Which,
    method: str,
    n_matvecs: int,
    n_restarts: int,
    return_vectors: bool,
    confirm: bool | str,
    *,
    resolution: float = 0.0,
    rounding: float | None = None,
) -> EigenResult:
    """Package Ritz pairs, values descending; measure residuals as ``confirm`` says.

    ``True`` (or no relation residuals): ``k`` explicit products. ``"probe"``: one explicit
    product on the first pair; the amount by which it exceeds the relation residual (the
    operator's own rounding: a float32 product is not exactly linear) is added to every relation
    residual, and recorded as the result's ``rounding``. ``False``: relation residuals as they
    are. Where adding it fails ``tol`` the solve warns, naming the rounding: iterating on does
    not help, since the relation residuals of float32 products stall near that same rounding
    (tried on a float32 1,000 × 1,000 matrix at tol 1e-6, five times its rounding: lowering
    their goal to ``tol − rounding`` rescued 5 of 6 such verdicts, at 250–540 more products
    each). On that matrix tol ≥ 15 × the rounding passed 9 times in 10.

    ``resolution`` > ``tol``: the solver stopped at the relative residual its own residuals
    resolve (the block solver's stored products: the dtype's epsilon or their measured rounding),
    short of ``tol``; the verdict is then ``converged=False``, said once here for every solver.
    ``rounding``: a probe the solver has already made (absolute), used instead of a new one.
    """
    th = torch.as_tensor(theta, dtype=torch.float64, device=Y.device)
    res: torch.Tensor
    probed, rounding = rounding, 0.0
    if confirm is True or residuals is None:
        HY = op.matmat(Y)
        n_matvecs += Y.shape[1]
        res = op.layout.column_norms(HY - Y * th, dim=0).cpu()
    else:
        res = torch.as_tensor(residuals, dtype=torch.float64)
        if confirm == "probe" and probed is not None:
            rounding = probed
            res = res + rounding
        elif confirm == "probe":
            explicit = op.layout.norm(op.matvec(Y[:, 0]) - th[0] * Y[:, 0])
            n_matvecs += 1
            rounding = max(explicit - float(res[0]), 0.0)
            res = res + rounding
    order = torch.argsort(torch.as_tensor(theta), descending=True)
    values = torch.as_tensor(theta, dtype=torch.float64)[order]
    res = res[order]
    scale = max(scale, float(values.abs().max()))
    floor = max(scale, 1e-300)
    bound = tol * floor
    converged = bool((res <= bound).all())
    if not converged and rounding > 0 and bool((res - rounding <= bound).all()):
        relative = rounding / floor
        warnings.warn(
            f"eigensolver ({method}): the residuals reached tol={tol:g}, but one {op.dtype} "
            f"product is off by {relative:.1e} of the eigenvalue scale (its own rounding), "
            f"which puts them at {float(res.max()) / floor:.1e}: converged=False. "
            f"A tol of 20 x that ({20 * relative:.0e}) or more is verifiable with this operator; "
            "a float64 model (model.double()) goes below it",
            RuntimeWarning,
            stacklevel=2,
        )
    elif not converged and resolution > tol:
        warnings.warn(
            f"eigensolver ({method}): tol={tol:g} is below what {op.dtype} products resolve: "
            f"its residuals stop at {resolution:.1e} of the eigenvalue scale (the larger of the "
            f"dtype's epsilon and one product's measured rounding), and with the rounding they are "
            f"at {float(res.max()) / floor:.1e}: converged=False. A tol of 20 x that "
            f"({20 * resolution:.0e}) or more is verifiable with this operator; a float64 model "
            "(model.double()) goes below it",
            RuntimeWarning,
            stacklevel=2,
        )
    if return_vectors and not bool((order == torch.arange(len(order))).all()):
        Y = Y[:, order.to(Y.device)]  # a copy: callers above pass Y already in order
    return EigenResult(
        values=values,
        vectors=Y if return_vectors else None,
        residuals=res,
        n_matvecs=n_matvecs,
        converged=converged,
        tol=tol,
        scale=scale,
        which=which,
        method=method,
        n_restarts=n_restarts,
        rounding=rounding,
    )


def default_max_matvecs(max_basis: int, dim: int) -> int:
    """The product budget of a solve when the caller sets none (generous: a safety stop)."""
    return max(20 * max_basis, 2 * dim, 1000)


ROUNDING_MARGIN = 1000.0  # tol ≥ this × the dtype's eps: a product's rounding cannot matter


def default_confirm(op: CurvatureOperator, tol: float) -> bool | str:
    """How residuals are measured by default: as computed in float64, probed below it.

    The probe (one explicit product on the top pair) measures how much a low-precision
    product's own rounding adds to the Krylov-relation residual: about 1e-6 relative for
    float32 (6e-7 against a true 1.3e-6 on the benchmark's BatchNorm CNN). At a ``tol`` a
    thousand times above the dtype's epsilon (1.2e-4 for float32) that cannot change a verdict,
    so the product is saved: one per monitor measurement and per loose-tolerance solve.
    """
    if op.dtype == torch.float64 or tol >= ROUNDING_MARGIN * torch.finfo(op.dtype).eps:
        return False
    return "probe"


_COMBINE_BLOCK = 1 << 16  # columns per block of combine_rows


def combine_rows(Q: torch.Tensor, C: torch.Tensor, rows: int) -> None:
    """``Q[:l] = C @ Q[:rows]`` in place (``C`` is ``l × rows``, ``l ≤ rows``), in column blocks.

    A restart compresses a basis to its best Ritz vectors this way without an ``l × dim``
    temporary: each block of columns is read completely before it is overwritten.
    """
    l = C.shape[0]
    for c in range(0, Q.shape[1], _COMBINE_BLOCK):
        Q[:l, c : c + _COMBINE_BLOCK] = C @ Q[:rows, c : c + _COMBINE_BLOCK]
