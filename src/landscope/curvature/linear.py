"""The operator protocol: a symmetric matrix known through its products, and their algebra.

Every curvature matrix of landscope is a :class:`CurvatureOperator`. To add one, subclass it, set
``dim``, ``dtype`` and ``device`` (or call ``super().__init__(dim, dtype, device)``) and implement
``_matvec`` (and ``_matmat`` when a batched product is cheaper than a loop): every solver, the
tracker, the densities and the trace estimator then take it (``docs/operators.md``).

Operators combine without hand-written adapters: ``op - 2.0 * IdentityOperator.like(op)``,
``0.5 * (A + B)``, ``-op``; :meth:`CurvatureOperator.to_scipy` hands one to SciPy's solvers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from numbers import Real
from typing import Any, ClassVar

import numpy as np
import torch

from landscope.checks import positive_int
from landscope.errors import InputError

FLOAT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
NORMAL_CHUNK = 1 << 24  # random start vectors beyond this length are drawn chunk by chunk


def normal_parts(n: int, segments: list[tuple[int, int]], generator: torch.Generator) -> torch.Tensor:
    """Entries ``[start, start + length)`` of one standard normal float64 vector of length ``n``.

    The segments (ascending, not overlapping) are concatenated: whatever part of the vector a
    process holds, it gets the numbers a whole draw would have there. Up to :data:`NORMAL_CHUNK`
    entries come from one draw from ``generator``; beyond, chunk ``c`` comes from its own generator
    seeded by one draw from ``generator`` plus ``c``, so a process draws only the chunks it overlaps.
    """
    if n <= NORMAL_CHUNK:
        full = torch.randn(n, generator=generator, dtype=torch.float64)
        if segments == [(0, n)]:
            return full
        return torch.cat([full[a : a + m] for a, m in segments] or [full[:0]])  # a copy, not a view
    base = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    parts, drawn = [], (-1, torch.zeros(0, dtype=torch.float64))  # the last chunk drawn, reused
    for a, m in segments:
        for c in range(a // NORMAL_CHUNK, (a + m - 1) // NORMAL_CHUNK + 1 if m > 0 else 0):
            if drawn[0] != c:
                size = min(NORMAL_CHUNK, n - c * NORMAL_CHUNK)
                gen = torch.Generator().manual_seed(base + c)
                drawn = (c, torch.randn(size, generator=gen, dtype=torch.float64))
            start = c * NORMAL_CHUNK
            parts.append(drawn[1][max(a - start, 0) : a + m - start])
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


class VectorLayout:
    """Where an operator's vectors live: whole on this process, or one shard of a global vector.

    Every solver takes its inner products, norms and random starts through the operator's layout,
    so that one solver runs unchanged on a sharded operator
    (:class:`~landscope.distributed.ShardedHessianOperator`): there each process holds the slice
    ``[offset, offset + dim)`` of every vector, and :meth:`reduce` sums the slices' partial sums
    over the processes. This class is the whole-vector layout, where reducing does nothing.
    """

    sharded: ClassVar[bool] = False

    def __init__(self, global_dim: int, offset: int = 0, dim: int | None = None) -> None:
        self.global_dim = positive_int("global_dim", global_dim)
        self.offset = int(offset)
        self.dim = self.global_dim if dim is None else int(dim)
        if self.offset < 0 or self.dim < 0 or self.offset + self.dim > self.global_dim:
            raise InputError(
                f"a shard [{self.offset}, {self.offset + self.dim}) must lie in [0, {self.global_dim})"
            )

    def reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over the shards (in place where sharded; here ``t`` itself)."""
        return t

    def dot(self, Q: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``Q @ w`` over the whole vectors (the rows of ``Q`` against ``w``)."""
        return self.reduce(Q @ w)

    def norm(self, w: torch.Tensor) -> float:
        """The Euclidean norm of the whole vector of which ``w`` is this process's part."""
        return float(w.norm())

    def column_norms(self, R: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Norms of the whole vectors along ``dim`` of ``R`` (columns for ``dim=0``)."""
        return R.norm(dim=dim)

    def normal(self, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """The part held here of one standard normal float64 vector of length ``global_dim``.

        Drawn on the CPU, so the same numbers on every device and for every sharding
        (:func:`normal_parts`).
        """
        return normal_parts(self.global_dim, [(self.offset, self.dim)], generator).to(device)

    def same_as(self, other: VectorLayout) -> bool:
        """Whether two operators' vectors are laid out alike (they can be combined)."""
        return type(self) is type(other) and (self.global_dim, self.offset, self.dim) == (
            other.global_dim,
            other.offset,
            other.dim,
        )


class CurvatureOperator(ABC):
    """A symmetric ``dim × dim`` matrix known through its products with vectors.

    Subclasses implement :meth:`_matvec` (and :meth:`_matmat` when a batched product is cheaper
    than a loop) and set ``dim``, ``dtype`` and ``device``; those are checked when set and a clear
    error says which is missing when one was never set. This class checks the inputs of every
    product and converts dtypes, so algorithms can pass float64 vectors to a float32 operator.
    """

    def __init__(
        self, dim: int, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
    ) -> None:
        self.dim, self.dtype = dim, dtype
        self.device = torch.device("cpu") if device is None else device

    # -- the three attributes every operator has (checked, so a subclass cannot get them wrong) --
    def _required(self, name: str) -> Any:
        try:
            return self.__dict__[f"_{name}"]
        except KeyError:
            raise InputError(
                f"{type(self).__name__} is a CurvatureOperator without {name!r}: set "
                "self.dim, self.dtype and self.device in __init__ (or call "
                "super().__init__(dim, dtype, device))"
            ) from None

    @property
    def dim(self) -> int:
        """The matrix's side: the number of parameters it acts on."""
        return self._required("dim")

    @dim.setter
    def dim(self, value: int) -> None:
        self.__dict__["_dim"] = positive_int(f"{type(self).__name__}.dim", value)

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype products are computed in."""
        return self._required("dtype")

    @dtype.setter
    def dtype(self, value: torch.dtype) -> None:
        if value not in FLOAT_DTYPES:
            raise InputError(f"{type(self).__name__}.dtype must be a floating torch dtype, got {value!r}")
        self.__dict__["_dtype"] = value

    @property
    def device(self) -> torch.device:
        """Where products are computed (vectors elsewhere are moved, and moved back)."""
        return self._required("device")

    @device.setter
    def device(self, value: torch.device | str) -> None:
        try:
            self.__dict__["_device"] = torch.device(value)
        except (RuntimeError, TypeError):
            raise InputError(f"{type(self).__name__}.device must be a torch device, got {value!r}") from None

    @property
    def shape(self) -> tuple[int, int]:
        """``(dim, dim)``."""
        return (self.dim, self.dim)

    @property
    def layout(self) -> VectorLayout:
        """How vectors are laid out (:class:`VectorLayout`): whole unless a sharded operator says."""
        layout = self.__dict__.get("_layout")
        if layout is None or layout.dim != self.dim:
            layout = self.__dict__["_layout"] = VectorLayout(self.dim)
        return layout

    @layout.setter
    def layout(self, value: VectorLayout) -> None:
        if not isinstance(value, VectorLayout) or value.dim != self.dim:
            raise InputError(
                f"{type(self).__name__}.layout must be a VectorLayout of dim {self.dim}, got {value!r}"
            )
        self.__dict__["_layout"] = value

    # -- products -----------------------------------------------------------------------------
    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """Return ``H v`` for a 1-D tensor ``v`` of length ``dim``, in ``v``'s dtype."""
        if not isinstance(v, torch.Tensor):
            raise InputError(f"matvec expects a torch.Tensor, got {type(v).__name__}")
        if v.dim() != 1 or v.numel() != self.dim:
            raise InputError(f"matvec expects a vector of length {self.dim}, got shape {tuple(v.shape)}")
        if not v.is_floating_point():
            raise InputError(f"matvec expects a float32 or float64 vector, got {v.dtype}")
        out = self._matvec(v.to(device=self.device, dtype=self.dtype))
        # never attached to a graph (torch 2.14 returns train-mode BatchNorm products attached)
        return out.detach().to(device=v.device, dtype=v.dtype)

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """Return ``H V`` for ``V`` of shape ``(dim, b)``: batched, cheaper per vector than a loop."""
        if not isinstance(V, torch.Tensor):
            raise InputError(f"matmat expects a torch.Tensor, got {type(V).__name__}")
        if V.dim() != 2 or V.shape[0] != self.dim:
            raise InputError(f"matmat expects a matrix of shape ({self.dim}, b), got shape {tuple(V.shape)}")
        if not V.is_floating_point():
            raise InputError(f"matmat expects a float32 or float64 matrix, got {V.dtype}")
        if V.shape[1] == 0:
            return V.clone()
        out = self._matmat(V.to(device=self.device, dtype=self.dtype))
        return out.detach().to(device=V.device, dtype=V.dtype)

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and x.dim() == 2:
            return self.matmat(x)
        return self.matvec(x)

    @abstractmethod
    def _matvec(self, v: torch.Tensor) -> torch.Tensor: ...

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return torch.stack([self._matvec(V[:, i]) for i in range(V.shape[1])], dim=1)

    # -- algebra ------------------------------------------------------------------------------
    __array_ufunc__ = None  # numpy arrays do not broadcast over an operator: TypeError instead

    def __add__(self, other: object) -> CurvatureOperator:
        if not isinstance(other, CurvatureOperator):
            return NotImplemented
        return LinearCombination([(1.0, self), (1.0, other)])

    def __sub__(self, other: object) -> CurvatureOperator:
        if not isinstance(other, CurvatureOperator):
            return NotImplemented
        return LinearCombination([(1.0, self), (-1.0, other)])

    def __mul__(self, scalar: object) -> CurvatureOperator:
        if isinstance(scalar, bool) or not isinstance(scalar, Real):
            return NotImplemented
        return LinearCombination([(float(scalar), self)])

    __rmul__ = __mul__

    def __truediv__(self, scalar: object) -> CurvatureOperator:
        if isinstance(scalar, bool) or not isinstance(scalar, Real):
            return NotImplemented
        if scalar == 0:
            raise InputError("an operator divided by 0")
        return LinearCombination([(1.0 / float(scalar), self)])

    def __neg__(self) -> CurvatureOperator:
        return LinearCombination([(-1.0, self)])

    # -- conversions --------------------------------------------------------------------------
    def to_dense(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The full matrix, column by column: only for tiny operators (tests, references)."""
        eye = torch.eye(self.dim, dtype=dtype, device=self.device)
        return self.matmat(eye)

    def to_scipy(self, dtype: type = np.float64) -> Any:
        """A ``scipy.sparse.linalg.LinearOperator`` (symmetric) computing with this operator.

        For SciPy's ``eigsh``, ``lobpcg``, ``cg``, …: numpy vectors in ``dtype`` go to the
        operator's device and back.
        """
        from scipy.sparse.linalg import LinearOperator

        torch_dtype = torch.from_numpy(np.zeros(0, dtype=dtype)).dtype

        def mv(x: np.ndarray) -> np.ndarray:
            v = torch.from_numpy(np.ascontiguousarray(x, dtype=dtype).reshape(-1))
            return self.matvec(v.to(torch_dtype)).cpu().numpy()

        def mm(X: np.ndarray) -> np.ndarray:
            V = torch.from_numpy(np.ascontiguousarray(X, dtype=dtype))
            return self.matmat(V).cpu().numpy()

        return LinearOperator(self.shape, matvec=mv, rmatvec=mv, matmat=mm, rmatmat=mm, dtype=dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, dtype={self.dtype})"


class LinearCombination(CurvatureOperator):
    """``Σ cᵢ Aᵢ`` of operators of one size on one device (what ``+``, ``-`` and ``*`` build).

    Computed in the widest of the terms' dtypes; nested combinations are flattened.
    """

    terms: tuple[tuple[float, CurvatureOperator], ...]

    def __init__(self, terms: list[tuple[float, CurvatureOperator]]) -> None:
        flat: list[tuple[float, CurvatureOperator]] = []
        for c, op in terms:
            if not isinstance(op, CurvatureOperator):
                raise InputError(f"a linear combination of operators got {type(op).__name__}")
            if isinstance(op, LinearCombination):
                flat.extend((c * ci, oi) for ci, oi in op.terms)
            else:
                flat.append((float(c), op))
        if not flat:
            raise InputError("a linear combination needs at least one operator")
        first = flat[0][1]
        for _, op in flat[1:]:
            if op.dim != first.dim:
                raise InputError(f"cannot combine operators of dimensions {first.dim} and {op.dim}")
            if op.device != first.device:
                raise InputError(f"cannot combine operators on {first.device} and {op.device}")
            if not op.layout.same_as(first.layout):
                raise InputError("cannot combine operators whose vectors are sharded differently")
        dtype = max((op.dtype for _, op in flat), key=lambda d: torch.finfo(d).bits)
        super().__init__(first.dim, dtype, first.device)
        self.layout = first.layout
        self.terms = tuple(flat)

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(v)
        for c, op in self.terms:
            out.add_(op.matvec(v), alpha=c)
        return out

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(V)
        for c, op in self.terms:
            out.add_(op.matmat(V), alpha=c)
        return out

    def __repr__(self) -> str:
        return " + ".join(f"{c:g}·{op!r}" for c, op in self.terms)


class DenseOperator(CurvatureOperator):
    """An explicit symmetric matrix as an operator: for tests, tiny models and closed forms."""

    def __init__(self, matrix: torch.Tensor, check_symmetric: bool = True) -> None:
        if not isinstance(matrix, torch.Tensor) or matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
            shape = tuple(matrix.shape) if isinstance(matrix, torch.Tensor) else type(matrix).__name__
            raise InputError(f"DenseOperator needs a square matrix, got {shape}")
        if matrix.shape[0] == 0:
            raise InputError("DenseOperator needs a non-empty matrix, got shape (0, 0)")
        if not matrix.is_floating_point():
            matrix = matrix.double()
        if not torch.isfinite(matrix).all():
            raise InputError("DenseOperator matrix contains NaN or inf")
        if check_symmetric:
            asym = (matrix - matrix.T).abs().max().item()
            scale = matrix.abs().max().item()
            if asym > 1e-6 * max(scale, 1e-300):
                raise InputError(
                    f"DenseOperator matrix is not symmetric: max |A - Aᵀ| = {asym:.3g}"
                    f" (max |A| = {scale:.3g})"
                )
        super().__init__(matrix.shape[0], matrix.dtype, matrix.device)
        self.matrix = matrix

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.matrix @ v

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self.matrix @ V


class DiagonalOperator(CurvatureOperator):
    """``diag(d)``: closed-form spectra of any size (tests, benchmarks of the solvers themselves)."""

    def __init__(self, diagonal: torch.Tensor) -> None:
        if not isinstance(diagonal, torch.Tensor) or diagonal.dim() != 1 or diagonal.numel() == 0:
            shape = tuple(diagonal.shape) if isinstance(diagonal, torch.Tensor) else type(diagonal).__name__
            raise InputError(f"DiagonalOperator needs a non-empty vector, got {shape}")
        if not diagonal.is_floating_point():
            diagonal = diagonal.double()
        if not torch.isfinite(diagonal).all():
            raise InputError("DiagonalOperator diagonal contains NaN or inf")
        super().__init__(diagonal.numel(), diagonal.dtype, diagonal.device)
        self.diagonal = diagonal

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.diagonal * v

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self.diagonal[:, None] * V


class IdentityOperator(CurvatureOperator):
    """``I``: with the algebra, a shift ``op + s * IdentityOperator.like(op)``."""

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        return v.clone()

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return V.clone()

    @classmethod
    def like(cls, op: CurvatureOperator) -> IdentityOperator:
        """The identity of ``op``'s size, dtype, device and layout."""
        eye = cls(op.dim, op.dtype, op.device)
        eye.layout = op.layout
        return eye


class MatvecOperator(CurvatureOperator):
    """An operator around a function ``v ↦ H v`` (a peer library's product, a custom closed form).

    The function must be linear and symmetric; it gets 1-D tensors of ``dtype`` on ``device``.
    """

    def __init__(
        self,
        matvec: Callable[[torch.Tensor], torch.Tensor],
        dim: int,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        if not callable(matvec):
            raise InputError(f"MatvecOperator needs a callable v -> H v, got {type(matvec).__name__}")
        super().__init__(dim, dtype, device)
        self.function = matvec

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        out = self.function(v)
        if not isinstance(out, torch.Tensor) or out.shape != v.shape:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise InputError(f"the matvec function returned {shape} for a vector of shape {tuple(v.shape)}")
        return out


class PreconditionedOperator(CurvatureOperator):
    """``P^{-1/2} H P^{-1/2}`` for a diagonal preconditioner ``P`` (given as its diagonal).

    Its eigenvalues are those of ``P⁻¹H`` (a similar matrix), the curvature an adaptive optimiser
    such as Adam actually sees (Cohen et al., 2022); the symmetric form keeps Lanczos applicable.
    """

    def __init__(self, op: CurvatureOperator, P: torch.Tensor) -> None:
        if not isinstance(op, CurvatureOperator):
            raise InputError(f"PreconditionedOperator wraps a CurvatureOperator, got {type(op).__name__}")
        if not isinstance(P, torch.Tensor) or P.dim() != 1 or P.numel() != op.dim:
            shape = tuple(P.shape) if isinstance(P, torch.Tensor) else type(P).__name__
            raise InputError(
                f"preconditioner must be a vector of length {op.dim} (the operator's dimension), got {shape}"
            )
        if not torch.isfinite(P).all() or (P <= 0).any():
            raise InputError(
                f"preconditioner must be finite and positive; its smallest entry is {P.min().item():.3g}"
            )
        super().__init__(op.dim, op.dtype, op.device)
        self.layout = op.layout
        self.op = op
        self.P = P.to(device=op.device, dtype=torch.float64)
        self._scale = self.P.rsqrt().to(op.dtype)

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self._scale * self.op.matvec(self._scale * v)

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        s = self._scale[:, None]
        return s * self.op.matmat(s * V)
