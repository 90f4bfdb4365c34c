"""The series an analysis reads from a run: losses per step and curvature per measurement.

Analyses take a :class:`~landscope.training.Run` or a :class:`Trace` built from arrays, so they can be
tested on constructed series and applied to any run, including one recorded outside landscope.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from landscope.errors import InputError
from landscope.training import Run


@dataclass(frozen=True)
class Trace:
    """Loss per step and λ₁ / threshold per measurement step (all 1-D arrays).

    ``loss_steps``/``loss`` drive instability detection; ``lambda_steps``, ``lambda1`` and
    ``threshold`` (NaN where unknown) place the curvature against the stability threshold.
    """

    loss_steps: np.ndarray
    loss: np.ndarray
    lambda_steps: np.ndarray
    lambda1: np.ndarray
    threshold: np.ndarray

    def __post_init__(self) -> None:
        for a, b, what in (
            (self.loss_steps, self.loss, "loss"),
            (self.lambda_steps, self.lambda1, "lambda1"),
            (self.lambda_steps, self.threshold, "threshold"),
        ):
            if np.shape(a) != np.shape(b):
                raise InputError(f"Trace: {what} has shape {np.shape(b)} but its steps {np.shape(a)}")
        if np.any(np.diff(self.loss_steps) <= 0) or np.any(np.diff(self.lambda_steps) <= 0):
            raise InputError("Trace: steps must be strictly increasing")

    @classmethod
    def from_arrays(
        cls,
        loss: np.ndarray,
        loss_steps: np.ndarray | None = None,
        lambda1: np.ndarray | None = None,
        lambda_steps: np.ndarray | None = None,
        threshold: float | np.ndarray | None = None,
    ) -> Trace:
        """A trace from plain arrays (steps default to 0, 1, …; a scalar threshold is broadcast)."""
        loss = np.asarray(loss, dtype=float)
        loss_steps = np.arange(len(loss)) if loss_steps is None else np.asarray(loss_steps)
        lam = np.asarray([] if lambda1 is None else lambda1, dtype=float)
        lam_steps = np.arange(len(lam)) if lambda_steps is None else np.asarray(lambda_steps)
        thr = (
            np.full(len(lam), np.nan)
            if threshold is None
            else np.broadcast_to(np.asarray(threshold, dtype=float), lam.shape).copy()
        )
        return cls(loss_steps, loss, lam_steps, lam, thr)


def loss_key(run: Run) -> str:
    """The loss to detect instabilities on: every step's for full batch, else the full-set one.

    A minibatch loss fluctuates by more than δ from batch to batch, so for SGD the full
    training loss recorded at each measurement is used instead.
    """
    cfg = run.config
    full_batch = cfg is None or cfg.train.batch_size is None
    return "train_loss" if full_batch else "train_loss_full"


def trace(run: Run | Trace, key: str | None = None) -> Trace:
    """The :class:`Trace` of a run (``key``: which loss; default :func:`loss_key`)."""
    if isinstance(run, Trace):
        return run
    if not isinstance(run, Run):
        raise InputError(f"expected a Run (ls.load_run) or a Trace, got {type(run).__name__}")
    key = key or loss_key(run)
    steps, loss = run.series(key)
    if len(steps) == 0:
        raise InputError(f"run {run.path} has no {key!r} values")
    meas = [r for r in run.metrics if r.get("lambda1") is not None]
    lam_steps, lam = run.series("lambda1", meas)
    _, thr = run.series("threshold", meas)
    return Trace(steps, loss, lam_steps, lam, thr)
