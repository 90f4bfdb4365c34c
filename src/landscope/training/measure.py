"""What the trainer measures every ``measure.every`` steps (DESIGN §4).

The Hessian set is fixed for the run (a seeded subset of the training set), so consecutive
measurements differ only because θ moved; the top-k eigenpairs come from an
:class:`~landscope.curvature.EigenTracker` warm-started from the previous measurement.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from landscope.background import state_copy
from landscope.curvature import (
    CurvatureOperator,
    EigenResult,
    EigenTracker,
    HessianOperator,
    PreconditionedOperator,
    adam_preconditioner,
    layers,
)
from landscope.curvature.modes import kept_flags
from landscope.curvature.params import ParamSpec
from landscope.errors import LandscopeError
from landscope.training.config import MeasureConfig

EVAL_CHUNK = 4096


def hessian_subset(
    X: torch.Tensor, y: torch.Tensor, n: int | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed Hessian set: ``n`` training samples drawn without replacement (seeded)."""
    if n is None or n >= X.shape[0]:
        return X, y
    idx = torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(seed + 7919))[:n]
    idx = idx.sort().values.to(X.device)
    return X[idx], y[idx]


@torch.no_grad()
def evaluate(
    model: nn.Module, loss_fn: Callable, X: torch.Tensor, y: torch.Tensor
) -> tuple[float, float | None]:
    """Mean loss and accuracy (``None`` for regression targets) in eval mode, in chunks."""
    with kept_flags(model):
        model.eval()
        total, correct, n = 0.0, 0, X.shape[0]
        for i in range(0, n, EVAL_CHUNK):
            out = model(X[i : i + EVAL_CHUNK])
            yb = y[i : i + EVAL_CHUNK]
            total += float(loss_fn(out, yb)) * yb.shape[0]
            if not yb.is_floating_point():
                correct += int((out.argmax(-1) == yb).sum())
    return total / n, (correct / n if not y.is_floating_point() else None)


@torch.no_grad()
def predictions(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    """Predicted classes (argmax of the outputs) in eval mode, flags restored."""
    with kept_flags(model):
        model.eval()
        return torch.cat([model(X[i : i + EVAL_CHUNK]).argmax(-1) for i in range(0, X.shape[0], EVAL_CHUNK)])


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x


@dataclass
class Measurement:
    """One measurement: the row fields and the eigenpairs (``None`` when k = 0 or it failed)."""

    row: dict[str, Any]
    eigen: EigenResult | None
    arrays: dict[str, Any]  # params / test_predictions, when the config asks for them


class Measurer:
    """Builds the curvature operator once and measures the model when asked."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable,
        hessian_set: tuple[torch.Tensor, torch.Tensor],
        config: MeasureConfig,
        *,
        batch_size: int | None,
        seed: int,
        test_data: tuple[torch.Tensor, torch.Tensor] | None = None,
        train_data: tuple[torch.Tensor, torch.Tensor] | None = None,
        preconditioned: bool = False,
    ) -> None:
        self.model, self.loss_fn, self.config = model, loss_fn, config
        self.test_data, self.train_data = test_data, train_data
        self.preconditioned = preconditioned
        params: ParamSpec
        if config.last_layers is not None:
            params = layers(model, last=config.last_layers)
        elif config.first_layers is not None:
            params = layers(model, first=config.first_layers)
        else:
            params = list(config.params) if config.params is not None else None
        chunk = config.chunk_size
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        if chunk is None and config.model_mode == "train" and has_bn:
            chunk = batch_size  # BN statistics of the batches the model trains on
        # The Hessian set is fixed and modest, so the linearisation (activations of the whole
        # set) is kept between products: each product is then one backward pass.
        self.op = HessianOperator(
            model,
            loss_fn,
            hessian_set,
            params=params,
            model_mode=config.model_mode,
            chunk_size=chunk,
            cache=config.cache,
        )
        self.tracker = (
            EigenTracker(
                k=min(config.k, self.op.dim),
                tol=config.tol,
                seed=seed,
                check_multiplicity=config.check_multiplicity,
            )
            if config.k > 0
            else None
        )
        self.tracked_preconditioned: bool | None = None

    def state_dict(self) -> dict[str, Any]:
        """The tracker's state (what a resumed run needs to measure identically)."""
        return {
            "tracker": self.tracker.state_dict() if self.tracker else None,
            "tracked_preconditioned": self.tracked_preconditioned,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        if self.tracker is not None and state["tracker"] is not None:
            self.tracker.load_state_dict(state["tracker"])
        self.tracked_preconditioned = state["tracked_preconditioned"]

    def preconditioner(self, optimizer: torch.optim.Optimizer) -> torch.Tensor | None:
        """Adam's diagonal P when measuring P⁻¹H (``None`` before Adam has state, or not asked)."""
        if not self.preconditioned:
            return None
        # no Adam state before the first step: the plain Hessian then, marked as such
        with contextlib.suppress(LandscopeError):
            return adam_preconditioner(optimizer, self.op)
        return None

    def _curvature(self, P: torch.Tensor | None) -> tuple[EigenResult, bool]:
        tracker = self.tracker
        assert tracker is not None  # measure() asks for curvature only with a tracker (k > 0)
        op: CurvatureOperator = self.op if P is None else PreconditionedOperator(self.op, P)
        pre = P is not None
        if self.tracked_preconditioned is not None and pre != self.tracked_preconditioned:
            tracker.reset()  # a different operator: its subspace is not comparable
        self.tracked_preconditioned = pre
        return tracker.update(op), pre

    def measure(
        self, optimizer: torch.optim.Optimizer, threshold: float | None, theta0: torch.Tensor
    ) -> Measurement:
        """Losses, accuracies, gradient, distance from init and the top-k eigenpairs."""
        return self._measure(self.preconditioner(optimizer), threshold, theta0)

    def snapshot(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """What :meth:`measure_snapshot` needs of the live model: copies, so training can go on."""
        P = self.preconditioner(optimizer)
        return {
            "state": state_copy(self.model),
            "P": P,
            "training": {n: m.training for n, m in self.model.named_modules()},
        }

    def _load(self, snapshot: dict[str, Any]) -> None:
        """Put the model at a snapshot's parameters, buffers and training flags."""
        self.model.load_state_dict(snapshot["state"])
        for n, m in self.model.named_modules():
            m.training = snapshot["training"][n]

    def measure_snapshot(
        self, snapshot: dict[str, Any], threshold: float | None, theta0: torch.Tensor
    ) -> Measurement:
        """:meth:`measure` at a :meth:`snapshot` (in a background copy of this measurer)."""
        self._load(snapshot)
        return self._measure(snapshot["P"], threshold, theta0)

    def measure_past(
        self, snapshot: dict[str, Any], threshold: float | None, theta0: torch.Tensor
    ) -> Measurement:
        """:meth:`measure_snapshot` on the live model, which is put back exactly as it was."""
        flags = {n: m.training for n, m in self.model.named_modules()}
        now = {"state": state_copy(self.model), "training": flags}
        try:
            return self.measure_snapshot(snapshot, threshold, theta0)
        finally:
            self._load(now)

    def _measure(self, P: torch.Tensor | None, threshold: float | None, theta0: torch.Tensor) -> Measurement:
        row: dict[str, Any] = {}
        if self.train_data is not None:
            loss, acc = evaluate(self.model, self.loss_fn, *self.train_data)
            row["train_loss_full"] = _finite(loss)
            if acc is not None:
                row["train_acc"] = acc
        if self.test_data is not None and self.config.test:
            loss, acc = evaluate(self.model, self.loss_fn, *self.test_data)
            row["test_loss"] = _finite(loss)
            if acc is not None:
                row["test_acc"] = acc
        theta = torch.cat([p.detach().reshape(-1) for p in self.model.parameters()])
        row["dist_from_init"] = float((theta - theta0.to(theta)).norm())
        arrays: dict[str, Any] = {}
        if self.config.save_params:
            arrays["params"] = theta.float().cpu().numpy()
        if self.config.save_predictions and self.test_data is not None:
            arrays["test_predictions"] = predictions(self.model, self.test_data[0]).cpu().numpy()
        if threshold is not None and not math.isfinite(threshold):
            threshold = None  # η = 0: nothing to compare with (and JSON has no infinity)
        row["threshold"] = threshold
        eigen = None
        if self.tracker is not None:
            try:
                eigen, pre = self._curvature(P)
            except (LandscopeError, RuntimeError) as e:  # e.g. non-finite products near divergence
                row["eigen_error"] = f"{type(e).__name__}: {e}"
                self.tracker.reset()
            if eigen is not None:
                values = [float(v) for v in eigen.values]
                row["eigenvalues"] = values
                row["lambda1"] = values[0]
                row["eos_ratio"] = values[0] / threshold if threshold else None
                row["overlap_prev"] = eigen.overlap
                row["n_matvecs"] = eigen.n_matvecs
                row["converged"] = bool(eigen.converged)
                if self.preconditioned:
                    row["preconditioned"] = pre
                g = self.op.gradient().to(torch.float64)
                gn = float(g.norm())
                row["full_grad_norm"] = gn
                if gn > 0 and not pre:
                    assert eigen.vectors is not None  # EigenTracker.update keeps the vectors
                    coords = eigen.vectors.to(g).T @ g
                    row["grad_topk_fraction"] = float(coords.pow(2).sum()) / gn**2
        return Measurement(row, eigen, arrays)
