"""``SharpnessMonitor``: is the learning rate about to blow up? Two lines in any PyTorch loop.

The monitor measures the top Hessian eigenvalue λ1 on a fixed batch every ``every`` optimiser
steps and compares it with the stability threshold of the optimiser at its current η and momentum
(DESIGN §4: 2/η for SGD, (2+2β)/η heavy-ball, Adam's preconditioned 38/η at β₁ = 0.9). Above the
threshold the linearised dynamics along the top eigenvector diverge: the loss spikes unless the
curvature falls back (edge of stability, Cohen et al. 2021; [W&R]). The monitor reports that as a
status and never touches the model, its gradients, BatchNorm statistics, training flags or the
user's RNG (the curvature operator is pure; the eigensolver draws from its own generator).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

from landscope.background import BackgroundActor, state_copy
from landscope.curvature import EigenTracker, HessianOperator, PreconditionedOperator, adam_preconditioner
from landscope.curvature.batches import is_pair
from landscope.errors import InputError, LandscopeError
from landscope.monitor.sinks import json_safe, make_sinks
from landscope.train import is_preconditioned, stability_threshold

Status = Literal["stable", "edge", "unstable"]
STATUSES: tuple[str, ...] = ("stable", "edge", "unstable")

logger = logging.getLogger("landscope.monitor")


@dataclass(frozen=True)
class MonitorRecord:
    """One measurement of the monitor.

    ``lambda1`` is the top eigenvalue (of P⁻¹H for Adam/AdamW, ``preconditioned=True``),
    ``threshold`` the optimiser's at ``lr`` (``inf`` at η = 0), ``ratio`` = λ1 / threshold,
    ``eigenvalues`` the top-k descending, ``step`` the number of ``mon.step`` calls so far (= the
    optimiser steps taken), ``seconds`` the wall time the measurement took.
    """

    step: int
    lambda1: float
    threshold: float
    ratio: float
    status: str
    eigenvalues: tuple[float, ...]
    lr: float
    preconditioned: bool
    n_matvecs: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (non-finite numbers as ``None``)."""
        return {k: json_safe(v) for k, v in asdict(self).items()}


def classify(lambda1: float, threshold: float, edge: float) -> str:
    """``unstable`` above the threshold, ``edge`` above ``edge`` × it, else ``stable``.

    A non-finite λ1 (NaN parameters after a blow-up) is ``unstable``.
    """
    if not math.isfinite(lambda1):
        return "unstable"
    if lambda1 > threshold:
        return "unstable"
    if lambda1 > edge * threshold:
        return "edge"
    return "stable"


def unwrap_optimizer(optimizer: object) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimiser inside wrappers (Lightning's, Accelerate's ``.optimizer``)."""
    seen = 0
    while type(optimizer) not in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW) and seen < 5 \
            and hasattr(optimizer, "optimizer") and hasattr(optimizer.optimizer, "param_groups"):
        optimizer = optimizer.optimizer
        seen += 1
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise InputError(f"mon.step needs the torch optimizer of the loop, got {type(optimizer).__name__}")
    return optimizer


def check_options(every: object, k: object, tol: object, edge: object, name: object) -> None:
    """The monitor's scalar options, checked before any model is needed (the adapters call it)."""
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise InputError(f"every must be a positive integer (optimizer steps between measurements), "
                         f"got {every!r}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise InputError(f"k must be a positive integer (top eigenvalues to track), got {k!r}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 < tol < 1:
        raise InputError(f"tol must be in (0, 1) (relative residual of the eigensolver), got {tol!r}")
    if isinstance(edge, bool) or not isinstance(edge, (int, float)) or not 0 < edge < 1:
        raise InputError(f"edge must be in (0, 1) (fraction of the threshold that counts as the edge), "
                         f"got {edge!r}")
    if not isinstance(name, str) or not name:
        raise InputError(f"name must be a non-empty string, got {name!r}")


def check_batch(batch: object) -> Any:
    """``batch``: an ``(X, y)`` pair with as many samples each, or a dict batch.

    Other structures (tuple or dict parts) pass to the operator, which checks them.
    """
    if isinstance(batch, Mapping) or (is_pair(batch) and not all(isinstance(t, torch.Tensor)
                                                                 for t in batch)):
        return batch
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2
            and all(isinstance(t, torch.Tensor) for t in batch)):
        what = type(batch).__name__ + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        raise InputError(f"batch must be a tuple (X, y) or a dict batch (a fixed batch to measure on), "
                         f"got {what}")
    X, y = batch
    if X.dim() == 0 or y.dim() == 0 or len(X) != len(y) or len(X) == 0:
        raise InputError(f"batch: X has shape {tuple(X.shape)} and y {tuple(y.shape)}; they need the same "
                         f"positive number of samples along the first axis")
    return X, y


class _Probe:
    """λ1 of a model on a fixed batch, warm-started: the part of the monitor that may run elsewhere.

    In the foreground it reads the live model; in a background worker it holds a copy of the
    model and is given a snapshot of the parameters (and buffers) with each request.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable | None, batch: Any, k: int, tol: float,
                 batch_loss: Callable | None = None, batch_weight: Callable | None = None) -> None:
        self.model = model
        # "train": the function the optimiser moves (BN with batch statistics); dropout stays off.
        self.op = HessianOperator(model, loss_fn, batch, model_mode="train", cache=True,
                                  batch_loss=batch_loss, batch_weight=batch_weight)
        if k > self.op.dim:
            raise InputError(f"k={k} exceeds the number of parameters {self.op.dim}")
        self.tracker = EigenTracker(k=k, tol=float(tol), seed=0)
        self.preconditioned: bool | None = None

    def measure(self, P: torch.Tensor | None) -> tuple[tuple[float, ...], int, float]:
        """Top-k eigenvalues (of P⁻¹H when ``P`` is given), products taken, seconds."""
        tic = time.perf_counter()
        pre = P is not None
        op = PreconditionedOperator(self.op, P) if pre else self.op
        if self.preconditioned is not None and pre != self.preconditioned:
            self.tracker.reset()  # another operator: the last subspace is no warm start
        self.preconditioned = pre
        n_matvecs = 0
        try:
            res = self.tracker.update(op)
            values = tuple(float(v) for v in res.values)
            n_matvecs = res.n_matvecs
        except (LandscopeError, RuntimeError) as e:
            if self._finite_loss():
                raise  # a real error, not the blow-up this monitor exists to report
            logger.debug("no eigenvalues (non-finite loss): %s", e)
            self.tracker.reset()
            values = (math.nan,)
        finally:
            self.op.clear_cache()  # the graph holds the batch's activations until the next measurement
        return values, n_matvecs, time.perf_counter() - tic

    def measure_snapshot(self, state: dict[str, torch.Tensor], P: torch.Tensor | None
                         ) -> tuple[tuple[float, ...], int, float]:
        """:meth:`measure` at the parameters and buffers ``state`` (a background copy's request)."""
        self.model.load_state_dict(state)
        return self.measure(P)

    def _finite_loss(self) -> bool:
        """Whether the loss on the batch is finite (else the model has blown up)."""
        if not all(bool(torch.isfinite(p).all()) for p in self.op.parameters()):
            return False
        try:
            return math.isfinite(self.op.loss())
        except (LandscopeError, RuntimeError):
            return False
        finally:
            self.op.clear_cache()


class SharpnessMonitor:
    """Measure λ1 every ``every`` optimiser steps and say whether η is stable, at the edge, or not.

    ``mon = SharpnessMonitor(model, loss_fn, (X, y))``; in the loop, after ``optimizer.step()``:
    ``status = mon.step(optimizer)``. The first call and every ``every``-th call measure; the
    others return the last status at no cost.

    Args:
        model: the ``nn.Module`` being trained (read, never modified).
        loss_fn: ``loss_fn(model(X), y)``, mean-reduced; ``None`` for a dict batch whose model
            computes ``.loss`` itself (Hugging Face with ``labels``), or with ``batch_loss``.
        batch: a fixed batch the Hessian is measured on, e.g. one training batch: ``(X, y)`` or a
            dict batch (any structure :class:`~landscope.HessianOperator` takes). Use the
            training batch size: the curvature of smaller batches is larger, of the full set
            smaller. BatchNorm uses the statistics of this batch (the function being trained);
            dropout is off.
        every: optimiser steps between measurements.
        k: top eigenvalues tracked (the status uses λ1).
        tol: relative residual of each (warm-started) Lanczos solve. λ1's error is about tol²·λ1,
            so 1e-3 is far more than a status needs; 1e-2 saves products (benchmarks/
            monitor_overhead.py).
        edge: status ``edge`` when λ1 > edge × threshold.
        sinks: a TensorBoard ``SummaryWriter``, a ``.csv``/``.jsonl`` path, a callable(record), or
            a tuple of them; each gets every :class:`MonitorRecord`.
        name: prefix of TensorBoard tags and of the log messages.
        background: measure a snapshot of the parameters in a worker process while the loop goes
            on (one more core busy; ``benchmarks/monitor_overhead.py``). The status then lags by
            the time a measurement takes; :meth:`flush` waits for it, :meth:`close` (or ``with``)
            stops the worker. ``loss_fn`` / ``batch_loss`` must then be picklable (a module-level
            function, not a lambda).
        batch_loss: ``f(model, batch)`` → the batch's mean loss, instead of ``loss_fn``.
        batch_weight: ``g(batch)`` → the batch's weight (see :class:`~landscope.HessianOperator`).

    Attributes:
        history: every :class:`MonitorRecord`, in order.
        status: the last status (``None`` before the first measurement).
    """

    def __init__(self, model: nn.Module, loss_fn: Callable | None = None, batch: Any = None,
                 every: int = 50, k: int = 1, tol: float = 1e-3, edge: float = 0.9,
                 sinks: object = (), name: str = "sharpness", background: bool = False, *,
                 batch_loss: Callable | None = None, batch_weight: Callable | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if loss_fn is not None and not callable(loss_fn):
            raise InputError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        check_options(every, k, tol, edge, name)
        batch = check_batch(batch)
        self.model, self.loss_fn = model, loss_fn
        self.every, self.k, self.tol, self.edge, self.name = every, k, float(tol), float(edge), name
        self.probe = _Probe(model, loss_fn, batch, k, float(tol), batch_loss, batch_weight)
        self.op, self.tracker = self.probe.op, self.probe.tracker
        self.background = bool(background)
        self._actor: BackgroundActor | None = None
        self.sinks = make_sinks(sinks, name)
        self.history: list[MonitorRecord] = []
        self.status: str | None = None
        self.n_steps = 0

    def step(self, optimizer: torch.optim.Optimizer) -> str:
        """Count one optimiser step; measure if due; return the status (call after ``optimizer.step()``).

        In background mode the status is that of the latest measurement that has come back.
        """
        self.n_steps += 1
        if self.n_steps == 1 or self.n_steps % self.every == 0:
            self._submit(optimizer)
        elif self._actor is not None and self._actor.n_pending:
            for tag, result in self._actor.ready():
                self._record(tag, result)
        return self.status  # type: ignore[return-value]

    def measure(self, optimizer: torch.optim.Optimizer) -> MonitorRecord:
        """Measure now (whatever the step), record, notify the sinks, and return the record.

        In background mode this waits for the measurement (and any still pending before it).
        """
        self._submit(optimizer)
        self.flush()
        return self.history[-1]

    def flush(self) -> None:
        """Wait for the background measurements still running and record them (no-op otherwise)."""
        if self._actor is not None:
            for tag, result in self._actor.drain():
                self._record(tag, result)

    def close(self) -> None:
        """Record what is pending and stop the background worker (the monitor can go on after)."""
        if self._actor is not None:
            self.flush()
            self._actor.close()
            self._actor = None

    def __enter__(self) -> SharpnessMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _submit(self, optimizer: torch.optim.Optimizer) -> None:
        """Measure θ now: in the foreground, or hand a snapshot to the background worker."""
        optimizer = unwrap_optimizer(optimizer)
        threshold = stability_threshold(optimizer)
        if threshold is None:
            raise InputError(f"no stability threshold is known for {type(optimizer).__name__}; the monitor "
                             f"supports torch.optim.SGD (with or without momentum, Nesterov), Adam, "
                             f"AdamW and RMSprop")
        P = None
        if is_preconditioned(optimizer):
            try:
                P = adam_preconditioner(optimizer, self.op)
            except InputError as e:
                raise InputError(f"{e}; call mon.step(optimizer) after optimizer.step()") from None
        tag = (self.n_steps, float(threshold), float(optimizer.param_groups[0]["lr"]), P is not None)
        if not self.background:
            self._record(tag, self.probe.measure(P))
            return
        if self._actor is None:
            device = next(self.model.parameters()).device
            self._actor = BackgroundActor(self.probe, cuda=device.type == "cuda")
        self._actor.submit("measure_snapshot", state_copy(self.model), P, tag=tag)
        for done_tag, result in self._actor.ready():
            self._record(done_tag, result)

    def _record(self, tag: tuple[int, float, float, bool], result: tuple[tuple[float, ...], int, float]
                ) -> MonitorRecord:
        step, threshold, lr, pre = tag
        values, n_matvecs, seconds = result
        lam1 = values[0]
        ratio = lam1 / threshold if math.isfinite(threshold) else 0.0
        status = classify(lam1, threshold, self.edge)
        record = MonitorRecord(step=step, lambda1=lam1, threshold=threshold, ratio=ratio, status=status,
                               eigenvalues=values, lr=lr, preconditioned=pre, n_matvecs=n_matvecs,
                               seconds=seconds)
        if status != (self.status or "stable"):
            logger.warning("%s: %s -> %s at step %d: lambda1 = %.4g, threshold = %.4g (ratio %.3f, lr %.4g)",
                           self.name, self.status or "stable", status, record.step, lam1, threshold, ratio,
                           record.lr)
        self.status = status
        self.history.append(record)
        for sink in self.sinks:
            sink(record)
        return record

    @property
    def last(self) -> MonitorRecord | None:
        """The latest record (``None`` before the first measurement)."""
        return self.history[-1] if self.history else None

    def __repr__(self) -> str:
        return (f"SharpnessMonitor(every={self.every}, k={self.k}, status={self.status!r}, "
                f"measurements={len(self.history)})")
