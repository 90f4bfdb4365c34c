"""Curvature matrices as matrix-free linear operators.

Every curvature matrix of landscope is a :class:`CurvatureOperator`: a symmetric ``dim × dim``
matrix known only through ``op @ v`` (``matvec``) and ``op @ V`` (``matmat``). Algorithms
(:mod:`~landscope.curvature.lanczos`, :mod:`~landscope.curvature.power`,
:mod:`~landscope.curvature.density`) take any operator and never ask which matrix they got.

Conventions of the model-based operators (:class:`HessianOperator`, :class:`GGNOperator`):

* **Mean loss.** ``loss_fn(outputs, targets)`` must be mean-reduced over its batch. Chunk ``b`` of
  the Hessian set is weighted by ``n_b / N``, so the operator is the curvature of the mean loss over
  all ``N`` samples however the data is chunked.
* **Model mode.** ``model_mode="eval"`` (default): dropout off, BatchNorm uses its running
  statistics, so the loss is a deterministic function of the parameters. ``"train"``: BatchNorm
  normalises with the statistics of each chunk (pass ``chunk_size`` = the training batch size to
  see what training sees); every other module is in eval mode, so dropout stays off, also where a
  module reads ``self.training`` itself, unless ``dropout=True`` (then the whole model is in train
  mode and its masks are fixed by ``dropout_seed``, so the operator is still a fixed matrix).
* **Attention** runs on the math kernel of ``scaled_dot_product_attention`` (the fused kernels
  have no double backward); the caller's kernel setting is restored afterwards.
* **Purity.** A matvec never changes the model: not its parameters, ``.grad``, BatchNorm running
  statistics, ``training`` flags, nor the global RNG.
* **Live parameters.** The operator reads the model's current parameters. It caches the
  linearisation of the gradient (one forward and backward pass with the graph kept), so each matvec
  is a single reverse pass through that graph; the cache is rebuilt when any parameter or buffer
  changes (PyTorch's version counters).
* **dtype.** The matvec runs in the parameters' dtype unless ``dtype=`` overrides it (a float32
  model with ``dtype=torch.float64`` is evaluated on float64 copies). Vectors of either float dtype
  are accepted; the result has the dtype of the input vector.
"""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vjp, vmap

from landscope.curvature.batch_loss import (
    BatchLoss,
    LossModule,
    PerSample,
    make_batch_loss,
    model_arguments,
    outputs_of,
)
from landscope.curvature.batches import (
    Batch,
    BatchWeight,
    HessianSet,
    batch_size,
    is_pair,
    map_tensors,
    tensors,
    to_device,
)
from landscope.curvature.kernels import second_order_kernels
from landscope.curvature.linear import CurvatureOperator, DenseOperator, PreconditionedOperator
from landscope.curvature.modes import model_mode
from landscope.curvature.params import ParamSpec, resolve_params
from landscope.errors import DataError, InputError, LandscopeError

# the protocol's classes live in linear.py; re-exported for the imports that predate it
__all__ = [
    "CurvatureOperator",
    "DenseOperator",
    "GGNOperator",
    "HessianOperator",
    "ModelCurvatureOperator",
    "PreconditionedOperator",
    "adam_preconditioner",
]

LossFn = Callable[[Any, Any], torch.Tensor]


def _functional_model_call(model: nn.Module, params: tuple[dict, dict], X: Any) -> Any:
    """``call_model`` with the parameters substituted."""
    args, kwargs = model_arguments(X)
    return functional_call(model, params, args, kwargs)


def _describe(batch: Batch) -> str:
    """Shapes of a batch's tensors, for error messages."""
    shapes = [tuple(t.shape) for t in tensors(batch)]
    if is_pair(batch) and all(isinstance(t, torch.Tensor) for t in batch):
        return f"inputs of shape {shapes[0]}, targets of shape {shapes[1]}"
    return f"a {type(batch).__name__} batch with tensors of shapes {shapes}"


_MATMAT_COLUMNS = 16  # vectors per vmap call: bounds the memory of batched tangents


def adam_preconditioner(
    optimizer: torch.optim.Optimizer, params: CurvatureOperator | Sequence[torch.Tensor] | None = None
) -> torch.Tensor:
    """Adam's diagonal preconditioner ``P = √(v / (1 − β₂ᵗ)) + ε`` from the optimiser's state.

    Also RMSprop's, ``P = √v + ε`` (``v`` minus the squared mean gradient when centred).

    ``params`` orders the entries: a model-based operator (its selected parameters), a sequence of
    parameter tensors, or ``None`` for every parameter of the optimiser's groups in order. The
    threshold ``(2 + 2β₁) / ((1 − β₁) η)`` used with it assumes that the bias correction of the
    first moment has decayed (t ≫ 1/(1−β₁)), as in Cohen et al. (2022).
    """
    if not hasattr(optimizer, "param_groups"):
        raise InputError(f"adam_preconditioner needs a torch optimizer, got {type(optimizer).__name__}")
    groups = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    if params is None:
        tensors = [p for g in optimizer.param_groups for p in g["params"]]
    elif isinstance(params, ModelCurvatureOperator):
        tensors = params.parameters()
    elif isinstance(params, CurvatureOperator):
        raise InputError(f"{type(params).__name__} has no model parameters to match Adam's state")
    else:
        tensors = list(params)
    parts = []
    for i, p in enumerate(tensors):
        if id(p) not in groups:
            raise InputError(f"parameter {i} (shape {tuple(p.shape)}) is not optimised by this optimizer")
        group, state = groups[id(p)], optimizer.state.get(p, {})
        if "square_avg" in state:  # RMSprop: no bias correction; centred, the variance
            v = state["square_avg"].detach().double()
            if "grad_avg" in state:
                v = (v - state["grad_avg"].detach().double() ** 2).clamp_min(0.0)
            parts.append((v.sqrt() + group["eps"]).reshape(-1))
            continue
        if "exp_avg_sq" not in state:
            raise InputError(
                f"optimizer has no Adam or RMSprop state for parameter {i} (shape "
                f"{tuple(p.shape)}): it is neither, or no step was taken yet"
            )
        step = float(state["step"])
        beta2, eps = group["betas"][1], group["eps"]
        v_hat = state["exp_avg_sq"].detach().double() / (1.0 - beta2**step)
        parts.append((v_hat.sqrt() + eps).reshape(-1))
    return torch.cat(parts)


@dataclass
class _Linearisation:
    """What a matvec reuses at fixed parameters: one chunk's backward graph and its weight."""

    weight: float
    apply: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
    gradient: dict[str, torch.Tensor]
    loss: torch.Tensor


class ModelCurvatureOperator(CurvatureOperator):
    """A curvature matrix defined by a model, a loss and a Hessian set: the extension point.

    What the trainer, the monitor, the LR finder and the experiments use besides products:
    :meth:`gradient` and :meth:`loss` (at the current parameters, from the same linearisation),
    :meth:`clear_cache` (free the graphs), :meth:`parameters` / :meth:`flat_params` and
    :meth:`split` / :meth:`flatten` (vectors ↔ per-parameter tensors). A new model-based matrix
    subclasses it and implements :meth:`_linearise` (``docs/operators.md``);
    :class:`HessianOperator` and :class:`GGNOperator` are the two built in.
    """

    _apply_runs_model = True  # whether a product runs the model (then it needs the mode)

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn | None = None,
        data: object = None,
        params: ParamSpec = None,
        model_mode: Literal["eval", "train"] = "eval",
        chunk_size: int | None = None,
        dtype: torch.dtype | None = None,
        dropout: bool = False,
        dropout_seed: int = 0,
        cache: bool | Literal["auto"] = "auto",
        check_deterministic: bool = True,
        vmap_matmat: bool = False,
        *,
        batch_loss: BatchLoss | None = None,
        batch_weight: BatchWeight | None = None,
        kernels: Literal["landscope", "torch"] = "landscope",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self._user_batch_loss = batch_loss is not None
        self._loss = make_batch_loss(loss_fn, batch_loss)
        self.loss_fn = loss_fn
        self.loss_reduction = "mean"  # "sum" when loss_fn is found to sum (see _check_model_and_loss)
        self._check_loss_kind(loss_fn, batch_loss)
        if model_mode not in ("eval", "train"):
            raise InputError(f"model_mode must be 'eval' or 'train', got {model_mode!r}")
        if dtype is not None and dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            raise InputError(f"dtype must be a floating torch dtype, got {dtype!r}")
        if cache not in (True, False, "auto"):
            raise InputError(f"cache must be True, False or 'auto', got {cache!r}")
        if kernels not in ("landscope", "torch"):
            raise InputError(f"kernels must be 'landscope' or 'torch', got {kernels!r}")
        self.kernels = kernels
        self.model = model
        # vmap over tangents shares work between columns on small models but was 2× slower per
        # column than a loop on the 40-256-256-10 MLP (benchmarks/curvature.py): opt-in.
        self.vmap_matmat = bool(vmap_matmat)
        self.model_mode = model_mode
        self.dropout = bool(dropout)
        self.dropout_seed = int(dropout_seed)
        self.names = resolve_params(model, params)
        named = dict(model.named_parameters())
        self._shapes = [named[n].shape for n in self.names]
        self._numels = [named[n].numel() for n in self.names]
        self.dim = sum(self._numels)
        self.dtype = dtype or named[self.names[0]].dtype
        self.device = named[self.names[0]].device
        self.data = HessianSet(
            data, chunk_size=chunk_size, check_deterministic=check_deterministic, batch_weight=batch_weight
        )
        self.n_samples = self.data.n_samples
        self.cache = (self.data.single and chunk_size is None) if cache == "auto" else bool(cache)
        self._cached: list[_Linearisation] | None = None
        self._cache_key: tuple | None = None
        self._check_model_and_loss()

    # -- parameters -------------------------------------------------------------------------
    @property
    def _selected(self) -> list[torch.Tensor]:
        """The selected parameters, looked up by name: a parameter replaced on the model is seen."""
        named = dict(self.model.named_parameters())
        missing = [n for n in self.names if n not in named]
        if missing:
            raise InputError(f"the model no longer has the parameters {missing} this operator acts on")
        tensors: list[torch.Tensor] = [named[n] for n in self.names]
        for n, t, shape in zip(self.names, tensors, self._shapes, strict=True):
            if t.shape != shape:
                raise InputError(
                    f"parameter {n!r} changed shape from {tuple(shape)} to "
                    f"{tuple(t.shape)}; build a new operator"
                )
        return tensors

    def parameters(self) -> list[torch.Tensor]:
        """The selected parameter tensors of the model, in the operator's order."""
        return list(self._selected)

    def flat_params(self) -> torch.Tensor:
        """The selected parameters as one detached vector (a copy)."""
        return torch.cat([p.detach().reshape(-1) for p in self._selected]).to(self.dtype)

    def split(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        """A flat vector (or ``(b, dim)`` batch) as a dict of parameter-shaped views."""
        lead = v.shape[:-1]
        return {
            n: t.reshape(*lead, *s)
            for n, t, s in zip(self.names, torch.split(v, self._numels, dim=-1), self._shapes, strict=True)
        }

    def flatten(self, d: dict[str, torch.Tensor], batched: bool = False) -> torch.Tensor:
        """Inverse of :meth:`split`."""
        if batched:
            b = next(iter(d.values())).shape[0]
            return torch.cat([d[n].reshape(b, -1) for n in self.names], dim=1)
        return torch.cat([d[n].reshape(-1) for n in self.names])

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Detached copies of the selected parameters, and everything else the forward pass needs."""

        def cast(t: torch.Tensor) -> torch.Tensor:
            t = t.detach()
            return t.to(self.dtype) if t.is_floating_point() else t

        chosen = set(self.names)
        p = {n: cast(t).clone() for n, t in zip(self.names, self._selected, strict=True)}
        fixed = {n: cast(t) for n, t in self.model.named_parameters() if n not in chosen}
        fixed.update({n: cast(b) for n, b in self.model.named_buffers()})
        return p, fixed

    def _version_key(self) -> tuple:
        return tuple(
            (id(t), t._version, t.data_ptr()) for t in (*self.model.parameters(), *self.model.buffers())
        )

    # -- model mode -------------------------------------------------------------------------
    def _mode(self) -> contextlib.AbstractContextManager:
        """The operator's mode for one evaluation (:func:`~landscope.curvature.modes.model_mode`)."""
        return model_mode(
            self.model,
            self.model_mode,
            dropout=self.dropout,
            dropout_seed=self.dropout_seed,
            device=self.device,
        )

    def _loss_of(
        self, fixed: dict[str, torch.Tensor], batch: Batch
    ) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
        """The batch's mean loss as a function of the selected parameters.

        Evaluated through :class:`LossModule`, so the parameters are substituted wherever the
        loss reads them (a regulariser over ``model.parameters()`` included).
        """
        wrapper = LossModule(self.model, self._loss)
        fixed_prefixed = {f"model.{n}": t for n, t in fixed.items()}

        def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
            return functional_call(
                wrapper, ({f"model.{n}": t for n, t in p.items()}, fixed_prefixed), (batch,)
            )

        return loss

    def _check_model_and_loss(self) -> None:
        """Run the model and loss once on a few samples: clear errors at construction, not in Lanczos.

        A ``loss_fn`` that sums over its batch (``reduction="sum"``) is recognised (on the batch
        repeated twice it doubles) and divided by the chunk's sample count, so the operator is the
        curvature of the mean over samples of each sample's summed loss: multiply by the number of
        samples for the sum's. For cross-entropy that is ``reduction="mean"``'s; for MSE over D
        outputs (or a token loss over S positions) it is D (S) times it.
        """
        batch = self.data.first_chunk()
        if self.loss_fn is not None and not is_pair(batch):
            length = f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""
            raise DataError(
                f"data batch 0 must be a pair (X, y) for loss_fn(outputs, targets), got "
                f"a {type(batch).__name__}{length}; for other batches pass "
                "batch_loss=f(model, batch)"
            )
        batch = to_device(batch, self.device, self.dtype)
        p, fixed = self._state()
        description = _describe(batch)
        try:
            with torch.no_grad(), self._mode():
                loss = self._loss_of(fixed, batch)(p)
        except LandscopeError:
            raise
        except (RuntimeError, ValueError, IndexError, TypeError, KeyError, AttributeError) as e:
            raise DataError(
                f"the model or loss failed on the data ({description}): {type(e).__name__}: {e}"
            ) from e
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            what = "batch_loss" if self._user_batch_loss else "the loss"
            raise InputError(
                f"{what} must return a scalar (the batch's mean loss), got {shape}; use reduction='mean'"
            )
        if self.loss_fn is None or not is_pair(batch) or batch_size(batch) < 2:
            return
        # the outputs once (dropout masks, if any, are drawn once), the loss on them repeated twice
        with torch.no_grad(), self._mode():
            try:
                out = outputs_of(_functional_model_call(self.model, (p, fixed), batch[0]))
                single = self.loss_fn(out, batch[1])
                doubled = self.loss_fn(
                    torch.cat([out, out]),
                    map_tensors(lambda t: torch.cat([t, t]) if t.dim() > 0 else t, batch[1]),
                )
            except (RuntimeError, ValueError, IndexError, TypeError):
                return  # targets that cannot be repeated: nothing to compare
        if not (isinstance(doubled, torch.Tensor) and torch.isfinite(single) and single.abs() > 1e-12):
            return
        ratio = float(doubled / single)
        slack = max(1e-3, 16 * torch.finfo(self.dtype).eps)  # bf16 rounds to ~1e-2
        if abs(ratio - 2.0) <= 2 * slack:
            self.loss_reduction = "sum"
            self._loss = make_batch_loss(self._mean_loss_fn, None)
        elif abs(ratio - 1.0) > slack:
            raise InputError(
                f"loss_fn does not look mean- or sum-reduced: on the batch repeated "
                f"twice it returns {ratio:.3f}× its value on the batch (a mean gives 1, "
                "a sum 2); use reduction='mean', or pass batch_loss=f(model, batch)"
            )

    @property
    def _mean_loss_fn(self) -> LossFn | None:
        """``loss_fn`` as a mean over the chunk's samples (a sum-reduced one is divided)."""
        if self.loss_reduction == "sum" and self.loss_fn is not None:  # only a loss_fn is found to sum
            return PerSample(self.loss_fn)
        return self.loss_fn

    # -- linearisation ----------------------------------------------------------------------
    @abstractmethod
    def _linearise(
        self, p: dict[str, torch.Tensor], fixed: dict[str, torch.Tensor], batch: Batch, weight: float
    ) -> _Linearisation: ...

    def _linearisations(self) -> Iterator[_Linearisation]:
        """Per-chunk linearisations at the current parameters (cached while parameters hold)."""
        if self.cache:
            key = self._version_key()
            if self._cached is None or key != self._cache_key:
                self._cached = None  # free the old graphs before building new ones
                self._cached = list(self._build())
                self._cache_key = key
            yield from self._cached
        else:
            yield from self._build()

    def _build(self) -> Iterator[_Linearisation]:
        p, fixed = self._state()
        for i, c in enumerate(self.data.chunks(device=self.device, dtype=self.dtype)):
            try:
                with self._mode():
                    lin = self._linearise(p, fixed, c.batch, c.weight)
            except (RuntimeError, ValueError) as e:
                raise DataError(
                    f"the model or loss failed on chunk {i} ({batch_size(c.batch)} "
                    f"samples, model_mode={self.model_mode!r}): {e}"
                ) from e
            yield lin

    def clear_cache(self) -> None:
        """Drop the cached graphs (they hold the activations of the whole Hessian set)."""
        self._cached, self._cache_key = None, None

    def __getstate__(self) -> dict:
        """Pickled without the cached graphs (closures over autograd state; rebuilt on demand)."""
        return {**self.__dict__, "_cached": None, "_cache_key": None}

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        t = self.split(v)
        out = torch.zeros_like(v)
        for lin in self._linearisations():
            with self._mode() if self._apply_runs_model else contextlib.nullcontext():
                out.add_(self.flatten(lin.apply(t)), alpha=lin.weight)
        return out

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        if not self.vmap_matmat:
            return super()._matmat(V)
        out = torch.zeros_like(V)
        for lin in self._linearisations():
            batched = vmap(lin.apply)
            for s in range(0, V.shape[1], _MATMAT_COLUMNS):
                cols = V[:, s : s + _MATMAT_COLUMNS].T.contiguous()
                with self._mode():
                    res = self.flatten(batched(self.split(cols)), batched=True)
                out[:, s : s + _MATMAT_COLUMNS].add_(res.T, alpha=lin.weight)
        return out

    def _check_loss_kind(self, loss_fn: LossFn | None, batch_loss: BatchLoss | None) -> None:
        """Operators that need more than the composed loss refuse what they cannot use."""

    def gradient(self) -> torch.Tensor:
        """Gradient of the mean loss over the Hessian set w.r.t. the selected parameters."""
        g = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        for lin in self._linearisations():
            g.add_(self.flatten(lin.gradient), alpha=lin.weight)
        return g

    def loss(self) -> float:
        """Mean loss over the Hessian set at the current parameters."""
        return float(sum(lin.weight * lin.loss.item() for lin in self._linearisations()))


class HessianOperator(ModelCurvatureOperator):
    """The Hessian of the mean loss w.r.t. the selected parameters.

    ``HessianOperator(model, loss_fn, data, params=None, model_mode="eval", chunk_size=None)``.
    See the module docstring for the conventions (mean loss, modes, purity, dtype).

    Each chunk is linearised once with ``torch.func.vjp`` of ``torch.func.grad`` (reverse over
    reverse): one forward and backward pass with the graph kept; every matvec is then one reverse
    pass through it, about 1.2–2× the cost of a gradient instead of ≈3× for forward-over-reverse
    recomputed at every product (``benchmarks/curvature.py``). With ``kernels="landscope"`` (the
    default) convolutions and eval-mode batch norm are linearised in forms whose second derivatives
    run the gradient's own kernels (:mod:`~landscope.curvature.kernels`; PyTorch's double backward
    of a strided convolution runs a feature-map-sized kernel); ``kernels="torch"`` keeps PyTorch's
    formulas. ``cache="auto"`` keeps the graphs
    when ``data`` is a tensor pair without ``chunk_size``; with ``cache=False`` (memory bounded by
    one chunk) each matvec rebuilds them chunk by chunk.
    """

    # A product is a backward pass through the graph built (in the operator's mode) by
    # _linearisations: no module runs, so no mode switch or RNG fork is needed per product.
    _apply_runs_model = False

    def _linearise(self, p, fixed, batch, weight):
        loss_fn = self._loss_of(fixed, batch)

        def grad_and_value(q):
            return grad(lambda r: (loss_fn(r),) * 2, has_aux=True)(q)

        # vjp's return type is a union over has_aux (2 or 3 values)
        with second_order_kernels(self.kernels == "landscope"):
            g, vjp_fn, value = vjp(grad_and_value, p, has_aux=True)  # type: ignore[misc]
        return _Linearisation(
            weight=weight,
            apply=lambda t: vjp_fn(t)[0],
            gradient={k: t.detach() for k, t in g.items()},
            loss=value.detach(),
        )


class GGNOperator(ModelCurvatureOperator):
    """The generalised Gauss–Newton matrix ``Σ_b (n_b/N) J_bᵀ H_L J_b``.

    ``J_b`` is the Jacobian of the model's outputs on chunk ``b`` w.r.t. the selected parameters and
    ``H_L`` the Hessian of ``loss_fn`` w.r.t. those outputs. It is positive semi-definite for convex
    losses (MSE, cross-entropy) and equals the Hessian minus the term weighted by the loss's
    gradient w.r.t. the outputs.
    """

    _apply_runs_model = True  # each product re-runs the model forward (jvp of the outputs)

    def _check_loss_kind(self, loss_fn: LossFn | None, batch_loss: BatchLoss | None) -> None:
        if loss_fn is None:
            raise InputError(
                "GGNOperator needs loss_fn(outputs, targets) and (X, y) batches: the "
                "GGN splits the loss into the model's outputs and a loss of them, "
                "which batch_loss (their composition) cannot give"
            )

    def _linearise(self, p, fixed, batch, weight):
        model = self.model
        if not is_pair(batch):
            raise DataError(f"GGNOperator needs (X, y) batches, got a {type(batch).__name__}")
        X, y = batch
        loss_fn = self._mean_loss_fn
        assert loss_fn is not None  # _check_loss_kind refused an operator without loss_fn

        def outputs(q):
            return outputs_of(_functional_model_call(model, (q, fixed), X))

        out, vjp_fn = vjp(outputs, p)  # type: ignore[misc]  # vjp: a union over has_aux (2 or 3 values)
        out = out.detach()

        def loss_at(o):
            return loss_fn(o, y)

        dloss, value = grad(lambda o: (loss_at(o), loss_at(o)), has_aux=True)(out)
        g = vjp_fn(dloss)[0]

        def apply(t):
            # jvp's return type is a union over has_aux (2 or 3 values)
            _, jv = jvp(outputs, (p,), (t,))  # type: ignore[misc]
            _, hjv = jvp(grad(loss_at), (out,), (jv,))  # type: ignore[misc]
            return vjp_fn(hjv)[0]

        return _Linearisation(
            weight=weight, apply=apply, gradient={k: v.detach() for k, v in g.items()}, loss=value.detach()
        )
