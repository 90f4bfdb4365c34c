"""``lr_range_test``: the classic learning-rate range test, as a first-class baseline.

Smith (2017) and fastai / torch-lr-finder: train on a copy of the model while the learning rate
grows exponentially from ``min_lr`` to ``max_lr``, one batch per step; smooth the loss with a
bias-corrected exponential average; stop once it exceeds ``diverge_threshold`` × its best value.
The usual suggestions are read off the smoothed curve:

* ``"steepest"``: where the smoothed loss falls fastest per decade of η (torch-lr-finder's
  default);
* ``"min/10"``: a tenth of the η at the smallest smoothed loss (fastai's first rule).

It needs no curvature, and it costs one short run. It is the baseline
:func:`~landscope.monitor.find_max_stable_lr` is measured against (``benchmarks/lr_finder.py``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from landscope.curvature.batch_loss import BatchLoss, LossFn, make_batch_loss
from landscope.errors import InputError
from landscope.monitor.short_runs import Batches, optimizer_choice, train_steps, working_copy

SUGGESTIONS = ("steepest", "min/10")


@dataclass(frozen=True)
class RangeTestResult:
    """The range test's curve and suggestions; ``suggestion`` is the one asked for."""

    lrs: tuple[float, ...]
    losses: tuple[float, ...]  # the raw loss of each step's batch
    smoothed: tuple[float, ...]  # bias-corrected exponential average of ``losses``
    suggestions: dict[str, float | None] = field(default_factory=dict)
    rule: str = "steepest"
    optimizer: str = "sgd"
    diverged: bool = False  # stopped early because the loss blew up
    n_train_steps: int = 0
    seconds: float = 0.0

    @property
    def suggestion(self) -> float | None:
        """The suggested learning rate of ``rule`` (``None`` when the curve is too short)."""
        return self.suggestions.get(self.rule)

    def apply(self, optimizer: torch.optim.Optimizer, lr: float | None = None) -> float:
        """Set every parameter group's learning rate to the suggestion (or ``lr``); return it."""
        return apply_lr(optimizer, self.suggestion if lr is None else lr)

    def as_dict(self) -> dict[str, Any]:
        return {
            "lrs": list(self.lrs),
            "losses": list(self.losses),
            "smoothed": list(self.smoothed),
            "suggestions": dict(self.suggestions),
            "rule": self.rule,
            "optimizer": self.optimizer,
            "diverged": self.diverged,
            "n_train_steps": self.n_train_steps,
            "seconds": self.seconds,
        }

    def plot(self, path: str | Path, ax: Any = None) -> Path | None:
        """The smoothed loss against η (log axis) with the suggestions; PNG at ``path``."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        own = ax is None
        if own:
            fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(self.lrs, self.losses, color="0.75", lw=0.8, label="batch loss")
        ax.plot(self.lrs, self.smoothed, color="k", label="smoothed")
        for (name, lr), colour in zip(self.suggestions.items(), ("tab:blue", "tab:purple"), strict=False):
            if lr is not None:
                ax.axvline(lr, color=colour, ls="--", label=f"{name}: {lr:.3g}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate η")
        ax.set_ylabel("training loss")
        finite = [v for v in self.smoothed if math.isfinite(v)]
        if finite:
            ax.set_ylim(min(finite) * 0.9, min(max(finite), 4 * min(finite)) * 1.1)
        ax.legend(fontsize=8)
        if not own:
            return None
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def apply_lr(optimizer: torch.optim.Optimizer, lr: float | None) -> float:
    """Set every parameter group's ``lr``; the value set."""
    if not hasattr(optimizer, "param_groups"):
        raise InputError(f"apply needs a torch optimizer, got {type(optimizer).__name__}")
    if lr is None or not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise InputError(f"no usable learning rate to apply: {lr!r}")
    for g in optimizer.param_groups:
        g["lr"] = float(lr)
        if "initial_lr" in g:  # a scheduler created before keeps its base in initial_lr
            g["initial_lr"] = float(lr)
    return float(lr)


def suggest(
    lrs: np.ndarray, smoothed: np.ndarray, skip_start: int = 10, skip_end: int = 5
) -> dict[str, float | None]:
    """The steepest-descent and min/10 suggestions of a smoothed range-test curve."""
    out: dict[str, float | None] = {"steepest": None, "min/10": None}
    ok = np.isfinite(smoothed)
    if ok.sum() >= 2:
        i_min = int(np.nanargmin(np.where(ok, smoothed, np.nan)))
        out["min/10"] = float(lrs[i_min] / 10)
    lo, hi = skip_start, len(lrs) - skip_end
    if hi - lo >= 3 and ok[lo:hi].all():
        slope = np.gradient(smoothed[lo:hi], np.log(lrs[lo:hi]))
        out["steepest"] = float(lrs[lo + int(np.argmin(slope))])
    return out


def lr_range_test(
    model: nn.Module,
    loss_fn: LossFn | None = None,
    data: object = None,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    *,
    batch_size: int | None = None,
    batch_loss: BatchLoss | None = None,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    num_steps: int = 100,
    smooth: float = 0.05,
    diverge_threshold: float = 5.0,
    rule: str = "steepest",
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> RangeTestResult:
    """The exponential LR range test on a copy of ``model`` (see the module docstring).

    Args:
        model: the model at its initialisation (copied: it, its gradients, BatchNorm statistics
            and the global RNG are untouched).
        loss_fn: ``loss_fn(outputs, targets)`` for ``(X, y)`` batches; or ``batch_loss``; or
            neither, for dict batches of a model that returns ``.loss`` (Hugging Face).
        data: ``(X, y)`` tensors or a re-iterable of batches of any structure.
        optimizer: ``"sgd"``, ``"momentum"``, ``"nesterov"``, ``"adam"``, ``"adamw"``,
            ``"rmsprop"`` (``"gd"`` = full-batch ``"sgd"``).
        momentum: β, PyTorch's form (SGD, Nesterov, RMSprop).
        batch_size: for ``(X, y)`` tensors, the minibatch size (``None``: full batch).
        batch_loss: ``f(model, batch)`` returning the batch's mean loss.
        min_lr: the first learning rate of the exponential schedule (one batch per step).
        max_lr: the last.
        num_steps: steps from ``min_lr`` to ``max_lr``.
        betas: Adam's (β₁, β₂); RMSprop's smoothing is PyTorch's 0.99.
        eps: the adaptive optimisers' ε.
        weight_decay: the optimiser's weight decay.
        smooth: weight of the newest loss in the exponential average (torch-lr-finder's 0.05).
        diverge_threshold: stop when the smoothed loss exceeds this × its best value.
        rule: which suggestion ``.suggestion`` returns, ``"steepest"`` or ``"min/10"``.
        seed: seeds the batches and dropout.
    """
    choice = optimizer_choice(optimizer, momentum, betas, eps, weight_decay)
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for key, v in (("min_lr", min_lr), ("max_lr", max_lr)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
            raise InputError(f"{key} must be a positive number, got {v!r}")
    if not min_lr < max_lr:
        raise InputError(f"min_lr must be below max_lr, got {min_lr!r} and {max_lr!r}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 2:
        raise InputError(f"num_steps must be an integer ≥ 2, got {num_steps!r}")
    if isinstance(smooth, bool) or not isinstance(smooth, (int, float)) or not 0 < smooth <= 1:
        raise InputError(f"smooth must be in (0, 1], got {smooth!r}")
    if not isinstance(diverge_threshold, (int, float)) or not diverge_threshold > 1:
        raise InputError(f"diverge_threshold must be a number > 1, got {diverge_threshold!r}")
    if rule not in SUGGESTIONS:
        raise InputError(f"rule must be one of {SUGGESTIONS}, got {rule!r}")
    f = make_batch_loss(loss_fn, batch_loss)
    batches = Batches(data, batch_size, seed)
    tic = time.perf_counter()
    with working_copy(model, seed) as work:
        opt = choice.build(work.parameters(), min_lr)
        ratio = max_lr / min_lr

        def lr_at(t: int) -> float:
            return min_lr * ratio ** (t / (num_steps - 1))

        avg, best, smoothed = 0.0, math.inf, []

        def stop(losses: list[float]) -> bool:
            nonlocal avg, best
            t = len(losses)
            avg = smooth * losses[-1] + (1 - smooth) * avg
            value = avg / (1 - (1 - smooth) ** t)
            smoothed.append(value)
            best = min(best, value)
            return value > diverge_threshold * best

        run = train_steps(work, opt, f, iter(batches), num_steps, math.inf, lr_at=lr_at, stop=stop)
    n = len(run.losses)
    losses = run.losses
    if len(smoothed) < n:  # the last step's loss was not finite
        smoothed.append(math.inf)
    lrs = tuple(lr_at(t) for t in range(n))
    return RangeTestResult(
        lrs=lrs,
        losses=losses,
        smoothed=tuple(smoothed),
        suggestions=suggest(np.array(lrs), np.array(smoothed)),
        rule=rule,
        optimizer=choice.name,
        diverged=run.diverged or run.steps < num_steps,
        n_train_steps=n,
        seconds=time.perf_counter() - tic,
    )
