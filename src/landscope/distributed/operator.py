"""The data-parallel Hessian operator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from landscope.curvature import CurvatureOperator, HessianOperator
from landscope.errors import InputError


def is_main_process() -> bool:
    """True on rank 0, or when ``torch.distributed`` is not in use (the rank that writes)."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def require_process_group(name: str, instead: str) -> None:
    """One clear message where ``torch.distributed`` has not been initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        raise InputError(
            f"{name} needs torch.distributed initialised "
            f"(torchrun, or dist.init_process_group); use {instead} otherwise"
        )


def has_data(data: Any) -> bool:
    """Whether a shard holds samples (``None``, an empty list or an empty ``(X, y)`` do not)."""
    if data is None:
        return False
    if isinstance(data, tuple | list) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return int(data[0].shape[0]) > 0
    if isinstance(data, list):
        return len(data) > 0
    return True


def reduce_floats(values: list[float], group: Any = None, op: Any = dist.ReduceOp.SUM) -> list[float]:
    """``values`` combined over the ranks of ``group`` (summed by default): one all-reduce.

    Of a float64 tensor, on the current GPU where the backend is NCCL (which takes no CPU tensors).
    """
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend(group) == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=op, group=group)
    return t.tolist()


def shard_share(n_local: int, w_local: float, group: Any = None) -> tuple[float, int]:
    """The share ``w_r / W`` of the Hessian set's total weight held here, and the total sample count.

    The products of a data-parallel operator are weighted by it, so that every rank holds the
    curvature of the mean loss over all shards.
    """
    n_total, w_total = reduce_floats([float(n_local), w_local], group)
    if int(n_total) == 0:
        raise InputError("every rank's shard is empty: the Hessian set has no samples")
    return w_local / w_total, int(n_total)


class DistributedHessianOperator(CurvatureOperator):
    """``H = Σ_r (w_r / W) H_r``: the Hessian of the mean loss over every rank's shard.

    ``DistributedHessianOperator(model, loss_fn, local_data, **kwargs)`` under an initialised
    process group (``torchrun``; gloo on CPU, NCCL on GPUs). ``local_data`` is this rank's shard
    (any data :class:`~landscope.HessianOperator` takes; ``None`` or empty for a rank without
    data); ``kwargs`` go to :class:`~landscope.HessianOperator` (``params``, ``model_mode``,
    ``chunk_size``, ``dtype``, ``batch_loss``, ``batch_weight``…). ``w_r`` is the rank's total
    weight: its number of samples, or the sum of ``batch_weight`` (valid tokens), so the operator
    is the curvature of the mean over all shards either way. The model must be identical on every
    rank. Each product costs one local product and one all-reduce of ``dim`` floats.
    """

    def __init__(
        self, model: nn.Module, loss_fn: Callable | None, local_data: Any, group: Any = None, **kwargs: Any
    ) -> None:
        require_process_group("DistributedHessianOperator", "HessianOperator")
        self.group = group
        self.local = HessianOperator(model, loss_fn, local_data, **kwargs) if has_data(local_data) else None
        n_local = self.local.n_samples if self.local is not None else 0
        w_local = self.local.data.total_weight if self.local is not None else 0.0
        self.weight, self.n_total = shard_share(n_local, w_local, group)
        self.n_local = n_local
        if self.local is None:  # a rank without data still takes part in every all-reduce
            if kwargs.get("params") is not None:
                raise InputError("a rank without data needs params=None (it cannot resolve a subset)")
            params = list(model.parameters())
            self.dim = sum(p.numel() for p in params)
            self.dtype = kwargs.get("dtype") or params[0].dtype
            self.device = params[0].device
        else:
            self.dim, self.dtype, self.device = self.local.dim, self.local.dtype, self.local.device

    def _reduce(self, t: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(t, group=self.group)
        return t

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        out = self.local.matvec(v) * self.weight if self.local is not None else torch.zeros_like(v)
        return self._reduce(out)

    def gradient(self) -> torch.Tensor:
        """The gradient of the mean loss over all shards."""
        g = (
            self.local.gradient() * self.weight
            if self.local is not None
            else torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        )
        return self._reduce(g)

    def loss(self) -> float:
        """The mean loss over all shards."""
        value = self.local.loss() * self.weight if self.local is not None else 0.0
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        return float(self._reduce(t).item())
