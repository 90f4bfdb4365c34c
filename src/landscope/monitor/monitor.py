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

import contextlib
import logging
import math
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

from landscope.background import BackgroundActor, state_copy
from landscope.checks import is_tensor_pair, positive_int
from landscope.curvature import EigenTracker, HessianOperator, PreconditionedOperator, adam_preconditioner
from landscope.curvature.batch_loss import call_model, outputs_of
from landscope.curvature.batches import is_pair
from landscope.curvature.modes import model_mode
from landscope.errors import InputError, LandscopeError
from landscope.monitor.records import json_safe
from landscope.monitor.short_runs import collapsed, own_and_mean_output_loss
from landscope.monitor.sinks import make_sinks
from landscope.training import is_preconditioned, stability_threshold

Status = Literal["stable", "edge", "unstable", "warming_up", "dead", "off"]
STATUSES: tuple[str, ...] = ("stable", "edge", "unstable", "warming_up", "dead", "off")
HYSTERESIS = 0.1  # a status is left only once the ratio is this far back below its entry
RETHRESHOLD = 1.5  # an lr rise by more than this factor triggers a measurement at once
CHANCE_MARGIN = 0.02  # loss within this of the constant-output loss: at chance
# The eigensolver's relative residual: λ1 to a few 0.1 % (a verdict needs a percent), 15–30 % fewer
# products than 1e-2 (benchmarks/results/monitor_tolerance.md)
MONITOR_TOL = 3e-2

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
    loss: float | None = None  # the loss on the monitor's batch
    chance: float | None = None  # loss / loss of the model's mean output (≥ 0.98: at chance)
    collapsed: bool | None = None  # the outputs no longer depend on the inputs

    def as_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (non-finite numbers as ``None``)."""
        return {k: json_safe(v) for k, v in asdict(self).items()}

    def scalars(self, name: str) -> dict[str, float]:
        """``{name/lambda1, name/threshold, name/ratio}``, the finite ones: what loggers plot."""
        out = {f"{name}/{key}": float(getattr(self, key)) for key in ("lambda1", "threshold", "ratio")}
        return {k: v for k, v in out.items() if math.isfinite(v)}


def classify(
    lambda1: float, threshold: float, edge: float, previous: str | None = None, hysteresis: float = 0.0
) -> str:
    """``unstable`` above the threshold, ``edge`` above ``edge`` × it, else ``stable``.

    A non-finite λ1 (NaN parameters after a blow-up) is ``unstable``. With a ``previous`` status
    and ``hysteresis`` h, a status is kept until the ratio falls h below where it was entered
    (``unstable`` until ≤ 1 − h, ``edge`` until ≤ edge − h), so a λ1 that hovers at a boundary
    (the edge of stability) does not flip the status at every measurement.
    """
    if not math.isfinite(lambda1):
        return "unstable"
    ratio = lambda1 / threshold if math.isfinite(threshold) and threshold > 0 else 0.0
    if ratio > 1 or (previous == "unstable" and ratio > 1 - hysteresis):
        return "unstable"
    if ratio > edge or (previous in ("edge", "unstable") and ratio > edge - hysteresis):
        return "edge"
    return "stable"


def warmup_steps(optimizer: torch.optim.Optimizer) -> int:
    """Optimiser steps before the threshold applies: ⌈3 / (1 − β₁)⌉ for Adam/AdamW, else 0.

    Adam's threshold (2 + 2β₁)/((1 − β₁)η) assumes the first moment's bias correction has
    decayed (β₁ᵗ ≪ 1, e.g. t ≥ 30 at β₁ = 0.9); before that the second-moment estimate is a few
    gradients' worth and λ1(P⁻¹H) reads 3 to 23,000 × the threshold at step 1 on healthy runs.
    """
    if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW):
        return 0
    beta1 = float(optimizer.param_groups[0]["betas"][0])
    return int(math.ceil(3.0 / (1.0 - beta1) - 1e-9)) if beta1 > 0 else 1  # 3/0.1 = 30.000…04


def warming(optimizer: torch.optim.Optimizer) -> bool:
    """Whether an Adam-family optimiser is still within its :func:`warmup_steps` (no verdict yet).

    Before its first step an optimiser keeps no step count: that is step 0, still warming up.
    """
    warm = warmup_steps(optimizer)
    return warm > 0 and (optimizer_steps(optimizer) or 0) < warm


def optimizer_steps(optimizer: torch.optim.Optimizer) -> int | None:
    """Steps the optimiser itself has taken (its state's ``step``), ``None`` if it keeps none."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            step = optimizer.state.get(p, {}).get("step")
            if step is not None:
                return int(float(step))
    return None


def spare_core(model: nn.Module) -> bool:
    """Whether a background worker would have a core of its own.

    Linux (fork), a CPU model, and more usable cores than torch's intra-op threads.
    """
    import multiprocessing
    import os

    if not sys.platform.startswith("linux") or "fork" not in multiprocessing.get_all_start_methods():
        return False
    if any(p.device.type != "cpu" for p in model.parameters()):
        return False
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return cores > torch.get_num_threads()


def start_monitor(
    model: nn.Module, loss_fn: Callable | None, batch: Any, options: dict[str, Any]
) -> tuple[SharpnessMonitor | None, BaseException | None]:
    """A framework callback's monitor, or the error that kept it from starting (reported once).

    The monitor never stops the user's training: unless ``options["strict"]``, a set-up error
    (a loss the model cannot compute, an attention kernel without a double backward) is logged
    and warned, and the callback goes on without monitoring.
    """
    try:
        return SharpnessMonitor(model, loss_fn, batch, **options), None
    except Exception as e:
        if options.get("strict"):
            raise
        report_failure(options.get("name", "sharpness"), "setting up the monitor", e)
        return None, e


def report_failure(name: str, what: str, e: BaseException) -> None:
    """Log and warn, once per failure, that monitoring stopped and training goes on."""
    msg = (
        f"{name}: {what} failed ({type(e).__name__}: {e}); the monitor is off and training "
        "goes on (strict=True raises instead)"
    )
    logger.error(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=4)


def unwrap_optimizer(optimizer: object) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimiser inside wrappers (Lightning's, Accelerate's ``.optimizer``)."""
    seen = 0
    while (
        type(optimizer) not in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop)
        and seen < 5
        and hasattr(optimizer, "optimizer")
        and hasattr(optimizer.optimizer, "param_groups")
    ):
        optimizer = optimizer.optimizer
        seen += 1
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise InputError(f"mon.step needs the torch optimizer of the loop, got {type(optimizer).__name__}")
    return optimizer


def check_options(every: object, k: object, tol: object, edge: object, name: object) -> None:
    """The monitor's scalar options, checked before any model is needed (the adapters call it)."""
    positive_int("every", every, what="optimizer steps between measurements")
    positive_int("k", k, what="top eigenvalues to track")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 < tol < 1:
        raise InputError(f"tol must be in (0, 1) (relative residual of the eigensolver), got {tol!r}")
    if isinstance(edge, bool) or not isinstance(edge, (int, float)) or not 0 < edge < 1:
        raise InputError(
            f"edge must be in (0, 1) (fraction of the threshold that counts as the edge), got {edge!r}"
        )
    if not isinstance(name, str) or not name:
        raise InputError(f"name must be a non-empty string, got {name!r}")


def check_batch(batch: Any) -> Any:
    """``batch``: an ``(X, y)`` pair with as many samples each, or a dict batch.

    Other structures (tuple or dict parts) pass to the operator, which checks them.
    """
    if isinstance(batch, Mapping) or (is_pair(batch) and not all(isinstance(t, torch.Tensor) for t in batch)):
        return batch
    if not is_tensor_pair(batch):
        what = type(batch).__name__ + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        raise InputError(
            f"batch must be a tuple (X, y) or a dict batch (a fixed batch to measure on), got {what}"
        )
    X, y = batch
    if X.dim() == 0 or y.dim() == 0 or len(X) != len(y) or len(X) == 0:
        raise InputError(
            f"batch: X has shape {tuple(X.shape)} and y {tuple(y.shape)}; they need the same "
            f"positive number of samples along the first axis"
        )
    return X, y


class _Probe:
    """λ1 of a model on a fixed batch, warm-started: the part of the monitor that may run elsewhere.

    In the foreground it reads the live model; in a background worker it holds a copy of the
    model and is given a snapshot of the parameters (and buffers) with each request.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable | None,
        batch: Any,
        k: int,
        tol: float,
        batch_loss: Callable | None = None,
        batch_weight: Callable | None = None,
    ) -> None:
        self.model, self.loss_fn, self.batch = model, loss_fn, batch
        self.custom_loss = batch_loss is not None
        # "train": the function the optimiser moves (BN with batch statistics); dropout stays off.
        self.op = HessianOperator(
            model,
            loss_fn,
            batch,
            model_mode="train",
            cache=True,
            batch_loss=batch_loss,
            batch_weight=batch_weight,
        )
        if k > self.op.dim:
            raise InputError(f"k={k} exceeds the number of parameters {self.op.dim}")
        self.tracker = EigenTracker(k=k, tol=float(tol), seed=0)
        self.preconditioned: bool | None = None

    @torch.no_grad()
    def health(self) -> dict[str, Any]:
        """The batch loss, the loss relative to the model's mean output, and whether outputs collapsed.

        One forward pass. A network that a large step killed has outputs that no longer depend on
        its inputs (``collapsed``), or sits at the loss of predicting its mean output
        (``chance`` ≈ 1): its λ1 is small and would read ``stable``.
        """
        out: dict[str, Any] = {"loss": None, "chance": None, "collapsed": None}
        if self.custom_loss:
            return out
        try:
            with model_mode(self.model, "train"):
                pair = is_pair(self.batch)
                raw = call_model(self.model, self.batch[0]) if pair else self.model(**self.batch)
                logits = outputs_of(raw)
                if pair and self.loss_fn is not None:
                    own, const = own_and_mean_output_loss(self.loss_fn, logits, self.batch[1])
                    out["loss"] = own
                    if math.isfinite(own) and math.isfinite(const) and const > 0:
                        out["chance"] = own / const
        except Exception as e:  # a model whose outputs we cannot read: no verdict on its health
            logger.debug("no health check: %s", e)
            return out
        out["collapsed"] = collapsed(logits)
        return out

    def measure(self, P: torch.Tensor | None) -> tuple[tuple[float, ...], int, float, dict[str, Any]]:
        """Top-k eigenvalues (of P⁻¹H when ``P`` is given), products taken, seconds, health."""
        tic = time.perf_counter()
        pre = P is not None
        if P is not None and not bool(torch.isfinite(P).all()):
            # the optimiser's state blew up with the run: a diverged run is a result, not an error
            self.tracker.reset()
            return (math.nan,), 0, time.perf_counter() - tic, self.health()
        op = PreconditionedOperator(self.op, P) if P is not None else self.op
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
        return values, n_matvecs, time.perf_counter() - tic, self.health()

    def measure_snapshot(
        self, state: dict[str, torch.Tensor], P: torch.Tensor | None
    ) -> tuple[tuple[float, ...], int, float, dict[str, Any]]:
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
            return True  # finite parameters, yet the loss itself fails: an error, not a blow-up
        finally:
            self.op.clear_cache()


class SharpnessMonitor:
    """Measure λ1 every ``every`` optimiser steps and say whether η is stable, at the edge, or not.

    ``mon = SharpnessMonitor(model, loss_fn, (X, y))``; in the loop, after ``optimizer.step()``:
    ``status = mon.step(optimizer)``. The first call and every ``every``-th call measure (and any
    call at which the learning rate has grown by more than 1.5× since the last measurement;
    under Adam/AdamW, none during the warm-up below, and the first as it ends); at
    the others the status is recomputed from the last λ1 and the optimiser's *current* threshold,
    so an lr jump shows at once.

    Statuses: ``stable``, ``edge`` (λ1 > ``edge`` × threshold), ``unstable`` (above it), with
    hysteresis: a status is left only once the ratio is ``hysteresis`` below where it was entered.
    ``warming_up``: Adam/AdamW before ⌈3/(1 − β₁)⌉ optimiser steps, when their threshold does not
    apply yet (:func:`warmup_steps`). ``dead``: the network's outputs no longer depend on its
    inputs, or, after it had learned, its loss is back at that of its own mean output (a killed
    ReLU network has a small λ1 and would read ``stable``). ``off``: a measurement failed; the
    error was logged once (and warned), the monitor turned itself off and training goes on
    (``strict=True`` raises instead).

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
        tol: relative residual of each (warm-started) Lanczos solve. λ1's error is about tol²·λ1:
            along six held-out runs (MLPs, CNNs with and without BatchNorm, GD, momentum, Adam,
            RMSprop, AdamW on GPT-2) the default 3e-2 gave λ1 within 0.45 % of a tol-1e-6 solve
            (6.8 % once, under RMSprop; 2.0 % there at 1e-2) and the same status at every
            measurement, with 15–30 % fewer products than 1e-2; 1e-1 was off by up to 34 % and
            changed 5 statuses (benchmarks/results/monitor_tolerance.md).
        edge: status ``edge`` when λ1 > edge × threshold.
        sinks: a TensorBoard ``SummaryWriter``, a ``.csv``/``.jsonl`` path, a callable(record), or
            a tuple of them; each gets every :class:`MonitorRecord`.
        name: prefix of TensorBoard tags and of the log messages.
        background: measure a snapshot of the parameters in a worker process while the loop goes
            on (one more core busy; ``benchmarks/monitor_overhead.py``). The status then lags by
            the time a measurement takes; :meth:`flush` waits for it, :meth:`close` (or ``with``)
            stops the worker. ``"auto"``: in the background when a spare core exists
            (:func:`spare_core`: Linux, a CPU model, more usable cores than torch's threads). On
            GPT-2 with AdamW at every = 50 the foreground costs 30–40 % of training, the
            background 3 % (``benchmarks/monitor_gpt2.py``). It is not the default because the
            status then lags by a measurement (``None`` at the first call), because forking a
            process that runs other threads (DataLoader workers, a framework's) is unsafe, because
            torch uses every core by default (no spare one), and because a CUDA model would need a
            worker with its own CUDA context, a copy of the model on the device, and a picklable
            ``loss_fn`` / ``batch_loss`` (a module-level function, not a lambda).
        batch_loss: ``f(model, batch)`` → the batch's mean loss, instead of ``loss_fn``.
        batch_weight: ``g(batch)`` → the batch's weight (see :class:`~landscope.HessianOperator`).
        hysteresis: see the statuses above (0 for none).
        strict: raise a measurement's error instead of turning the monitor off (for tests).

    Attributes:
        history: every :class:`MonitorRecord`, in order.
        status: the last status (``None`` before the first measurement).
        error: the exception that turned the monitor off (``None`` while it is on).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable | None = None,
        batch: Any = None,
        every: int = 50,
        k: int = 1,
        tol: float = MONITOR_TOL,
        edge: float = 0.9,
        sinks: object = (),
        name: str = "sharpness",
        background: bool | str = False,
        *,
        batch_loss: Callable | None = None,
        batch_weight: Callable | None = None,
        hysteresis: float = HYSTERESIS,
        strict: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if loss_fn is not None and not callable(loss_fn):
            raise InputError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        check_options(every, k, tol, edge, name)
        if (
            isinstance(hysteresis, bool)
            or not isinstance(hysteresis, (int, float))
            or not 0 <= hysteresis < edge
        ):
            raise InputError(f"hysteresis must be in [0, edge={edge}), got {hysteresis!r}")
        batch = check_batch(batch)
        self.model, self.loss_fn = model, loss_fn
        self.every, self.k, self.tol, self.edge, self.name = every, k, float(tol), float(edge), name
        self.hysteresis, self.strict = float(hysteresis), bool(strict)
        self.probe = _Probe(model, loss_fn, batch, k, float(tol), batch_loss, batch_weight)
        self.op, self.tracker = self.probe.op, self.probe.tracker
        if background not in (True, False, "auto"):
            raise InputError(f"background must be True, False or 'auto', got {background!r}")
        self.background = spare_core(model) if background == "auto" else bool(background)
        self._actor: BackgroundActor | None = None
        self.sinks = make_sinks(sinks, name)
        self.history: list[MonitorRecord] = []
        self.status: str | None = None
        self.error: BaseException | None = None
        self.n_steps = 0
        self._base: str | None = None  # stable / edge / unstable, with hysteresis
        self._dead = False
        self._learned = False  # the loss was once clearly below chance
        self._submitted_threshold: float | None = None  # of the last measurement asked for
        self._submitted_warming = False

    def step(self, optimizer: torch.optim.Optimizer) -> str | None:
        """Count one optimiser step; measure if due; return the status (call after ``optimizer.step()``).

        In background mode the λ1 is that of the latest measurement that has come back; until the
        first one has, the status is ``None`` (no verdict yet).
        """
        self.n_steps += 1
        if self.error is not None:
            return "off"
        try:
            opt = unwrap_optimizer(optimizer)
            threshold = self._threshold(opt)
            jumped = self._lr_jumped(threshold)
            # the step just taken, at the new η, against the curvature it was taken at
            before = self._status_now(opt, threshold) if jumped else None
            # No measurement while Adam's bias corrections settle: its λ1 would give no verdict
            # (and cost as much as any other); the first one comes as the warm-up ends.
            first = self._submitted_threshold is None or self._submitted_warming
            if not warming(opt) and (first or self.n_steps % self.every == 0 or jumped):
                self._submit(opt, threshold)
            elif self._actor is not None and self._actor.n_pending:
                for tag, result in self._actor.ready():
                    self._record(tag, result)
            now = self._status_now(opt, threshold)
            if before == "unstable" and now in ("stable", "edge"):
                # a large step can move the model to flatter ground at once (Adam's steps are
                # η-sized): that step was still taken above the threshold
                now = self._base = "unstable"
            self._set_status(now)
        except Exception as e:  # the monitor never stops the user's training
            self._turn_off(e)
        return self.status

    def measure(self, optimizer: torch.optim.Optimizer) -> MonitorRecord:
        """Measure now (whatever the step), record, notify the sinks, and return the record.

        An explicit request: errors are raised. In background mode this waits for the
        measurement (and any still pending before it).
        """
        opt = unwrap_optimizer(optimizer)
        threshold = self._threshold(opt)
        self._submit(opt, threshold)
        self.flush()
        self._set_status(self._status_now(opt, threshold))
        return self.history[-1]

    def flush(self) -> None:
        """Wait for the background measurements still running and record them (no-op otherwise)."""
        if self._actor is not None:
            for tag, result in self._actor.drain():
                self._record(tag, result)

    def close(self) -> None:
        """Record what is pending and stop the background worker (the monitor can go on after)."""
        if self._actor is not None:
            try:
                self.flush()
            except Exception as e:
                self._turn_off(e)
            finally:
                if self._actor is not None:
                    self._actor.close()
                    self._actor = None

    def __enter__(self) -> SharpnessMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def ratio(self) -> float | None:
        """The last λ1 over the threshold at the optimiser's η when :meth:`step` was last called."""
        return self._ratio_now

    _ratio_now: float | None = None

    def _threshold(self, optimizer: torch.optim.Optimizer) -> float:
        threshold = stability_threshold(optimizer)
        if threshold is None:
            raise InputError(
                f"no stability threshold is known for {type(optimizer).__name__}; the monitor "
                f"supports torch.optim.SGD (with or without momentum, Nesterov), Adam, "
                f"AdamW and RMSprop"
            )
        return float(threshold)

    def _lr_jumped(self, threshold: float) -> bool:
        """The threshold fell by more than :data:`RETHRESHOLD` since the last measurement asked.

        Only a rise of η can make the last λ1 unsafe; a decay raises the threshold, and the status
        recomputed from the last λ1 says so (a schedule annealing η to 0 measured at every 1.5×
        step otherwise: 39 measurements instead of 16 in a 400-step OneCycle run at every = 25).
        """
        last = self._submitted_threshold
        if last is None or not (math.isfinite(threshold) and math.isfinite(last)):
            return False
        if threshold <= 0 or last <= 0:
            return False
        return last / threshold > RETHRESHOLD

    def _status_now(self, optimizer: torch.optim.Optimizer, threshold: float) -> str | None:
        last = self.last
        if last is None:
            # no measurement yet: during Adam's warm-up (and, in the background, until the first
            # one after it comes back) that is the warm-up; otherwise no status yet
            return "warming_up" if warmup_steps(optimizer) else None
        self._ratio_now = last.lambda1 / threshold if math.isfinite(threshold) else 0.0
        if self._dead:
            return "dead"
        if warming(optimizer) or last.status == "warming_up":
            return "warming_up"  # (in the background, until a measurement after it comes back)
        self._base = classify(last.lambda1, threshold, self.edge, self._base, self.hysteresis)
        return self._base

    def _set_status(self, status: str | None) -> None:
        if status is not None and status != self.status and self.status is not None:
            last = self.last
            logger.warning(
                "%s: %s -> %s at step %d: lambda1 = %.4g, ratio %s",
                self.name,
                self.status,
                status,
                self.n_steps,
                last.lambda1 if last else math.nan,
                f"{self._ratio_now:.3f}" if self._ratio_now is not None else "-",
            )
        self.status = status

    def _turn_off(self, e: BaseException) -> None:
        if self.strict:
            raise e
        self.error = e
        self.status = "off"
        report_failure(self.name, f"the measurement at step {self.n_steps}", e)
        if self._actor is not None:
            with contextlib.suppress(Exception):
                self._actor.close()
            self._actor = None

    def _submit(self, optimizer: torch.optim.Optimizer, threshold: float) -> None:
        """Measure θ now: in the foreground, or hand a snapshot to the background worker."""
        P = None
        if is_preconditioned(optimizer):
            try:
                P = adam_preconditioner(optimizer, self.op)
            except InputError as e:
                raise InputError(f"{e}; call mon.step(optimizer) after optimizer.step()") from None
        in_warmup = warming(optimizer)  # (an explicit measure() during the warm-up)
        self._submitted_threshold, self._submitted_warming = threshold, in_warmup
        tag = (self.n_steps, threshold, float(optimizer.param_groups[0]["lr"]), P is not None, in_warmup)
        if not self.background:
            self._record(tag, self.probe.measure(P))
            return
        if self._actor is None:
            device = next(self.model.parameters()).device
            self._actor = BackgroundActor(self.probe, cuda=device.type == "cuda")
        self._actor.submit("measure_snapshot", state_copy(self.model), P, tag=tag)
        for done_tag, result in self._actor.ready():
            self._record(done_tag, result)

    def _record(
        self,
        tag: tuple[int, float, float, bool, bool],
        result: tuple[tuple[float, ...], int, float, dict[str, Any]],
    ) -> MonitorRecord:
        step, threshold, lr, pre, warming = tag
        values, n_matvecs, seconds, health = result
        lam1 = values[0]
        ratio = lam1 / threshold if math.isfinite(threshold) else 0.0
        chance, collapsed = health.get("chance"), health.get("collapsed")
        if chance is not None and chance <= 0.9:
            self._learned = True
        self._dead = bool(collapsed) or (
            self._learned and chance is not None and chance >= 1.0 - CHANCE_MARGIN
        )
        if self._dead:
            status = "dead"
        elif warming:
            status = "warming_up"
        else:
            status = classify(lam1, threshold, self.edge, self._base, self.hysteresis)
        record = MonitorRecord(
            step=step,
            lambda1=lam1,
            threshold=threshold,
            ratio=ratio,
            status=status,
            eigenvalues=values,
            lr=lr,
            preconditioned=pre,
            n_matvecs=n_matvecs,
            seconds=seconds,
            loss=health.get("loss"),
            chance=chance,
            collapsed=collapsed,
        )
        self.history.append(record)
        for sink in self.sinks:
            sink(record)
        return record

    @property
    def last(self) -> MonitorRecord | None:
        """The latest record (``None`` before the first measurement)."""
        return self.history[-1] if self.history else None

    def __repr__(self) -> str:
        return (
            f"SharpnessMonitor(every={self.every}, k={self.k}, status={self.status!r}, "
            f"measurements={len(self.history)})"
        )
