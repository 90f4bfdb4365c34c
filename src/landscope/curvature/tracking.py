"""Warm-started tracking of the top eigenpairs across training steps.

Between two measurements a few optimiser steps apart the top eigen-subspace moves little and
smoothly, so the next Lanczos solve starts from a prediction of the new Ritz vectors: the last ones
extrapolated linearly from the two last solves (after aligning their bases: signs and rotations
inside clusters), summed, plus a small random part that keeps new directions reachable. When the
subspace turned too much for a linear prediction (overlap < 0.9), the last vectors are used as they
are. The overlap of consecutive subspaces (the landscape-shift signal of [W&R]) comes for free.
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


BLOCK_MIN_TOL = 1e-4  # below it Lanczos resolves the cluster as it converges (see auto_method)


def auto_method(k: int, tol: float) -> str:
    """The warm-start method for ``k`` pairs at ``tol`` (measured: ``benchmarks/tracking.py``).

    At a loose tolerance (the quick experiments' 1e-3) a single Krylov chain stops before it has
    resolved a cluster of top eigenvalues, and misses one now and then with every residual small:
    on the η = 0.3 quick run, cold and warm Lanczos both got the top 3 wrong on 6–7 of 402 steps
    (λ₃ up to 8 % of λ₁ too low), the block tracker on none, with 8 % fewer products. The block
    is chosen for that robustness, not for cost: along the smoother runs of
    ``benchmarks/tracking.py`` (GD, momentum, AdamW, a CNN; k = 3, tol 1e-3) it took 0.44–0.65
    of a cold solve's products against 0.33–0.57 for the Lanczos tracker (neither missed an
    eigenvalue there; a cold solve missed one). At k = 10, tol 1e-6 the block took 1.4–2.5× a
    cold solve, Lanczos 0.68–0.86, and no method missed one. For k = 1 the block brings nothing
    that shows: λ₁ was never missed.
    """
    return "block" if k >= 2 and tol >= BLOCK_MIN_TOL else "lanczos"


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
    if U.shape[0] != V.shape[0]:
        raise InputError(f"subspace_overlap: U has {U.shape[0]} rows but V has {V.shape[0]}")
    k = min(U.shape[1], V.shape[1])
    if k == 0:
        raise InputError("subspace_overlap needs at least one column in each subspace")
    M = U.to(torch.float64).T @ V.to(device=U.device, dtype=torch.float64)
    return float((M**2).sum() / k)


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
        extrapolate: predict the new vectors from the last two solves (see the module docstring).
        method: ``"block"`` (warm start from the previous vectors and ``guards`` more, see
            :mod:`~landscope.curvature.block`), ``"lanczos"`` (warm start from their sum), or
            ``"auto"`` (block for k ≥ 2 at tol ≥ 1e-4, else Lanczos: :func:`auto_method`). The
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
        self._history: list[torch.Tensor] = []  # vectors of the last (up to) two solves
        self.n_updates = 0

    def predict(self, dim: int, device: torch.device) -> torch.Tensor | None:
        """Predicted Ritz vectors ``(dim, k)`` of the next solve (``None`` when cold).

        Linear extrapolation through the last two solves' vectors, the older basis first aligned
        to the newer (orthogonal Procrustes: fixes signs and rotations among close eigenvalues).
        Used only while consecutive subspaces overlap by more than 0.9, i.e. while the motion is
        smooth enough to extrapolate. (A quadratic prediction was tried: it amplifies the
        tol-level noise of the previous solves and needed more products, not fewer.)
        """
        if not self._history or self._history[-1].shape[0] != dim:
            return None
        U = self._history[-1].to(device)
        smooth = (
            self.previous is not None and self.previous.overlap is not None and self.previous.overlap > 0.9
        )
        if not self.extrapolate or not smooth or len(self._history) < 2:
            return U

        def aligned(old: torch.Tensor) -> torch.Tensor:
            W, _, Zt = torch.linalg.svd(old.to(device).T @ U)
            return old.to(device) @ (W @ Zt)

        P = 2 * U - aligned(self._history[-2])
        return P / P.norm(dim=0, keepdim=True)

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
        """The block method's start: the last vectors and guards (``None`` when cold)."""
        if not self._history or self._history[-1].shape[0] != dim:
            return None
        cols = [self._history[-1].to(device)]
        if self._guard_vectors is not None and self._guard_vectors.shape[0] == dim:
            cols.append(self._guard_vectors.to(device))
        return torch.cat(cols, dim=1)

    def update(self, op: CurvatureOperator) -> EigenResult:
        """Solve for the top-k pairs of ``op``, warm-started; return them with the overlap."""
        op = check_operator(op)
        whole_only(op, "EigenTracker")
        k = min(self.k, op.dim)
        seed = self.seed + self.n_updates
        start = self.start_block(op.dim, op.device) if self.method == "block" else None
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
            # a block tracker's cold solve seeds its guards; a Lanczos tracker needs none
            res, guards = lanczos_with_guards(
                op,
                k,
                self.which,
                self.tol,
                seed=seed,
                v0=self.start_vector(op.dim, op.device),
                max_basis=self.max_basis,
                guards=self.guards if self.method == "block" else 0,
                check_multiplicity=self.check_multiplicity,
            )
            self._guard_vectors = guards.cpu()
        vectors = res.vectors
        assert vectors is not None  # both solves above return the vectors (return_vectors=True)
        overlap = None
        if self._history and self._history[-1].shape[0] == op.dim:
            overlap = subspace_overlap(self._history[-1], vectors)
        res = EigenResult(**{**res.__dict__, "overlap": overlap})
        self._history = [*self._history[-1:], vectors]
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
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        self._history = list(state["history"])
        self.previous = state["previous"]
        self._gen.set_state(state["generator"])
        self.n_updates = int(state["n_updates"])
        self._guard_vectors = state.get("guards")  # absent in checkpoints before the block method

    def reset(self) -> None:
        """Forget the previous subspace: the next update is a cold solve."""
        self.previous = None
        self._history = []
        self._guard_vectors = None
