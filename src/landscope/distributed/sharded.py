"""Operators whose vectors are sharded over processes: Lanczos for models larger than one device.

Every rank of a :class:`~landscope.distributed.DistributedHessianOperator` keeps the whole
Lanczos basis, ``(max_basis + 1) × dim`` float64: at k = 10 that caps a 16 GiB device at about 33 M
parameters (``docs/scaling.md``), while the model itself takes 4 bytes a parameter. Here each rank
holds the slice ``[offset, offset + dim)`` of every vector: of the start vector, of each basis
vector and of the returned eigenvectors. The solvers run unchanged: they take every inner product
and norm through the operator's :class:`ShardLayout`, which all-reduces the slices' partial sums,
and draw start vectors as slices of one global draw, so a sharded solve takes the same steps as a
single-process one (equal to rounding).

A product gathers the vector (one all-gather of ``dim`` floats), applies the whole-vector operator
and keeps this rank's slice of the result. The whole-vector operator is whatever is the same
operator on every rank; :class:`ShardedHessianOperator` uses the data-parallel Hessian, whose
product adds one all-reduce. Transient memory per rank: a few whole vectors and the model;
persistent: the basis, sharded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from torch import nn

from landscope.curvature import CurvatureOperator
from landscope.curvature.linear import VectorLayout
from landscope.distributed.operator import DistributedHessianOperator, require_process_group
from landscope.errors import InputError


def shard_bounds(global_dim: int, world: int, rank: int) -> tuple[int, int]:
    """``[lo, hi)`` of ``rank``'s contiguous slice: sizes differ by at most one, larger first."""
    base, extra = divmod(global_dim, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


class ShardLayout(VectorLayout):
    """A slice of every vector on each rank of ``group``; inner products summed by all-reduce.

    ``norm`` and ``column_norms`` reduce squared sums (one all-reduce each), so that every rank
    gets bit-identical numbers and so takes the same branches of a solver.
    """

    sharded: ClassVar[bool] = True

    def __init__(self, global_dim: int, offset: int, dim: int, group: Any = None) -> None:
        super().__init__(global_dim, offset, dim)
        self.group = group

    def reduce(self, t: torch.Tensor) -> torch.Tensor:
        t = t.contiguous()
        dist.all_reduce(t, group=self.group)
        return t

    def norm(self, w: torch.Tensor) -> float:
        sq = torch.dot(w, w).reshape(1).to(torch.float64)
        return math.sqrt(max(float(self.reduce(sq).item()), 0.0))

    def column_norms(self, R: torch.Tensor, dim: int = 0) -> torch.Tensor:
        return self.reduce((R * R).sum(dim=dim).to(torch.float64)).sqrt()

    def same_as(self, other: VectorLayout) -> bool:
        return super().same_as(other) and isinstance(other, ShardLayout) and other.group is self.group


class ShardedOperator(CurvatureOperator):
    """``op`` with its vectors sharded over the ranks of ``group`` (see the module docstring).

    Args:
        op: a whole-vector operator that is the same operator on every rank (for example a
            :class:`DistributedHessianOperator`, or any operator built identically everywhere).
        group: the process group (default: the whole world).

    ``dim`` is this rank's slice, ``layout.global_dim`` the whole length; vectors passed to
    ``matvec`` and the eigenvectors of ``ls.eigenpairs`` are slices. :meth:`gather` and
    :meth:`shard` convert.
    """

    def __init__(self, op: CurvatureOperator, group: Any = None) -> None:
        require_process_group(type(self).__name__, "eigenpairs on the whole operator")
        if not isinstance(op, CurvatureOperator):
            raise InputError(f"ShardedOperator shards a CurvatureOperator, got {type(op).__name__}")
        if op.layout.sharded:
            raise InputError(f"{type(op).__name__} is already sharded")
        self.group = group
        self.world = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        if op.dim < self.world:
            raise InputError(
                f"cannot shard an operator of dimension {op.dim} over {self.world} ranks: "
                "every rank needs at least one entry"
            )
        lo, hi = shard_bounds(op.dim, self.world, self.rank)
        super().__init__(hi - lo, op.dtype, op.device)
        self.layout = ShardLayout(op.dim, lo, hi - lo, group)
        self.op, self.lo, self.hi = op, lo, hi
        self._chunk = -(-op.dim // self.world)  # the largest slice: what the all-gather pads to
        self._sizes = [hi - lo for lo, hi in (shard_bounds(op.dim, self.world, r) for r in range(self.world))]
        self._even = op.dim == self.world * self._chunk  # every slice full: no padding to drop

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """The whole vector (or ``(global_dim, b)`` matrix) from every rank's slice ``x``.

        One ``all_gather_into_tensor`` into a single buffer (slices padded to the largest): where
        every slice has the same size the buffer is the result, with no list of parts to concatenate
        (on gloo at 1.1 M entries that was about 5 ms a gather against 8, benchmarks/sharded.py).
        """
        src = x.contiguous()
        if x.shape[0] != self._chunk:
            src = x.new_zeros((self._chunk, *x.shape[1:]))
            src[: x.shape[0]] = x
        out = x.new_empty((self.world * self._chunk, *x.shape[1:]))
        dist.all_gather_into_tensor(out, src, group=self.group)
        if self._even:
            return out
        return torch.cat([out[r * self._chunk : r * self._chunk + s] for r, s in enumerate(self._sizes)])

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        """The slice held by this rank of a whole vector (or of the rows of a ``(global_dim, b)`` matrix)."""
        if x.shape[0] != self.op.dim:
            raise InputError(f"expected {self.op.dim} rows (the whole operator's), got {tuple(x.shape)}")
        return x[self.lo : self.hi]

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.op.matvec(self.gather(v))[self.lo : self.hi]

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self.op.matmat(self.gather(V))[self.lo : self.hi]


class ShardedHessianOperator(ShardedOperator):
    """The data-parallel Hessian of :class:`DistributedHessianOperator`, its vectors sharded.

    ``ShardedHessianOperator(model, loss_fn, local_data, **kwargs)`` under an initialised process
    group takes the arguments of :class:`DistributedHessianOperator` (``local_data`` this rank's
    data shard, ``kwargs`` for :class:`~landscope.HessianOperator`). The model is whole on every
    rank: a product cannot run through FSDP (its parameter all-gather is outside autograd, so
    double backward does not reach the shards), so an FSDP model is measured on a plain copy
    loaded from its full state dict (``docs/scaling.md``). The Lanczos basis,
    ``(max_basis + 1) × dim`` float64 and the memory that grows with ``k``, is split ``R``
    ways. A product costs one local Hessian product, one all-gather and one all-reduce of
    ``dim`` floats.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable | None,
        local_data: Any,
        group: Any = None,
        **kwargs: Any,
    ) -> None:
        require_process_group(type(self).__name__, "HessianOperator")
        self.hessian = DistributedHessianOperator(model, loss_fn, local_data, group=group, **kwargs)
        super().__init__(self.hessian, group)

    def gradient(self) -> torch.Tensor:
        """The slice held by this rank of the gradient of the mean loss over all shards."""
        return self.hessian.gradient()[self.lo : self.hi]

    def loss(self) -> float:
        """The mean loss over all shards."""
        return self.hessian.loss()
