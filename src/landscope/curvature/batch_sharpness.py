"""Batch sharpness: the curvature a minibatch step sees along its own gradient.

Andreyev & Beneventano (2024, "Edge of Stochastic Stability") argue that for minibatch SGD the
quantity that settles at 2/η is not λ₁ of the full-batch Hessian but

    batch sharpness = E_B [ g_Bᵀ H_B g_B / ‖g_B‖² ],

the expectation over minibatches B of the curvature of the minibatch loss L_B along the
minibatch gradient g_B = ∇L_B (H_B its Hessian). Each term costs one linearisation of the batch
and one Hessian-vector product. The mean over the given batches estimates the expectation, with
its standard error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from landscope.curvature.operators import HessianOperator
from landscope.errors import InputError


@dataclass(frozen=True)
class BatchSharpness:
    """``value`` = mean of ``per_batch`` (each ``g_Bᵀ H_B g_B / ‖g_B‖²``) and its standard error."""

    value: float
    per_batch: tuple[float, ...]
    stderr: float
    n_matvecs: int


def batch_sharpness(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
    batches: Iterable[Any] = (),
    *,
    batch_loss: Callable[[nn.Module, Any], torch.Tensor] | None = None,
    model_mode: Literal["eval", "train"] = "train",
    params: Any = None,
) -> BatchSharpness:
    """Batch sharpness of ``model`` over ``batches`` (see the module docstring).

    Args:
        model: the model at the parameters of interest (read, never modified).
        loss_fn: mean-reduced ``loss_fn(outputs, targets)``; or ``batch_loss``; or neither for
            dict batches of a model returning ``.loss``.
        batches: minibatches of the training batch size, e.g. the next few the loop will draw
            (any structure :class:`~landscope.HessianOperator` takes).
        batch_loss: ``f(model, batch)`` → the batch's mean loss.
        model_mode: ``"train"`` (default: BatchNorm with the batch's statistics, the function a
            step differentiates; dropout off) or ``"eval"``.
        params: a parameter subset, as for :class:`~landscope.HessianOperator`.

    A batch whose gradient is exactly zero has no direction and is skipped.
    """
    values: list[float] = []
    n = 0
    for batch in batches:
        op = HessianOperator(
            model, loss_fn, batch, batch_loss=batch_loss, model_mode=model_mode, params=params
        )
        g = op.gradient()
        gg = float(g @ g)
        if gg > 0 and math.isfinite(gg):
            values.append(float(g @ op.matvec(g)) / gg)
            n += 1
        op.clear_cache()
    if not values:
        raise InputError("batch_sharpness needs at least one batch with a non-zero gradient")
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else math.nan
    return BatchSharpness(
        value=mean,
        per_batch=tuple(values),
        stderr=math.sqrt(var / len(values)) if len(values) > 1 else math.nan,
        n_matvecs=n,
    )
