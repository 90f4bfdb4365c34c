"""Optimisers (all ``torch.optim``) and the curvature each one tolerates.

The stability threshold is the largest sharpness at which the optimiser's linearised dynamics on a
quadratic stay bounded ([G] §2; Cohen et al. 2021, 2022). For η and PyTorch's update forms:

- GD / SGD: ``2/η``;
- heavy-ball momentum β (v ← βv + (1−d)g, θ ← θ − ηv): ``(2 + 2β) / (η(1 − d))``;
- Nesterov (PyTorch's form, d = 0): ``(2 + 2β) / (η(1 + 2β))``;
- Adam/AdamW with β₁: ``(2 + 2β₁) / ((1 − β₁)η)`` (38/η at β₁ = 0.9) for the *preconditioned*
  sharpness λ₁(P⁻¹H), assuming the first moment's bias correction has decayed;
- RMSprop (PyTorch's form, momentum β on the preconditioned step): ``(2 + 2β) / η`` for
  λ₁(P⁻¹H), ``P = √v + ε`` (no bias correction in RMSprop).

Coupled L2 weight decay ``wd`` (SGD family) adds ``wd`` to every curvature, so the threshold for the
loss's own Hessian is lowered by ``wd``; AdamW's decoupled decay is ignored (it is O(η·wd)).
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Iterable

import torch

from landscope.errors import InputError
from landscope.training.config import OptimizerSpec

PRECONDITIONED = ("adam", "adamw")


def make_optimizer(params: Iterable[torch.nn.Parameter], spec: OptimizerSpec) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimiser that ``spec`` describes."""
    params = list(params)
    if spec.name in ("gd", "sgd"):
        return torch.optim.SGD(params, lr=spec.lr, weight_decay=spec.weight_decay)
    if spec.name in ("momentum", "nesterov"):
        return torch.optim.SGD(
            params,
            lr=spec.lr,
            momentum=spec.momentum,
            nesterov=spec.name == "nesterov",
            weight_decay=spec.weight_decay,
        )
    cls = torch.optim.Adam if spec.name == "adam" else torch.optim.AdamW
    return cls(params, lr=spec.lr, betas=spec.betas, eps=spec.eps, weight_decay=spec.weight_decay)


def _threshold(
    kind: str,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    beta1: float = 0.9,
    weight_decay: float = 0.0,
) -> float:
    if not lr >= 0:
        raise InputError(f"stability_threshold: learning rate must be non-negative, got {lr!r}")
    if lr == 0:
        return math.inf  # no step, no instability (a schedule's final η can be 0)
    if kind in ("gd", "sgd"):
        return 2.0 / lr - weight_decay
    if kind == "momentum":
        return (2.0 + 2.0 * momentum) / (lr * (1.0 - dampening)) - weight_decay
    if kind == "nesterov":
        return (2.0 + 2.0 * momentum) / (lr * (1.0 + 2.0 * momentum)) - weight_decay
    if kind == "rmsprop":
        return (2.0 + 2.0 * momentum) / lr
    return (2.0 + 2.0 * beta1) / ((1.0 - beta1) * lr)


def stability_threshold(
    optimizer: torch.optim.Optimizer | OptimizerSpec, lr: float | None = None
) -> float | None:
    """The largest (preconditioned, for Adam) sharpness the optimiser tolerates at its current η.

    Takes a ``torch.optim`` optimiser (its first parameter group's hyper-parameters) or an
    :class:`OptimizerSpec`; ``lr`` overrides η (for a schedule's value). Returns ``None`` for an
    optimiser without a known threshold (Adagrad, Adafactor…).
    """
    if isinstance(optimizer, OptimizerSpec):
        s = optimizer
        return _threshold(
            s.name,
            lr if lr is not None else s.lr,
            momentum=s.momentum,
            beta1=s.betas[0],
            weight_decay=0.0 if s.name in PRECONDITIONED else s.weight_decay,
        )
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise InputError(
            f"stability_threshold needs a torch optimizer or an OptimizerSpec, got "
            f"{reprlib.repr(optimizer)} ({type(optimizer).__name__})"
        )
    g = optimizer.param_groups[0]
    eta = float(lr if lr is not None else g["lr"])
    if type(optimizer) is torch.optim.SGD:
        beta = float(g.get("momentum", 0.0))
        kind = "nesterov" if g.get("nesterov") else ("momentum" if beta > 0 else "sgd")
        return _threshold(
            kind,
            eta,
            momentum=beta,
            dampening=float(g.get("dampening", 0.0)),
            weight_decay=float(g.get("weight_decay", 0.0)),
        )
    if type(optimizer) in (torch.optim.Adam, torch.optim.AdamW):
        return _threshold("adam", eta, beta1=float(g["betas"][0]))
    if type(optimizer) is torch.optim.RMSprop:
        return _threshold("rmsprop", eta, momentum=float(g.get("momentum", 0.0)))
    return None


def is_preconditioned(optimizer: torch.optim.Optimizer | OptimizerSpec) -> bool:
    """Whether the threshold applies to the preconditioned sharpness (Adam, AdamW, RMSprop)."""
    if isinstance(optimizer, OptimizerSpec):
        return optimizer.name in PRECONDITIONED
    return type(optimizer) in (torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop)
