"""Short training runs on a copy of a model: what the LR finder's probes and the range test share.

Both train a few steps at a given learning rate and ask whether the loss came down, blew up or
got stuck. They take every data form the curvature operators take: an ``(X, y)`` pair of tensors
(full batch, or seeded minibatches of ``batch_size``), or a re-iterable of batches of any
structure (a ``DataLoader``, a list of dicts), cycled; the loss is ``loss_fn(outputs, targets)``,
``batch_loss(model, batch)`` or a Hugging Face model's own ``.loss``.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from landscope.checks import is_tensor_pair
from landscope.curvature.batch_loss import BatchLoss, call_model, outputs_of
from landscope.curvature.batches import Batch, batch_size, is_pair
from landscope.curvature.modes import cuda_devices, model_mode
from landscope.errors import InputError
from landscope.training.config import OptimizerSpec
from landscope.training.measure import hessian_subset
from landscope.training.optim import is_preconditioned, make_optimizer, stability_threshold

OPTIMIZERS = ("gd", "sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop")
BatchWeight = Callable[[Batch], float]


@dataclass(frozen=True)
class OptimizerChoice:
    """An optimiser by name and hyper-parameters; :meth:`build` makes it for a learning rate.

    ``momentum`` is PyTorch's β (SGD heavy-ball / Nesterov, RMSprop's momentum); ``betas`` Adam's
    (β₁, β₂); ``alpha`` RMSprop's smoothing constant (PyTorch's 0.99).
    """

    name: str
    momentum: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    alpha: float = 0.99

    def build(self, params: Iterable[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        if self.name == "rmsprop":
            return torch.optim.RMSprop(
                params,
                lr=lr,
                alpha=self.alpha,
                eps=self.eps,
                momentum=self.momentum,
                weight_decay=self.weight_decay,
            )
        name = "sgd" if self.name == "gd" else self.name
        spec = OptimizerSpec(
            name=name,
            lr=1.0,
            momentum=self.momentum or 0.9,
            betas=self.betas,
            eps=self.eps,
            weight_decay=self.weight_decay,
        )
        opt = make_optimizer(params, spec)
        for g in opt.param_groups:  # η = 0 is allowed here: it fills Adam's state in place
            g["lr"] = float(lr)
        return opt

    @property
    def preconditioned(self) -> bool:
        """Whether the threshold is on the preconditioned sharpness λ₁(P⁻¹H)."""
        return is_preconditioned(self.build([nn.Parameter(torch.zeros(1))], 1.0))

    def threshold_constant(self) -> float:
        """``a`` in threshold = a/η (2 for SGD, 2 + 2β heavy-ball, 38 for Adam at β₁ = 0.9).

        Without weight decay: coupled L2 decay ``wd`` adds ``wd`` to the curvature the threshold
        applies to (η_thr = a / (λ₁ + wd)).
        """
        bare = OptimizerChoice(self.name, self.momentum, self.betas, self.eps, 0.0, self.alpha)
        a = stability_threshold(bare.build([nn.Parameter(torch.zeros(1))], 1.0))
        assert a is not None  # every name in OPTIMIZERS has one
        return float(a)


def optimizer_choice(
    optimizer: object,
    momentum: object,
    betas: object = (0.9, 0.999),
    eps: object = 1e-8,
    weight_decay: object = 0.0,
) -> OptimizerChoice:
    """Check the optimiser arguments; ``"sgd"`` with momentum > 0 becomes ``"momentum"``."""
    if optimizer not in OPTIMIZERS:
        raise InputError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
        raise InputError(f"momentum must be in [0, 1), got {momentum!r}")
    if optimizer == "nesterov" and momentum == 0:
        raise InputError("optimizer 'nesterov' needs momentum > 0, got 0")
    if optimizer == "momentum" and momentum == 0:
        raise InputError("optimizer 'momentum' needs momentum > 0, got 0 (use 'sgd')")
    if optimizer in ("adam", "adamw") and momentum != 0:
        raise InputError(
            f"momentum={momentum!r} is for SGD, Nesterov and RMSprop; Adam's first-moment decay is betas[0]"
        )
    if not (
        isinstance(betas, (tuple, list))
        and len(betas) == 2
        and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas)
    ):
        raise InputError(f"betas must be two numbers in [0, 1), got {betas!r}")
    eps_, weight_decay_ = _non_negative("eps", eps), _non_negative("weight_decay", weight_decay)
    name = str(optimizer)
    if name in ("gd", "sgd") and momentum > 0:
        name = "momentum"
    if name == "gd":
        name = "sgd"
    return OptimizerChoice(
        name=name,
        momentum=float(momentum),
        betas=(float(betas[0]), float(betas[1])),
        eps=eps_,
        weight_decay=weight_decay_,
    )


def _non_negative(key: str, v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
        raise InputError(f"{key} must be a non-negative number, got {v!r}")
    return float(v)


class Batches:
    """The batches short runs train on: the same sequence for every run with the same seed.

    ``data`` is an ``(X, y)`` pair of tensors (full batch when ``batch_size`` is ``None``, else
    seeded minibatches drawn epoch by epoch without replacement) or a re-iterable of batches,
    cycled.
    """

    def __init__(self, data: object, batch_size_: int | None, seed: int) -> None:
        self.seed = seed
        self.batch_size = batch_size_
        pair = data if is_tensor_pair(data) else None
        self.tensors = pair is not None
        if pair is not None:
            X, y = pair
            if len(X) != len(y) or len(X) == 0:
                raise InputError(
                    f"data: X has {len(X)} samples and y {len(y)}; they need the same positive number"
                )
            n = len(X)
            if batch_size_ is not None and not (
                isinstance(batch_size_, int) and not isinstance(batch_size_, bool) and 1 <= batch_size_ <= n
            ):
                raise InputError(
                    f"batch_size must be None (full batch) or an integer in [1, {n}], got {batch_size_!r}"
                )
            self.data: Any = (X, y)
        else:
            if isinstance(data, (str, bytes, torch.Tensor)) or not isinstance(data, Iterable):
                raise InputError(
                    f"data must be an (X, y) pair of tensors or a re-iterable of batches "
                    f"(a DataLoader, a list), got {type(data).__name__}"
                )
            if batch_size_ is not None:
                raise InputError(
                    "batch_size is for (X, y) tensors; with an iterable of batches the batches are given"
                )
            with torch.random.fork_rng():  # a DataLoader's iterator draws a seed from the RNG
                it = iter(data)
                if it is data:
                    raise InputError(
                        "data is an iterator, which a second run could not read again: "
                        "pass a re-iterable (a list, a DataLoader)"
                    )
                first = next(it, None)
            if first is None:
                raise InputError("data yields no batches")
            self.data = data
            self.first_size = batch_size(first)

    def __iter__(self) -> Iterator[Batch]:
        if not self.tensors:
            return itertools.chain.from_iterable(itertools.repeat(self.data))
        X, y = self.data
        if self.batch_size is None:
            return itertools.repeat((X, y))
        return self._minibatches(X, y, self.batch_size)

    def _minibatches(self, X: torch.Tensor, y: torch.Tensor, size: int) -> Iterator[Batch]:
        gen = torch.Generator().manual_seed(self.seed)
        while True:
            perm = torch.randperm(len(X), generator=gen).to(X.device)
            for s in range(0, len(X) - size + 1, size):
                idx = perm[s : s + size]
                yield X[idx], y[idx]

    def training_batch_samples(self) -> int:
        """What one training step sees: 256 samples of a full batch, else one batch.

        The default size of the evaluation set: measuring λ1 on it costs a few training steps, as
        the :class:`~landscope.monitor.SharpnessMonitor` does on one batch.
        """
        if self.tensors:
            return self.batch_size if self.batch_size is not None else min(256, len(self.data[0]))
        return self.first_size

    def evaluation_set(self, samples: int | None) -> list[Batch]:
        """Fixed batches the runs are judged on (and the Hessian is measured on).

        For tensors, ``samples`` training samples drawn without replacement (seeded), in chunks of
        ``batch_size``; for batches, the first batches holding ``samples`` samples (at least one;
        ``None``: every batch). A list ``[X, y]`` of two tensors is one ``(X, y)`` pair, as for
        the curvature operators.
        """
        if self.tensors:
            X, y = hessian_subset(self.data[0], self.data[1], samples, self.seed)
            step = self.batch_size or len(X)
            return [(X[s : s + step], y[s : s + step]) for s in range(0, len(X), step)]
        out, seen = [], 0
        for b in self.data:
            out.append(b)
            seen += batch_size(b)
            if samples is not None and seen >= samples:
                break
        return out


@contextlib.contextmanager
def working_copy(model: nn.Module, seed: int) -> Iterator[nn.Module]:
    """A copy of ``model`` without gradients, inside a forked, seeded RNG: short runs' sandbox.

    The caller's model, its gradients and BatchNorm statistics, and the global RNG (CPU, and the
    model's CUDA device) are left as they were.
    """
    with torch.random.fork_rng(devices=cuda_devices(model)):
        torch.manual_seed(seed)
        work = copy.deepcopy(model)
        for p in work.parameters():
            p.grad = None
        yield work


@torch.no_grad()
def mean_loss(
    model: nn.Module, batch_loss: BatchLoss, batches: list[Batch], batch_weight: BatchWeight | None = None
) -> float:
    """Weighted mean loss over ``batches`` as trained (BatchNorm batch statistics, dropout off)."""
    total = weight = 0.0
    with model_mode(model, "train"):
        for b in batches:
            w = float(batch_weight(b)) if batch_weight is not None else float(batch_size(b))
            total += float(batch_loss(model, b)) * w
            weight += w
    return total / weight if weight > 0 else math.nan


@torch.no_grad()
def outputs_collapsed(model: nn.Module, batches: list[Batch], custom_loss: bool) -> bool | None:
    """Whether the model's outputs no longer depend on its inputs (a dead network).

    A ReLU network that a large step killed outputs its last bias for every input, whatever its
    loss. ``None`` when the outputs cannot be read (a custom ``batch_loss``) or a batch has one
    sample.
    """
    if custom_loss:
        return None
    b = batches[0]
    with model_mode(model, "train"):
        out = call_model(model, b[0]) if is_pair(b) else model(**b)
    try:
        out = outputs_of(out)
    except Exception:  # an output we cannot read is not evidence of death
        return None
    return collapsed(out)


def collapsed(out: torch.Tensor) -> bool | None:
    """Whether a batch's outputs are the same for every sample (to 1e-6 of their size).

    ``None`` for a scalar, a one-sample batch or non-finite outputs (no verdict).
    """
    if out.dim() == 0 or out.shape[0] < 2 or not torch.isfinite(out).all():
        return None
    x = out.double()
    return bool(x.std(dim=0).max() <= 1e-6 * (x.abs().max() + 1e-12))


def own_and_mean_output_loss(loss_fn: Callable, out: torch.Tensor, y: Any) -> tuple[float, float]:
    """The loss of ``out`` and of its mean over the batch: a constant prediction's, for "chance"."""
    mean = out.mean(dim=0, keepdim=True).expand_as(out)
    return float(loss_fn(out, y)), float(loss_fn(mean, y))


CHANCE_MARGIN = 0.02


def at_chance(
    model: nn.Module,
    loss_fn: Callable | None,
    batches: list[Batch],
    started: float | None = None,
    margin: float = CHANCE_MARGIN,
) -> bool | None:
    """Whether the model has learned nothing beyond a constant prediction (its mean output).

    A network that a large step has stunned can sit at the loss of predicting the class
    frequencies, below its random initial loss, with outputs that still vary: "below the initial
    loss" alone would call it trained. Compared at fixed batches: the model's loss against the
    loss of its own outputs averaged over each batch (:func:`chance_ratio`); at chance when it is
    not ``margin`` below. That means "learned nothing" only where the network *started* at
    chance (``started``, its ratio at initialisation, within ``margin`` of 1: classifiers with
    small random logits, 0.999–1.004 on our CE workloads). An MSE network starts above it (1.07–2.2
    on the round-1 models): reaching its mean output there is the first thing it learns, and on
    the BatchNorm MLP a healthy 10-step probe ends there. ``None`` without a
    ``loss_fn(outputs, targets)`` on ``(X, y)`` batches.
    """
    ratio = chance_ratio(model, loss_fn, batches)
    if ratio is None or (started is not None and started > 1.0 + margin):
        return None
    return ratio >= 1.0 - margin


@torch.no_grad()
def chance_ratio(model: nn.Module, loss_fn: Callable | None, batches: list[Batch]) -> float | None:
    """The model's loss over that of its mean output on ``batches`` (``None`` if not computable)."""
    if loss_fn is None or not all(is_pair(b) for b in batches):
        return None
    own = const = 0.0
    with model_mode(model, "train"):
        for X, y in batches:
            try:
                out = outputs_of(call_model(model, X))
            except Exception:
                return None
            if out.dim() == 0 or out.shape[0] < 2:
                return None
            a, b = own_and_mean_output_loss(loss_fn, out, y)
            own, const = own + a * len(out), const + b * len(out)
    if not (math.isfinite(own) and math.isfinite(const)) or const <= 0:
        return None
    return own / const


@dataclass(frozen=True)
class RunOutcome:
    """One short run: the per-step training losses and how it ended."""

    losses: tuple[float, ...]  # the loss of each step's batch, before its update
    diverged: bool  # NaN/inf, or above ``diverge_factor`` × the first loss
    steps: int


def train_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch_loss: BatchLoss,
    batches: Iterator[Batch],
    steps: int,
    diverge_factor: float,
    lr_at: Callable[[int], float] | None = None,
    stop: Callable[[list[float]], bool] | None = None,
) -> RunOutcome:
    """Train ``steps`` steps (``lr_at(t)`` sets the learning rate of step ``t`` when given)."""
    losses: list[float] = []
    model.train()
    for t in range(steps):
        if lr_at is not None:
            for g in optimizer.param_groups:
                g["lr"] = lr_at(t)
        batch = next(batches)
        optimizer.zero_grad(set_to_none=True)
        loss = batch_loss(model, batch)
        value = float(loss.detach())
        losses.append(value)
        if not math.isfinite(value) or (losses[0] > 0 and value > diverge_factor * losses[0]):
            return RunOutcome(tuple(losses), True, t)
        loss.backward()
        optimizer.step()
        if stop is not None and stop(losses):
            return RunOutcome(tuple(losses), False, t + 1)
    return RunOutcome(tuple(losses), False, steps)
