"""The two losses of the papers, mean-reduced over samples as the curvature operators require.

``mse`` is ½‖f(x) − t‖² summed over outputs and averaged over samples, with ``t = onehot(y)`` for
integer labels and ``t = y`` for float targets: the edge-of-stability convention (Cohen et al.
2021), under which GD's threshold is exactly 2/η. ``ce`` is the mean cross-entropy.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from landscope.errors import InputError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """½‖f − t‖² per sample, mean over samples; integer ``targets`` are one-hot encoded."""
    if not targets.is_floating_point():
        targets = F.one_hot(targets, outputs.shape[-1]).to(outputs.dtype)
    targets = targets.reshape(outputs.shape).to(outputs.dtype)
    return 0.5 * (outputs - targets).pow(2).reshape(outputs.shape[0], -1).sum(1).mean()


def ce(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits ``outputs`` against integer class ``targets``."""
    return F.cross_entropy(outputs, targets)


LOSSES: dict[str, LossFn] = {"mse": mse, "ce": ce}


def get_loss(name: str) -> LossFn:
    """The loss named ``name`` (``"mse"`` or ``"ce"``)."""
    if name not in LOSSES:
        raise InputError(f"loss must be one of {sorted(LOSSES)}, got {name!r}")
    return LOSSES[name]
