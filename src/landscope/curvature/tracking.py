"""Warm-started tracking of the top eigenpairs across training steps.

Between two measurements a few optimiser steps apart the top eigen-subspace moves little, so the
next solve starts from a prediction of the new Ritz vectors: the last ones extrapolated through
the last solves (after aligning their bases: signs and rotations inside clusters) by the
polynomial order that would have predicted the last solve best. Quadratic wins on smooth
full-batch runs, none on minibatch runs, whose step noise an extrapolation amplifies. The block
solver starts from those vectors and the guards; the Lanczos solver from their sum plus a small
random part that keeps new directions reachable. When the subspace turned too much for a
prediction (overlap < 0.9), the last vectors are used as they are. The overlap of consecutive
subspaces (the landscape-shift signal of [W&R]) comes for free.

What a warm start saves is set by how far it is from the new vectors (``benchmarks/
tracking_floor.py``, tol 1e-6): a third of a cold solve's products from within 1–5e-4 of the new
top-1 and 2e-5 of the new top-10; minibatch steps move them by 1e-2 or more, which no prediction
follows, so there a warm solve costs 0.5–0.9 of a cold one.
"""

from __future__ import annotations

import numpy as np
import torch

from landscope.checks import positive_int
from landscope.curvature.block import DEFAULT_GUARDS, block_solve
from landscope.curvature.lanczos import lanczos_with_guards
from landscope.curvature.operators import CurvatureOperator
from landscope.curvature.results import EigenResult
from landscope.curvature.ritz import WHICH, Which, check_operator, random_vector, whole_only
from landscope.errors import InputError

TRACKING_METHODS = ("auto", "block", "lanczos")


BLOCK_MIN_TOL = 1e-4  # where the cheaper warm start changes side (see auto_method)


def auto_method(k: int, tol: float) -> str:
    """The warm-start method for ``k`` pairs at ``tol`` (measured: ``benchmarks/tracking.py``).

    * ``k ≥ 2``, ``tol ≥ 1e-4`` (the quick experiments' 1e-3): the block. A single Krylov chain
      stops before it has resolved a cluster of top eigenvalues and misses one now and then with
      every residual small (on the η = 0.3 quick run cold and warm Lanczos got the top 3 wrong on
      6–7 of 402 steps, the block on none), and the Lanczos tracker pays the multiplicity probe
      that the block does not need: at k = 3 the block took 0.14–0.37 of a cold solve's
      products, the Lanczos tracker 0.43–0.71.
    * ``k ≥ 2``, ``tol < 1e-4``: Lanczos, and the block while a quadratic prediction holds to
      ``tol`` (``EigenTracker`` switches per solve). From the last vectors as they are (a
      residual of 1e-2) the block took twice a cold solve at k = 10, tol 1e-6: its residual
      expansion grows a block Krylov space, slower per product than one chain in a clustered
      spectrum. From a quadratic prediction on a full-batch run it took about 0.5, where Lanczos
      took 0.67–0.74.
    * ``k = 1``: the block below 1e-4, Lanczos above, where a warm chain converges in two to
      five products and the block's three-product start (the vector and two guards) cannot pay
      (0.15–0.34 of a cold solve against 0.20–0.41). Below 1e-4 the two tie on average: the
      block wins where the start is off by an angle of 1e-4 or more (the held-out GD run 0.33
      against 0.42, the CNN 0.60 against 0.67), Lanczos from near-exact starts (the trained MLPs
      of ``benchmarks/curvature.py``, 0.37 and 0.35 against 0.31 and 0.33; edge of stability
      0.32 against 0.30); the block also carries guards that see λ₂ rise past λ₁.
    """
    if k >= 2:
        return "block" if tol >= BLOCK_MIN_TOL else "lanczos"
    return "block" if tol < BLOCK_MIN_TOL else "lanczos"


def subspace_overlap(U: torch.Tensor | np.ndarray, V: torch.Tensor | np.ndarray) -> float:
    """``‖UᵀV‖²_F / k`` for orthonormal columns: 1 for the same subspace, 0 for orthogonal ones.

    Invariant to rotations within either subspace. ``U`` and ``V`` (tensors or NumPy arrays) are
    ``(dim, k)`` (or 1-D for k = 1); with different ``k`` the smaller one divides.
    """
    U, V = (t if isinstance(t, torch.Tensor) else torch.as_tensor(np.asarray(t)) for t in (U, V))
    if U.dim() == 1:
        U = U[:, None]
    if V.dim() == 1:
        V = V[:, None]
    for name, t in (("U", U), ("V", V)):
        if t.dim() != 2:
            raise InputError(f"subspace_overlap: {name} must be (dim, k) or 1-D, got shape {tuple(t.shape)}")
    if U.shape[0] != V.shape[0]:
        raise InputError(f"subspace_overlap: U has {U.shape[0]} rows but V has {V.shape[0]}")
    k = min(U.shape[1], V.shape[1])
    if k == 0:
        raise InputError("subspace_overlap needs at least one column in each subspace")
    M = U.to(torch.float64).T @ V.to(device=U.device, dtype=torch.float64)
    return float((M**2).sum() / k)


MAX_ORDER = 2  # extrapolation orders tried: none, linear, quadratic
_COEFFICIENTS = {0: (1.0,), 1: (2.0, -1.0), 2: (3.0, -3.0, 1.0)}  # newest solve first


def aligned(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """The columns of ``old`` rotated onto those of ``new`` (orthogonal Procrustes).

    Fixes the signs and the rotations among close eigenvalues that make raw eigenvectors of
    consecutive solves jump, so that they can be compared and combined column by column.
    """
    W, _, Zt = torch.linalg.svd(old.T @ new)
    return old @ (W @ Zt)


def extrapolate(history: list[torch.Tensor], order: int, device: torch.device) -> torch.Tensor:
    """Unit columns extrapolated with a polynomial of ``order`` through the last ``order + 1`` bases.

    Each older basis is first :func:`aligned` to the newest.
    """
    U = history[-1].to(device)
    if order == 0:
        return U
    P = _COEFFICIENTS[order][0] * U
    for back, c in enumerate(_COEFFICIENTS[order][1:], start=2):
        P = P + c * aligned(history[-back].to(device=device, dtype=U.dtype), U)
    return P / P.norm(dim=0, keepdim=True)


def prediction_errors(history: list[torch.Tensor], new: torch.Tensor) -> list[float]:
    """``1 − overlap`` with ``new`` of each order's prediction from ``history`` (order 0 first)."""
    errors = []
    for order in range(min(MAX_ORDER, len(history) - 1) + 1):
        Q, _ = torch.linalg.qr(extrapolate(history, order, new.device))
        errors.append(1.0 - subspace_overlap(Q, new))
    return errors


class EigenTracker:
    """Top-k eigenpairs of a changing operator, each solve warm-started from the last.

    ``trk = EigenTracker(k=10, tol=1e-6); res = trk.update(op)``; ``res.overlap`` is the overlap of
    this solve's subspace with the previous one (``None`` on the first call).

    Args:
        k: number of eigenpairs.
        tol: relative residual tolerance of each solve.
        which: ``"LA"``, ``"SA"`` or ``"LM"``.
        seed: seeds the random part of the start vectors (one stream for the tracker's life).
        random_part: norm of the random component added to the start vector, relative to it.
        max_basis: passed to :func:`eigenpairs`.
        extrapolate: predict the new vectors from the last solves (see :meth:`predict`);
            ``False`` starts from the last vectors as they are.
        method: ``"block"`` (warm start from the previous vectors and ``guards`` more, see
            :mod:`~landscope.curvature.block`), ``"lanczos"`` (warm start from their sum), or
            ``"auto"`` (block for k ≥ 2 at tol ≥ 1e-4 and for k = 1 below it, else Lanczos, with
            the block for the solves a quadratic prediction starts: :func:`auto_method`). The
            first solve, and the first after :meth:`reset`, is a cold Lanczos solve either way
            (cheaper cold), whose next Ritz vectors seed the guards.
        guards: vectors carried beyond ``k`` (the next Ritz vectors of the last solve).
        check_multiplicity: for the Lanczos solves, as in :func:`eigenpairs` (default: the
            probe for k ≥ 2). A warm start is one vector, the sum of the last ones, so it sees
            one copy of a repeated eigenvalue however many the last solve found. The block
            solves need no probe: their block (k + guards vectors) holds the copies.
    """

    def __init__(
        self,
        k: int = 10,
        tol: float = 1e-6,
        which: Which = "LA",
        seed: int = 0,
        random_part: float = 1e-4,
        max_basis: int | None = None,
        extrapolate: bool = True,
        method: str = "auto",
        guards: int = DEFAULT_GUARDS,
        check_multiplicity: bool | None = None,
    ) -> None:
        k = positive_int("EigenTracker: k", k)
        if which not in WHICH:
            raise InputError(f"EigenTracker: which must be one of {WHICH}, got {which!r}")
        if not 0 <= random_part < 1:
            raise InputError(f"EigenTracker: random_part must be in [0, 1), got {random_part!r}")
        if method not in TRACKING_METHODS:
            raise InputError(f"EigenTracker: method must be one of {TRACKING_METHODS}, got {method!r}")
        if not isinstance(guards, int) or isinstance(guards, bool) or guards < 0:
            raise InputError(f"EigenTracker: guards must be a non-negative integer, got {guards!r}")
        self.k, self.tol, self.which = k, tol, which
        self.method = auto_method(k, tol) if method == "auto" else method
        # auto at k >= 2 below BLOCK_MIN_TOL: Lanczos, but the block while a quadratic
        # prediction is in use (see auto_method); its Lanczos solves then keep guards too
        self._block_when_smooth = method == "auto" and k >= 2 and tol < BLOCK_MIN_TOL
        # guard vectors seed a block start: kept by block trackers and by auto where it may switch
        self._keeps_guards = self.method == "block" or self._block_when_smooth
        if check_multiplicity is not None and not isinstance(check_multiplicity, bool):
            raise InputError(
                f"EigenTracker: check_multiplicity must be True, False or None, got {check_multiplicity!r}"
            )
        self.guards = guards
        self.check_multiplicity = check_multiplicity
        self._guard_vectors: torch.Tensor | None = None
        self.random_part = random_part
        self.max_basis = max_basis
        self.seed = seed
        self._gen = torch.Generator().manual_seed(int(seed))
        self.extrapolate = extrapolate
        self.previous: EigenResult | None = None
        # vectors of the last (up to) MAX_ORDER + 1 solves, the older ones kept in float32: they
        # only correct a prediction (their rounding, 6e-8, is far below its error), and so
        # the three take the memory of two float64 ones
        self._history: list[torch.Tensor] = []
        self._order = 1  # the extrapolation order of the next prediction (the last one's best)
        self._error = 1.0  # how far that order's prediction of the last solve was (1 − overlap)
        self.n_updates = 0

    def predict(self, dim: int, device: torch.device) -> torch.Tensor | None:
        """Predicted Ritz vectors ``(dim, k)`` of the next solve (``None`` when cold).

        Polynomial extrapolation through the last solves' vectors (:func:`extrapolate`) of the
        order that would have predicted the last solve best (chosen in :meth:`update`, no
        product spent). On the held-out full-batch run of ``benchmarks/tracking.py`` (tanh MLP,
        CE, GD at 0.05) the top vector's start residual is 8e-3 of λ₁ as it was, 4e-4 extrapolated
        linearly and about 1e-5 quadratically; on minibatch runs the step noise (a residual of
        1e-2 a step) is not predictable and extrapolating amplifies it, so none wins there.
        Used only while consecutive subspaces overlap by more than 0.9.
        """
        if not self._history or self._history[-1].shape[0] != dim:
            return None
        return extrapolate(self._history, self._order_in_use(), device)

    def _order_in_use(self) -> int:
        """The order of the next prediction: the chosen one while the motion is smooth, else 0."""
        smooth = (
            self.previous is not None and self.previous.overlap is not None and self.previous.overlap > 0.9
        )
        return min(self._order, len(self._history) - 1) if self.extrapolate and smooth else 0

    def _predicts_smoothly(self) -> bool:
        """The next prediction is quadratic, and that order predicted the last solve to ``tol``.

        ``1 − overlap ≤ tol`` is an angle of at most √tol. Measured (k = 10, tol 1e-6): 1e-9 on
        the full-batch runs of ``benchmarks/tracking.py``, 5e-3 or more where a minibatch run's
        noise happened to favour the quadratic for one step (there a block start cost 2× a cold
        solve).
        """
        return bool(self._history) and self._order_in_use() == MAX_ORDER and self._error <= self.tol

    def start_vector(self, dim: int, device: torch.device) -> torch.Tensor | None:
        """The sum of the predicted vectors plus a small random part (``None`` when cold)."""
        U = self.predict(dim, device)
        if U is None:
            return None
        v = U.sum(dim=1)
        v = v / v.norm()
        if self.random_part > 0:
            r = random_vector(dim, self._gen, device)
            v = v + self.random_part * r / r.norm()
        return v

    def start_block(self, dim: int, device: torch.device) -> torch.Tensor | None:
        """The block method's start: the predicted vectors and the guards (``None`` when cold)."""
        P = self.predict(dim, device)
        if P is None:
            return None
        cols = [P]
        if self._guard_vectors is not None and self._guard_vectors.shape[0] == dim:
            cols.append(self._guard_vectors.to(device))
        return torch.cat(cols, dim=1)

    def update(self, op: CurvatureOperator) -> EigenResult:
        """Solve for the top-k pairs of ``op``, warm-started; return them with the overlap."""
        op = check_operator(op)
        whole_only(op, "EigenTracker")
        k = min(self.k, op.dim)
        seed = self.seed + self.n_updates
        block = self.method == "block" or (self._block_when_smooth and self._predicts_smoothly())
        start = self.start_block(op.dim, op.device) if block else None
        if start is not None:
            solve = block_solve(
                op,
                k,
                self.which,
                self.tol,
                start=start,
                guards=self.guards,
                seed=seed,
                max_basis=self.max_basis,
            )
            res, self._guard_vectors = solve.result, solve.guards.cpu()
        else:
            res, guards = lanczos_with_guards(
                op,
                k,
                self.which,
                self.tol,
                seed=seed,
                v0=self.start_vector(op.dim, op.device),
                max_basis=self.max_basis,
                guards=self.guards if self._keeps_guards else 0,
                check_multiplicity=self.check_multiplicity,
            )
            self._guard_vectors = guards.cpu()
        vectors = res.vectors
        assert vectors is not None  # both solves above return the vectors (return_vectors=True)
        overlap = None
        if self._history and self._history[-1].shape[0] == op.dim:
            overlap = subspace_overlap(self._history[-1], vectors)
            if self.extrapolate:
                errors = prediction_errors(self._history, vectors.to(torch.float64))
                self._order, self._error = int(np.argmin(errors)), min(errors)
        else:
            self._history = []
        res = EigenResult(**{**res.__dict__, "overlap": overlap})
        self._history = [*(U.float() for U in self._history[-MAX_ORDER:]), vectors]
        self.previous = res
        self.n_updates += 1
        return res

    def state_dict(self) -> dict:
        """Everything the next update depends on, so a resumed run solves exactly as before."""
        return {
            "history": [U.cpu() for U in self._history],
            "previous": self.previous,
            "generator": self._gen.get_state(),
            "n_updates": self.n_updates,
            "guards": self._guard_vectors,
            "order": self._order,
            "error": self._error,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        self._history = list(state["history"])
        self.previous = state["previous"]
        self._gen.set_state(state["generator"])
        self.n_updates = int(state["n_updates"])
        self._guard_vectors = state.get("guards")  # absent in checkpoints before the block method
        self._order = int(state.get("order", 1))  # before adaptive orders: always linear
        self._error = float(state.get("error", 1.0))

    def reset(self) -> None:
        """Forget the previous subspace: the next update is a cold solve."""
        self.previous = None
        self._history = []
        self._guard_vectors = None
        self._order, self._error = 1, 1.0
