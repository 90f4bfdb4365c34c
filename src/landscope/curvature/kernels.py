"""Convolutions and eval-mode batch norm whose second derivatives run the gradient's kernels.

A Hessian product by reverse over reverse differentiates the backward pass. PyTorch's formula
for the derivative of a convolution's backward computes its weight term as a *forward*
convolution of the transposed input with the transposed output gradient: batch and channels
swapped, stride turned into dilation, and a kernel as large as the whole feature map (for a
ResNet stage at 32×32 with 256 samples: 256 input channels, a 32×32 kernel). Profiled on CPU
(``benchmarks/gpu_resnet.py``'s ResNet-lite) those convolutions cost 3–4× a normal one; on CUDA
every library's product cost 13.5× a gradient. The same terms are exactly a convolution's input
and weight gradients (``convolution_backward``), the kernels a gradient already runs:

* ``O = conv(x, w)``; its backward ``gx = conv_input_grad(gO, w)``, ``gw = conv_weight_grad(x, gO)``;
* the backward of that, given cotangents ``(ggx, ggw)``: ``∂/∂gO = conv(ggx, w) + conv(x, ggw)``,
  ``∂/∂x = conv_input_grad(gO, ggw)``, ``∂/∂w = conv_weight_grad(ggx, gO)``.

Eval-mode batch norm is an affine map per channel, ``x·γ/√(var+ε) + (β − mean·γ/√(var+ε))``;
written so, its second derivative is a few products instead of the general batch-norm double
backward. Applied to a rewritten convolution's output (the usual ``Conv → BatchNorm``) it folds
into that convolution, ``conv(x, w·s) + (b·s + shift)``, so that no derivative touches an
activation-sized tensor for it at all: on a 2-core CPU the product of ``benchmarks/
curvature.py``'s MNIST-1D CNN with BatchNorm went from 2.30 to 1.45 gradients, ResNet-lite's
(CIFAR-shaped, N = 256) from 2.38 to 1.85 in one process (PyTorch's formulas: 3.27). The fold
is skipped where the convolution's output or input changed in place first
(``ReLU(inplace=True)``: their version counters) and for an unbatched convolution. Train-mode
batch norm and string paddings (``"same"``) are left to PyTorch.

:func:`second_order_kernels` is a ``TorchFunctionMode``; inside it ``torch.conv1d/2d/3d`` (what
``nn.Conv*d`` calls) and ``F.batch_norm`` with running statistics take these forms. The values
and every derivative are the same functions (rounding aside); ``HessianOperator(...,
kernels="torch")`` turns it off.

The price is paid at linearisation: under ``torch.func`` (``vjp`` of ``grad``) each
``Function.apply`` takes functorch's Python path, which builds a Function class per call and
transform level and flattens the arguments with pytree at each. With the configuration passed
as one opaque leaf (:class:`_Cfg`) that costs about 1.2 ms per convolution on a 2-core CPU (two
Conv1d layers, 250 samples of length 40, 8 channels: 5.1 ms against 2.6 ms to linearise, 5.9 ms
with the configuration as lists of ints; about 3.3 ms a product either way). A large conv net
repays it in one product; a small one measured for a few products per linearisation does not
(``gilmer2021.init_norm``'s smoke run with 200 Hessian samples, width-8 MNIST-1D ResNets
tracked at k = 1: 62 s, 47 s with ``kernels="torch"``, before the opaque configuration).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_aten = torch.ops.aten
_CONV_DIMS = {torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3}
_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONV_DEFAULTS = (None, None, None, 1, 0, 1, 1)
_BN_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
_BN_DEFAULTS = (None, None, None, None, None, False, 0.1, 1e-5)


def _expand(v: int | Sequence[int], nd: int) -> tuple[int, ...]:
    return (int(v),) * nd if isinstance(v, int) else tuple(int(u) for u in v)


@dataclass(frozen=True)
class _Cfg:
    """A convolution's configuration as one opaque value.

    functorch flattens every argument of a ``Function.apply`` with pytree at each transform
    level; lists of ints are nodes, this object is one leaf.
    """

    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    need_x: bool = True
    need_w: bool = True


def _convolve(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, cfg: _Cfg) -> torch.Tensor:
    return _aten.convolution(
        x, w, b, cfg.stride, cfg.padding, cfg.dilation, False, (0,) * len(cfg.stride), cfg.groups
    )


def _convolve_backward(
    gO: torch.Tensor, x: torch.Tensor, w: torch.Tensor, cfg: _Cfg, mask: list[bool]
) -> tuple:
    """``convolution_backward``'s (input grad, weight grad, bias grad), as ``mask`` asks."""
    out_pad = (0,) * len(cfg.stride)
    return _aten.convolution_backward(
        gO, x, w, None, cfg.stride, cfg.padding, cfg.dilation, False, out_pad, cfg.groups, mask
    )


class _ConvBackward(torch.autograd.Function):
    """``(gO, x, w) ↦ (gx, gw)``, a convolution's backward, differentiable by gradient kernels."""

    generate_vmap_rule = True  # vmapped products (vmap_matmat): functorch batches the aten ops

    @staticmethod
    def forward(gO, x, w, cfg):
        gx, gw, _ = _convolve_backward(gO, x, w, cfg, [cfg.need_x, cfg.need_w, False])
        return gx, gw

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Any) -> None:
        gO, x, w, cfg = inputs
        ctx.save_for_backward(gO, x, w)
        ctx.cfg = cfg

    @staticmethod
    def backward(ctx: Any, ggx: torch.Tensor | None, ggw: torch.Tensor | None) -> tuple:
        gO, x, w = ctx.saved_tensors
        cfg = ctx.cfg
        need_gO, need_x, need_w = ctx.needs_input_grad[:3]
        g_gO = g_x = g_w = None
        if need_gO and ggx is not None:
            g_gO = _convolve(ggx, w, None, cfg)
        if need_gO and ggw is not None:
            term = _convolve(x, ggw, None, cfg)
            g_gO = term if g_gO is None else g_gO + term
        if need_x and ggw is not None:
            g_x = _convolve_backward(gO, x, ggw, cfg, [True, False, False])[0]
        if need_w and ggx is not None:
            g_w = _convolve_backward(gO, ggx, w, cfg, [False, True, False])[1]
        return g_gO, g_x, g_w, None


class _Conv(torch.autograd.Function):
    """A convolution whose backward is :class:`_ConvBackward` (so its double backward is cheap)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, w, b, cfg):
        return _convolve(x, w, b, cfg)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Any) -> None:
        x, w, b, cfg = inputs
        ctx.save_for_backward(x, w)
        ctx.cfg = cfg
        ctx.has_bias = b is not None

    @staticmethod
    def backward(ctx: Any, gO: torch.Tensor) -> tuple:
        x, w = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gx = gw = gb = None
        if need_x or need_w:
            gx, gw = _ConvBackward.apply(gO, x, w, replace(ctx.cfg, need_x=need_x, need_w=need_w))
        if ctx.has_bias and need_b:
            gb = gO.sum(dim=[0, *range(2, gO.dim())])
        return (gx if need_x else None), (gw if need_w else None), gb, None


def _bound(names: tuple[str, ...], defaults: tuple, args: tuple, kwargs: dict) -> dict[str, Any]:
    out = dict(zip(names, defaults, strict=True))
    out.update(zip(names, args, strict=False))
    out.update(kwargs)
    return out


@dataclass(frozen=True)
class _ConvCall:
    """A rewritten convolution's inputs: an eval-mode batch norm of its output folds into it."""

    output: weakref.ref  # the output tensor: a recycled ``id`` must not match
    version: int  # its version counter: an in-place op since (``ReLU(inplace=True)``) must not fold
    x_version: int  # the input's: the fold convolves the input again
    x: torch.Tensor
    w: torch.Tensor
    b: torch.Tensor | None
    cfg: _Cfg


def _conv(nd: int, a: dict[str, Any]) -> tuple[torch.Tensor, _ConvCall | None] | None:
    """The rewritten convolution and what a fold needs, or ``None`` where PyTorch's own must run.

    String paddings stay PyTorch's. An unbatched ``(C, L…)`` output never folds (``None`` beside
    it): its batch norm would take the positions as channels.
    """
    x, w = a["input"], a["weight"]
    if isinstance(a["padding"], str) or not isinstance(x, torch.Tensor) or w.dim() != nd + 2:
        return None
    cfg = _Cfg(
        _expand(a["stride"], nd), _expand(a["padding"], nd), _expand(a["dilation"], nd), int(a["groups"])
    )
    if x.dim() == nd + 1:  # unbatched
        return _Conv.apply(x.unsqueeze(0), w, a["bias"], cfg).squeeze(0), None
    out = _Conv.apply(x, w, a["bias"], cfg)
    return out, _ConvCall(weakref.ref(out), out._version, x._version, x, w, a["bias"], cfg)


def _eval_affine(a: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Eval-mode batch norm's per-channel ``(scale, shift)`` (``None``: train mode)."""
    if a["training"] or a["running_mean"] is None or a["running_var"] is None:
        return None
    scale = torch.rsqrt(a["running_var"] + a["eps"])
    if a["weight"] is not None:
        scale = a["weight"] * scale
    shift = -a["running_mean"] * scale
    if a["bias"] is not None:
        shift = shift + a["bias"]
    return scale, shift


def _folded(conv: _ConvCall, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``conv``'s convolution followed by the per-output-channel affine map, as one convolution."""
    w = conv.w * scale.reshape(-1, *[1] * (conv.w.dim() - 1))
    b = shift if conv.b is None else conv.b * scale + shift
    return _Conv.apply(conv.x, w, b, conv.cfg)


def _eval_batch_norm(a: dict[str, Any], conv: _ConvCall | None) -> torch.Tensor | None:
    """Batch norm with running statistics as a per-channel affine map (``None``: train mode).

    Of a rewritten convolution's output it is folded into that convolution: ``conv(x, w·s) + (b·s
    + shift)``, the same function of the same parameters, whose derivatives touch weight-sized
    tensors instead of activations (the affine map's scale gradient alone is an activation-sized
    product and sum in every backward pass and two in every Hessian product). The unfolded
    convolution's output is then left unused, so no product runs through it.
    """
    affine = _eval_affine(a)
    if affine is None:
        return None
    scale, shift = affine
    x: torch.Tensor = a["input"]
    if (
        conv is not None
        and conv.output() is x
        and x._version == conv.version
        and conv.x._version == conv.x_version
        and scale.dim() == 1
        and scale.numel() == conv.w.shape[0]
    ):
        return _folded(conv, scale, shift)
    shape = [1, -1] + [1] * (x.dim() - 2)
    return x * scale.reshape(shape) + shift.reshape(shape)


class _SecondOrderKernels(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self._convs: dict[int, _ConvCall] = {}  # by id of the output, for batch-norm folding

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = None
        if func in _CONV_DIMS:
            done = _conv(_CONV_DIMS[func], _bound(_CONV_ARGS, _CONV_DEFAULTS, args, kwargs))
            if done is not None:
                out, call = done
                if call is not None:
                    self._convs[id(out)] = call
        elif func is F.batch_norm:
            a = _bound(_BN_ARGS, _BN_DEFAULTS, args, kwargs)
            x = a["input"]
            out = _eval_batch_norm(a, self._convs.get(id(x)) if isinstance(x, torch.Tensor) else None)
        return func(*args, **kwargs) if out is None else out


@contextlib.contextmanager
def second_order_kernels(enabled: bool = True) -> Iterator[None]:
    """Run convolutions and eval-mode batch norm in their second-order-friendly forms."""
    if not enabled:
        yield
        return
    with _SecondOrderKernels():
        yield
