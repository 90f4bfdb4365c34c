"""The parameters sharded too: Hessian products for a model that does not fit on one device.

:class:`~landscope.distributed.ShardedHessianOperator` splits the Lanczos basis but keeps the
model whole on every rank. :class:`ParamShardedHessianOperator` keeps only this rank's shard of
every parameter, in FSDP2's layout (rows ``[r·c, (r+1)·c)`` of dim 0, ``c = ⌈rows / R⌉``, as
``torch.chunk``), and the vectors in the same layout. The model is a sequence of stages (an
``nn.Sequential`` or a list of modules, each output the next one's input); a product gathers one
stage's parameters at a time, so no rank ever holds more than one stage whole.

Why stage by stage and forward-over-reverse: a product through the whole model's graph
(reverse-over-reverse, :class:`~landscope.HessianOperator`) holds every gathered weight at once,
and FSDP's own all-gather is outside autograd, so double backward never reaches its shards. With
``a_l = f_l(a_{l-1}, θ_l)``, loss ``L(a_L)``, ``g_l = ∂L/∂a_l`` and a direction ``v``, the product is
the tangent of the gradient computation, taken one stage at a time:

* forward, ``l = 1…L``: ``(a_l, ȧ_l) = jvp(f_l, (a_{l-1}, θ_l), (ȧ_{l-1}, v_l))``;
* at the loss: ``g_L = ∇L(a_L)``, ``ġ_L = ∇²L(a_L) ȧ_L`` (reverse over reverse: it is symmetric);
* backward, ``l = L…1``: ``(g_{l-1}, ∇_{θ_l})`` = the pullback ``J_lᵀ g_l``, and
  ``(ġ_{l-1}, (Hv)_l)`` its tangent along ``(ȧ_{l-1}, v_l, ġ_l)``: the gradient of
  ``∇φ·(ȧ_{l-1}, v_l) + ġ_l·f_l`` with ``φ = g_l·f_l`` (reverse over reverse through the stage).

Each product gathers every stage twice (parameters and direction together, one all-gather) and
sums each stage's product over the ranks (one all-reduce of the stage's size); what a rank keeps
between products is its shards and the stage-boundary activations of one chunk. A product costs
about two gradients' worth of passes more than the whole-model operator's cached one: the price of
never holding the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.func import functional_call, grad, jvp, vjp

from landscope.curvature import CurvatureOperator
from landscope.curvature.batches import Chunk, HessianSet, is_pair
from landscope.curvature.kernels import second_order_kernels
from landscope.curvature.linear import VectorLayout, normal_parts
from landscope.curvature.modes import model_mode
from landscope.distributed.operator import has_data, reduce_floats, require_process_group, shard_share
from landscope.distributed.sharded import ShardLayout
from landscope.errors import DataError, InputError


def row_bounds(rows: int, world: int, rank: int) -> tuple[int, int]:
    """``[lo, hi)`` of the rows of dim 0 that ``rank`` holds: ``torch.chunk``'s split, FSDP2's.

    ``c = ⌈rows / world⌉`` rows each; the last ranks may hold fewer, or none.
    """
    c = -(-rows // world)
    return min(rank * c, rows), min((rank + 1) * c, rows)


class ParamShardLayout(ShardLayout):
    """A rank's part of every vector: the same rows of each parameter as its parameter shards.

    Unlike :class:`ShardLayout`'s one contiguous slice, the part is a list of ``segments``
    ``(start, length)`` of the whole vector (one per parameter); random starts are those segments
    of one global draw, so a sharded solve takes the steps of a single-process one.
    """

    def __init__(self, global_dim: int, segments: list[tuple[int, int]], group: Any = None) -> None:
        super().__init__(global_dim, 0, sum(m for _, m in segments), group)
        self.segments = segments

    def normal(self, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        return normal_parts(self.global_dim, self.segments, generator).to(device)

    def same_as(self, other: VectorLayout) -> bool:
        return super().same_as(other) and getattr(other, "segments", None) == self.segments


@dataclass(frozen=True)
class _Param:
    """One parameter: where it lives in its stage, in the whole vector and in this rank's part."""

    stage: int
    name: str  # within the stage
    shape: torch.Size
    offset: int  # in the whole vector
    lo: int  # this rank's rows [lo, hi) of dim 0
    hi: int
    rows_each: int  # ⌈rows / R⌉: what every rank's part is padded to in a gather
    local_offset: int  # in this rank's part

    @property
    def key(self) -> str:
        return f"{self.stage}.{self.name}"

    @property
    def row(self) -> int:
        return math.prod(self.shape[1:])

    @property
    def local_numel(self) -> int:
        return (self.hi - self.lo) * self.row


def _steps(stages: list[nn.Module]) -> list[list[int]]:
    """Stages grouped into steps: each step from a stage with parameters up to the next one.

    A parameter-free stage (an activation, a reshape) joins the step before it (the first, for
    leading ones): one gather and one pair of transforms fewer for each.
    """
    has = [next(stage.parameters(), None) is not None for stage in stages]
    steps: list[list[int]] = []
    for s in range(len(stages)):
        if not steps or (has[s] and any(has[t] for t in steps[-1])):
            steps.append([s])
        else:
            steps[-1].append(s)
    return steps


def _jvp(f: Callable, primals: tuple, tangents: tuple) -> tuple[Any, Any]:
    """``torch.func.jvp`` without ``has_aux``: (output, tangent)."""
    out = jvp(f, primals, tangents)
    return out[0], out[1]


_Want = Literal["product", "gradient", "loss"]  # what a sweep is for


def _rows_shape(shape: torch.Size) -> torch.Size:
    """A 0-d parameter is sharded as one row."""
    return shape if len(shape) > 0 else torch.Size([1])


class ParamShardedHessianOperator(CurvatureOperator):
    """The data-parallel Hessian of a staged model whose parameters are sharded over the ranks.

    Args:
        stages: the model as an ``nn.Sequential`` or a list of modules applied in order (the first
            takes the inputs ``X``, each output is a tensor). Parameter names are
            ``"{stage}.{name}"``, an ``nn.Sequential``'s own. Their values need not be on the
            module: a model built on the ``meta`` device (never materialised) takes ``shards``.
        loss_fn: ``loss_fn(outputs, targets)``, mean-reduced.
        local_data: this rank's shard of the Hessian set (``(X, y)`` batches as
            :class:`~landscope.HessianOperator` takes; ``None`` for a rank without data).
        group: the process group (default: the whole world).
        shards: this rank's rows of every parameter by name (FSDP2's ``p.to_local()``); default:
            cut from the stages' own parameters.
        model_mode, chunk_size, dtype, kernels: as for :class:`~landscope.HessianOperator`
            (``kernels="landscope"``: convolutions and eval-mode batch norm in the forms whose
            second derivatives run the gradient's kernels, in the backward pass). Buffers
            (BatchNorm statistics) stay whole on every rank and must be real tensors.

    Vectors (``matvec``'s, the eigenvectors of ``ls.eigenpairs``) are this rank's part, in the
    shards' layout (:class:`ParamShardLayout`); :meth:`gather` and :meth:`shard` convert.
    """

    def __init__(
        self,
        stages: nn.Sequential | Sequence[nn.Module],
        loss_fn: Callable[[Any, Any], torch.Tensor],
        local_data: Any,
        group: Any = None,
        *,
        shards: Mapping[str, torch.Tensor] | None = None,
        model_mode: Literal["eval", "train"] = "eval",
        chunk_size: int | None = None,
        dtype: torch.dtype | None = None,
        kernels: Literal["landscope", "torch"] = "landscope",
    ) -> None:
        require_process_group(type(self).__name__, "HessianOperator")
        if kernels not in ("landscope", "torch"):
            raise InputError(f"kernels must be 'landscope' or 'torch', got {kernels!r}")
        self.kernels = kernels
        listed = isinstance(stages, (nn.Sequential, list, tuple, nn.ModuleList))
        self.stages: list[nn.Module] = list(stages) if listed else []
        if not self.stages or not all(isinstance(s, nn.Module) for s in self.stages):
            raise InputError(
                "stages must be an nn.Sequential or a non-empty list of nn.Modules applied in order, "
                f"got {type(stages).__name__}"
            )
        if not callable(loss_fn):
            raise InputError(f"loss_fn must be callable (outputs, targets) → mean loss, got {loss_fn!r}")
        if model_mode not in ("eval", "train"):
            raise InputError(f"model_mode must be 'eval' or 'train', got {model_mode!r}")
        self.loss_fn, self.model_mode, self.group = loss_fn, model_mode, group
        self.world, self.rank = dist.get_world_size(group), dist.get_rank(group)
        self._container = nn.ModuleList(self.stages)  # for model_mode only: the modules are not copied
        self._shards, self._params = self._cut(shards, dtype)
        self._steps = _steps(self.stages)
        self._by_step = [[p for p in self._params if p.stage in step] for step in self._steps]
        self._params_of = [[p for p in self._params if p.stage == s] for s in range(len(self.stages))]
        if not self._params:
            raise InputError("the stages have no parameters: there is no Hessian to take")
        dt = dtype or next(iter(self._shards.values())).dtype
        device = next(iter(self._shards.values())).device
        self._buffers = [self._stage_buffers(i, dt) for i in range(len(self.stages))]
        local_dim = sum(p.local_numel for p in self._params)
        global_dim = sum(math.prod(p.shape) for p in self._params)
        segments = [(p.offset + p.lo * p.row, p.local_numel) for p in self._params]
        # the last rank holds the fewest rows: every rank sees the same shapes, so raises alike
        last = sum(
            math.prod(p.shape[1:]) * (hi - lo)
            for p in self._params
            for lo, hi in [row_bounds(_rows_shape(p.shape)[0], self.world, self.world - 1)]
        )
        if last == 0:
            raise InputError(
                f"over {self.world} ranks rank {self.world - 1} would hold no row of any parameter "
                "(every parameter has fewer rows of dim 0 than ranks); use fewer ranks"
            )
        super().__init__(local_dim, dt, device)
        self.layout = ParamShardLayout(global_dim, segments, group)
        self.data = HessianSet(local_data, chunk_size=chunk_size) if has_data(local_data) else None
        n_local = self.data.n_samples if self.data else 0
        self.weight, self.n_total = shard_share(n_local, self.data.total_weight if self.data else 0.0, group)
        self.n_local = n_local
        chunks = float(sum(1 for _ in self.data.chunks()) if self.data else 0)
        # every rank takes part in as many sweeps' collectives as the rank with the most chunks
        self._rounds = int(reduce_floats([chunks], group, dist.ReduceOp.MAX)[0])
        if self.data is not None:
            self._check_data()

    # -- layout -------------------------------------------------------------------------------
    def _cut(
        self, shards: Mapping[str, torch.Tensor] | None, dtype: torch.dtype | None
    ) -> tuple[dict[str, torch.Tensor], list[_Param]]:
        """The rows of every parameter held here, and where each lives."""
        given = dict(shards) if shards is not None else None
        out: dict[str, torch.Tensor] = {}
        params: list[_Param] = []
        offset = local = 0
        owner: dict[int, str] = {}
        for s, stage in enumerate(self.stages):
            for name, p in stage.named_parameters():
                key = f"{s}.{name}"
                if id(p) in owner:  # tied weights would be differentiated as two parameters
                    raise InputError(
                        f"parameter {key!r} is the same tensor as {owner[id(p)]!r}: stages must not "
                        "share parameters (untie them, or use HessianOperator)"
                    )
                owner[id(p)] = key
                shape = _rows_shape(p.shape)
                lo, hi = row_bounds(shape[0], self.world, self.rank)
                want = torch.Size([hi - lo, *shape[1:]])
                if given is not None:
                    if key not in given:
                        raise InputError(
                            f"shards has no entry for parameter {key!r} (expected shape {tuple(want)})"
                        )
                    t = given.pop(key).detach()
                    if t.shape != want:
                        raise InputError(
                            f"shard of {key!r} has shape {tuple(t.shape)}; rank {self.rank} of "
                            f"{self.world} holds rows [{lo}, {hi}) of {tuple(p.shape)}: {tuple(want)}"
                        )
                elif p.is_meta:
                    raise InputError(
                        f"parameter {key!r} is on the meta device: pass this rank's rows of every "
                        "parameter as shards={name: tensor}"
                    )
                else:
                    t = p.detach().reshape(shape)[lo:hi]
                t = t.to(dtype) if dtype is not None else t
                out[key] = t.clone()  # the operator owns its shard: a later update of p is not seen
                params.append(_Param(s, name, p.shape, offset, lo, hi, -(-shape[0] // self.world), local))
                offset += p.numel()
                local += (hi - lo) * math.prod(shape[1:])
        if given:
            raise InputError(f"shards has entries for no parameter of the stages: {sorted(given)[:5]}")
        return out, params

    def _stage_buffers(self, s: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        out = {}
        for name, b in self.stages[s].named_buffers():
            if b.is_meta:
                raise InputError(
                    f"buffer {s}.{name} is on the meta device: buffers stay whole on every rank, "
                    "load them (module.to_empty(device=...), then its state)"
                )
            out[name] = b.detach().to(dtype) if b.is_floating_point() else b.detach()
        return out

    def _check_data(self) -> None:
        assert self.data is not None
        batch = self.data.first_chunk()
        if not is_pair(batch):
            raise DataError(f"{type(self).__name__} takes (X, y) batches, got a {type(batch).__name__}")

    # -- gathers ------------------------------------------------------------------------------
    def _all_gather(self, params: list[_Param], parts: list[torch.Tensor]) -> list[torch.Tensor]:
        """Whole ``(b, numel)`` columns of ``params`` from every rank's ``(b, local numel)`` parts.

        One all-gather of one ``(b, S)`` block per rank (each parameter's rows padded to
        ``rows_each``), one copy in and one copy out per parameter.
        """
        b = parts[0].shape[0]
        size = [p.rows_each * p.row for p in params]
        send = parts[0].new_zeros((b, sum(size)))
        start = 0
        for p, t, n in zip(params, parts, size, strict=True):
            send[:, start : start + p.local_numel] = t
            start += n
        flat = send.new_empty((self.world * b, send.shape[1]))
        dist.all_gather_into_tensor(flat, send, group=self.group)
        out = flat.view(self.world, b, send.shape[1])
        whole, start = [], 0
        for p, n in zip(params, size, strict=True):
            rows = _rows_shape(p.shape)[0]
            block = out[:, :, start : start + n].reshape(self.world, b, p.rows_each, p.row)
            whole.append(
                block.permute(1, 0, 2, 3).reshape(b, self.world * p.rows_each, p.row)[:, :rows].reshape(b, -1)
            )
            start += n
        return whole

    def _local(self, x: torch.Tensor, p: _Param) -> torch.Tensor:
        """``p``'s rows in a local ``(b, dim)`` block."""
        return x[:, p.local_offset : p.local_offset + p.local_numel]

    def _gather_step(
        self, k: int, v: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Step ``k``'s parameters and its part of the direction ``v``, whole: one all-gather."""
        params = self._by_step[k]
        if not params:  # no parameters: nothing to gather (the same on every rank)
            return {}, {}
        parts = [torch.stack([self._shards[p.key].reshape(-1), self._local(v[None], p)[0]]) for p in params]
        whole = self._all_gather(params, parts)
        theta = {p.key: w[0].reshape(p.shape) for p, w in zip(params, whole, strict=True)}
        tangent = {p.key: w[1].reshape(p.shape) for p, w in zip(params, whole, strict=True)}
        return theta, tangent

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """The whole vector (or ``(global_dim, b)`` matrix), in parameter order, from every rank's part."""
        if x.shape[0] != self.dim:
            raise InputError(f"expected {self.dim} rows (this rank's part), got {tuple(x.shape)}")
        col = x.dim() == 1
        X = (x[:, None] if col else x).T
        whole = torch.cat(self._all_gather(self._params, [self._local(X, p) for p in self._params]), dim=1)
        return whole[0] if col else whole.T

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        """The part held here of a whole vector (or of the rows of a ``(global_dim, b)`` matrix)."""
        if x.shape[0] != self.layout.global_dim:
            raise InputError(
                f"expected {self.layout.global_dim} rows (the whole vector's), got {tuple(x.shape)}"
            )
        layout = self.layout
        assert isinstance(layout, ParamShardLayout)
        return torch.cat([x[a : a + m] for a, m in layout.segments])

    # -- products -----------------------------------------------------------------------------
    def _stage_call(self, k: int, theta: dict[str, torch.Tensor], a: Any) -> torch.Tensor:
        """Step ``k``: its stages in turn, each with its own parameters (``theta`` by full name)."""
        for s in self._steps[k]:
            own = {p.name: theta[p.key] for p in self._params_of[s]}
            a = functional_call(self.stages[s], (own, self._buffers[s]), (a,))
            if not isinstance(a, torch.Tensor) or not a.is_floating_point():
                raise InputError(
                    f"stage {s} ({type(self.stages[s]).__name__}) must return a float tensor, "
                    f"got {type(a).__name__}"
                )
        return a

    def _chunks(self) -> Iterator[Chunk | None]:
        """The chunks held here, then ``None`` until every rank's last: the collectives stay in step."""
        it = self.data.chunks(device=self.device, dtype=self.dtype) if self.data is not None else iter(())
        for _ in range(self._rounds):
            yield next(it, None)

    def _sweep(self, v: torch.Tensor, want: _Want = "product") -> tuple[torch.Tensor, float]:
        """The part held here of ``Hv`` (or of the gradient), and the mean loss (module docstring).

        ``want="loss"`` stops after the forward pass: the vector returned is then zero.
        """
        out = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        loss = torch.zeros(1, dtype=torch.float64, device=self.device)
        with model_mode(self._container, self.model_mode, device=self.device):
            for chunk in self._chunks():
                loss += self._sweep_chunk(chunk, v, out, want)
        dist.all_reduce(loss, group=self.group)
        return out, float(loss.item())

    def _forward(self, s: int, theta: dict, tv: dict, a: Any, da: Any) -> tuple[torch.Tensor, Any]:
        """``(a_s, ȧ_s)``; ``ȧ`` is ``None`` until a stage with parameters (the data has no tangent)."""
        if da is None and not theta:
            return self._stage_call(s, theta, a), None
        if da is None:
            return _jvp(lambda t: self._stage_call(s, t, a), (theta,), (tv,))
        return _jvp(lambda x, t: self._stage_call(s, t, x), (a, theta), (da, tv))

    def _backward(
        self, s: int, theta: dict, tv: dict, x: Any, dx: Any, g: Any, dg: Any
    ) -> tuple[Any, Any, dict, dict]:
        """``(g_{s-1}, ġ_{s-1}, ∇_θ, (Hv)_θ)`` of step ``s``: the pullback and its tangent.

        The tangent of ``(z, θ, q) ↦ J(z, θ)ᵀ q`` along ``(ż, v, q̇)`` is ``∇²φ·(ż, v) + Jᵀ q̇`` with
        ``φ = q·f(z, θ)``, i.e. the gradient of ``∇φ·(ż, v) + q̇·f``: reverse over reverse, whose
        second derivatives are native where forward-mode AD through a backward formula runs
        PyTorch's Python decompositions (about 6× slower on an MLP).
        """
        if dx is None and not theta:  # no parameters, no tangent in: nothing flows further back
            return None, None, {}, {}

        def inner(z: Any, t: dict) -> tuple[torch.Tensor, tuple]:
            out, pull = vjp(lambda zz, r: self._stage_call(s, r, zz), z, t)[:2]
            gz, gt = pull(g)
            value = (dg * out).sum() + (gz * dx).sum() + sum((gt[k] * tv[k]).sum() for k in gt)
            return value, (gz, gt)

        def inner_theta(t: dict) -> tuple[torch.Tensor, dict]:
            out, pull = vjp(lambda r: self._stage_call(s, r, x), t)[:2]
            (gt,) = pull(g)
            return (dg * out).sum() + sum((gt[k] * tv[k]).sum() for k in gt), gt

        if dx is None:  # the stage's input carries no tangent (the data): only the parameters' terms
            with second_order_kernels(self.kernels == "landscope"):
                res = grad(inner_theta, has_aux=True)(theta)
            return None, None, res[1], res[0]
        with second_order_kernels(self.kernels == "landscope"):
            res = grad(inner, argnums=(0, 1), has_aux=True)(x, theta)
        (dgi, dG), (gi, G) = res[0], res[1]
        return gi, dgi, G, dG

    def _sweep_chunk(self, chunk: Chunk | None, v: torch.Tensor, out: torch.Tensor, want: _Want) -> float:
        """One chunk's share of ``Hv`` (or the gradient) and the loss; ``None``: only the collectives."""
        n = len(self._steps)
        boundary: list[tuple[Any, Any]] = []  # (a_{s-1}, ȧ_{s-1}) at each stage's input
        a: Any = chunk.batch[0] if chunk is not None else None
        da: Any = None
        for s in range(n):
            theta, tv = self._gather_step(s, v)
            if chunk is not None:
                boundary.append((a, da))
                a, da = self._forward(s, theta, tv, a, da)
            del theta, tv  # one stage whole at a time
        value, g, dg = 0.0, None, None
        if chunk is not None:
            y = chunk.batch[1]

            def loss_grad(o: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                return grad(lambda q: (self.loss_fn(q, y),) * 2, has_aux=True)(o)

            # ∇²_a L is symmetric: its product by reverse over reverse (forward-mode AD through
            # some losses' backward, mse_loss's on torch 2.13, writes into a ZeroTensor)
            g, pull, lv = vjp(loss_grad, a, has_aux=True)  # type: ignore[misc]
            dg = pull(da)[0]
            value = float(lv) * chunk.weight * self.weight
        if want == "loss":  # on every rank alike: no backward pass, no more collectives
            return value
        for s in reversed(range(n)):
            params = self._by_step[s]
            theta, tv = self._gather_step(s, v)
            if chunk is not None and g is not None:
                x, dx = boundary[s]
                g, dg, G, dG = self._backward(s, theta, tv, x, dx, g, dg)
            del theta, tv
            if not params:
                continue
            if chunk is not None:
                share = G if want == "gradient" else dG
                whole = torch.cat([share[p.key].reshape(-1) for p in params]).mul_(chunk.weight * self.weight)
            else:
                whole = out.new_zeros(sum(math.prod(p.shape) for p in params))
            dist.all_reduce(whole, group=self.group)  # the ranks' shares summed: every row whole
            start = 0
            for p in params:
                out[p.local_offset : p.local_offset + p.local_numel] += whole[
                    start + p.lo * p.row : start + p.hi * p.row
                ]
                start += math.prod(p.shape)
        return value

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self._sweep(v)[0]

    def gradient(self) -> torch.Tensor:
        """The part held here of the gradient of the mean loss over all shards."""
        return self._sweep(torch.zeros(self.dim, dtype=self.dtype, device=self.device), "gradient")[0]

    def loss(self) -> float:
        """The mean loss over all shards."""
        return self._sweep(torch.zeros(self.dim, dtype=self.dtype, device=self.device), "loss")[1]

    def local_shards(self) -> dict[str, torch.Tensor]:
        """The rows held here of every parameter, by name (what the operator keeps of the model)."""
        return dict(self._shards)
