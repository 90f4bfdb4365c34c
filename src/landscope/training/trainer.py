"""The training loop that measures the landscape as it goes (DESIGN §4).

Step ``t`` of the loop evaluates the loss at θ_t on batch t, measures θ_t when ``t`` is a
measurement step, then updates to θ_{t+1} with η_t. Row ``t`` of ``metrics.jsonl`` therefore
describes θ_t and the η that moved it; the last row (``t = steps``) describes the final θ.
Everything the loop draws is a pure function of the step (batch order, dropout masks, η), and
the rest of the state is in the checkpoint, so a resumed run writes the same rows as an
uninterrupted one.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn

from landscope.background import BackgroundActor
from landscope.checks import tensor_pair
from landscope.curvature import EigenResult
from landscope.curvature.modes import cuda_devices
from landscope.errors import InputError
from landscope.training.config import MeasureConfig, OptimizerSpec, ScheduleConfig
from landscope.training.detector import DEFAULT_DELTA, InstabilityDetector
from landscope.training.measure import Measurement, Measurer, hessian_subset
from landscope.training.optim import is_preconditioned, make_optimizer, stability_threshold
from landscope.training.schedules import make_schedule
from landscope.training.store import RunStore

Data = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class TrainResult:
    """What :meth:`Trainer.fit` returns: the status, the last step and every row it wrote."""

    status: str  # "completed" or "diverged"
    step: int  # last step evaluated
    metrics: list[dict[str, Any]]
    eigen: dict[int, EigenResult] = field(default_factory=dict)  # in-memory runs only
    clip_count: int = 0


def _check_data(name: str, data: object) -> Data:
    X, y = tensor_pair(name, data)
    if X.shape[0] != y.shape[0] or X.shape[0] == 0:
        raise InputError(
            f"{name}: X has {X.shape[0]} samples but y has {y.shape[0]}"
            if X.shape[0] != y.shape[0]
            else f"{name} is empty"
        )
    return X, y


class Trainer:
    """Train any ``nn.Module`` on ``(X, y)`` tensors while measuring its curvature.

    Args:
        model, loss_fn: the model and a mean-reduced loss ``loss_fn(outputs, targets)``.
        train_data, test_data: ``(X, y)`` tensors (on the model's device).
        optimizer: an :class:`OptimizerSpec` (the trainer builds the ``torch.optim`` optimiser)
            or a ready ``torch.optim`` optimiser over ``model``'s parameters.
        schedule: a :class:`ScheduleConfig`, any callable ``step → η``, or ``None`` (constant η).
        steps: number of updates; ``batch_size`` ``None`` means full batch (GD).
        measure: what to measure and how often (``None``: losses only, no measurements).
        clip_norm / clip_value: gradient clipping; how often it fired is recorded.
        diverge_factor: the run ends as ``diverged`` when the loss is NaN/inf or exceeds this
            factor times the initial loss.
        seed: seeds the batch order, dropout masks, the Hessian set and the eigensolver.
        store: a :class:`RunStore` (held) to write the run to; ``None`` keeps it in memory.
        progress: called with each row as it is written (the CLI's progress bar).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable,
        train_data: Data,
        *,
        optimizer: OptimizerSpec | torch.optim.Optimizer | None = None,
        schedule: ScheduleConfig | Callable[[int], float] | None = None,
        steps: int = 100,
        batch_size: int | None = None,
        test_data: Data | None = None,
        measure: MeasureConfig | None = None,
        clip_norm: float | None = None,
        clip_value: float | None = None,
        diverge_factor: float = 1000.0,
        seed: int = 0,
        checkpoint_every: int | None = None,
        store: RunStore | None = None,
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise InputError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        self.X, self.y = _check_data("train_data", train_data)
        self.test_data = _check_data("test_data", test_data) if test_data is not None else None
        if not isinstance(steps, int) or steps < 1:
            raise InputError(f"steps must be a positive integer, got {steps!r}")
        n = self.X.shape[0]
        if batch_size is not None and not (isinstance(batch_size, int) and 1 <= batch_size <= n):
            raise InputError(
                f"batch_size must be an integer in [1, {n}] (the training set size) or "
                f"None for full batch, got {batch_size!r}"
            )
        for name, v in (("clip_norm", clip_norm), ("clip_value", clip_value)):
            if v is not None and not v > 0:
                raise InputError(f"{name} must be positive, got {v!r}")
        if not diverge_factor > 1:
            raise InputError(f"diverge_factor must exceed 1, got {diverge_factor!r}")
        self.model, self.loss_fn = model, loss_fn
        self.steps, self.batch_size, self.seed = steps, batch_size, int(seed)
        self.clip_norm, self.clip_value, self.diverge_factor = clip_norm, clip_value, diverge_factor
        spec = optimizer if optimizer is not None else OptimizerSpec()
        if isinstance(spec, torch.optim.Optimizer):
            self.optimizer = spec
        else:
            self.optimizer = make_optimizer(model.parameters(), spec)
        self.base_lr = float(self.optimizer.param_groups[0]["lr"])
        self.schedule: Callable[[int], float]
        if schedule is None or isinstance(schedule, ScheduleConfig):
            self.schedule = make_schedule(schedule, self.base_lr, steps)
        elif callable(schedule):
            self.schedule = schedule
        else:
            raise InputError(
                f"schedule must be a ScheduleConfig or a callable step → lr, got {type(schedule).__name__}"
            )
        self.measure_config = measure
        self.checkpoint_every = checkpoint_every or (measure.every if measure else max(steps // 10, 1))
        self.store, self.progress = store, progress
        self.measurer = None
        if measure is not None:
            self.measurer = Measurer(
                model,
                loss_fn,
                hessian_subset(self.X, self.y, measure.hessian_samples, self.seed),
                measure,
                batch_size=batch_size,
                seed=self.seed,
                test_data=self.test_data,
                train_data=(self.X, self.y) if batch_size is not None else None,
                preconditioned=is_preconditioned(self.optimizer)
                if measure.preconditioned is None
                else measure.preconditioned,
            )
        self._has_dropout = any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())
        self._rng_devices = cuda_devices(model, self.X)  # once: _step_rng runs at every step
        self._epoch: tuple[int, torch.Tensor] | None = None

    # -- pure functions of the step ------------------------------------------------------------
    def batch(self, step: int) -> Data:
        """Batch ``step``: a fresh seeded permutation each epoch (last partial batch dropped)."""
        if self.batch_size is None:
            return self.X, self.y
        n = self.X.shape[0]
        per_epoch = n // self.batch_size
        epoch, i = divmod(step, per_epoch)
        if self._epoch is None or self._epoch[0] != epoch:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**63)
            self._epoch = (epoch, torch.randperm(n, generator=g).to(self.X.device))
        idx = self._epoch[1][i * self.batch_size : (i + 1) * self.batch_size]
        return self.X[idx], self.y[idx]

    @contextmanager
    def _step_rng(self, step: int) -> Iterator[None]:
        """Dropout masks seeded by the step, without touching the caller's RNG."""
        if not self._has_dropout:
            yield
            return
        with torch.random.fork_rng(devices=self._rng_devices):
            torch.manual_seed((self.seed * 7_368_787 + step) % 2**63)
            yield

    # -- state -------------------------------------------------------------------------------
    def _flat_params(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.model.parameters()]).clone()

    def _clip(self) -> tuple[float, bool]:
        with_grad = [(p, p.grad) for p in self.model.parameters() if p.grad is not None]
        params, grads = [p for p, _ in with_grad], [g for _, g in with_grad]
        norm = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
        fired = False
        if self.clip_value is not None:
            fired = any(bool((g.abs() > self.clip_value).any()) for g in grads)
            torch.nn.utils.clip_grad_value_(params, self.clip_value)
        if self.clip_norm is not None and norm > self.clip_norm:
            torch.nn.utils.clip_grad_norm_(params, self.clip_norm)
            fired = True
        return norm, fired

    def _record(
        self, row: dict[str, Any], m: Measurement, clip_count: int, eigen: dict[int, EigenResult]
    ) -> None:
        """Merge a measurement into its row and write its arrays (or keep them, in memory)."""
        row.update(m.row)
        if self.clip_norm is not None or self.clip_value is not None:
            row["clip_count"] = clip_count
        t = row["step"]
        if self.store is not None and (m.eigen is not None or m.arrays):
            e = m.eigen
            save_vectors = self.measure_config is not None and self.measure_config.save_vectors
            vectors = e.vectors if e is not None and save_vectors else None
            self.store.save_eigen(
                t,
                e.values.numpy() if e else None,
                e.residuals.numpy() if e else None,
                vectors.cpu().numpy() if vectors is not None else None,
                **m.arrays,
            )
        elif m.eigen is not None:
            eigen[t] = m.eigen

    @contextmanager
    def _background(self) -> Iterator[BackgroundActor | None]:
        """The measurer's background copy when ``measure.background`` is set (else ``None``)."""
        # a measurer is made from a measure config (__init__)
        if self.measurer is None or self.measure_config is None or not self.measure_config.background:
            yield None
            return
        fds = self.store.file_descriptors() if self.store is not None else ()
        with BackgroundActor(self.measurer, cuda=self.X.device.type == "cuda", close_fds=fds) as actor:
            yield actor

    # -- the loop ----------------------------------------------------------------------------
    def fit(self, resume: Checkpoint | dict[str, Any] | None = None) -> TrainResult:
        """Run (or, given a checkpoint, resume) the loop to the end or to divergence."""
        if resume is not None and not isinstance(resume, Checkpoint):
            resume = Checkpoint.from_state(resume)
        if resume is not None and resume.final:
            return self._already_finished(resume)
        loop = self._begin(resume)
        with self._background() as actor:
            loop.actor = actor
            for t in range(loop.start, self.steps + 1):
                loop.t = t
                if self.store is not None and t > loop.start and t % self.checkpoint_every == 0:
                    self._save(loop)
                tic = time.perf_counter()
                row, loss_val, diverged = self._evaluate(t, loop)
                loop.timing["train_seconds"] += time.perf_counter() - tic
                tic = time.perf_counter()
                pending = loop.rows.push(row)
                if self.measure_config is not None and not diverged:
                    self._measure_step(t, loss_val, pending, loop)
                loop.timing["measure_seconds"] += time.perf_counter() - tic
                if diverged:
                    row["diverged"] = True
                    loop.status = "diverged"
                final = diverged or t == self.steps
                # writing rows is not measuring
                self._settle(
                    loop,
                    actor.ready() if actor is not None else [],
                    math.inf if final else t - loop.rows.hold,
                )
                if final:
                    break
                tic = time.perf_counter()
                self.optimizer.step()
                loop.timing["train_seconds"] += time.perf_counter() - tic
            if actor is not None:
                tic = time.perf_counter()
                self._settle(loop, actor.drain(), math.inf)
                assert self.measurer is not None  # the actor runs a copy of it (_background)
                self.measurer.load_state_dict(actor.call("state_dict"))
                loop.timing["measure_seconds"] += time.perf_counter() - tic
        return self._end(loop)

    def _already_finished(self, resume: Checkpoint) -> TrainResult:
        """The run had finished (only its status was lost): nothing to redo."""
        if self.store is not None:
            self.store.write_status(
                "completed", step=resume.step, steps=self.steps, clip_count=resume.clip_count
            )
        return TrainResult(status="completed", step=resume.step, metrics=[], clip_count=resume.clip_count)

    def _begin(self, resume: Checkpoint | None) -> _Loop:
        """The loop's state: fresh, or restored from ``resume`` (model, optimiser, measurer, rows)."""
        measure, store = self.measure_config, self.store
        around = _Around(measure) if measure is not None and measure.around_instabilities else None
        rows = _Rows(store, self.progress, hold=around.before if around is not None else 0)
        if resume is None:
            if store is not None:
                store.open_metrics(truncate_at=0)
            loop = _Loop(rows=rows, around=around, start=0, theta0=self._flat_params())
        else:
            self.model.load_state_dict(resume.model)
            self.optimizer.load_state_dict(resume.optimizer)
            if self.measurer is not None and resume.measurer is not None:
                self.measurer.load_state_dict(resume.measurer)
            if store is not None:
                store.open_metrics(truncate_at=resume.metrics_offset)
            rows.load_state_dict(resume.pending)
            if around is not None and resume.around is not None:
                around.load_state_dict(resume.around)
            loop = _Loop(
                rows=rows,
                around=around,
                start=resume.step,
                theta0=resume.theta0,
                initial_loss=resume.initial_loss,
                clip_count=resume.clip_count,
            )
        self.model.train()  # measurements restore the flags they change
        return loop

    def _checkpoint(self, loop: _Loop, metrics_offset: int, final: bool = False) -> Checkpoint:
        """What a run needs to resume at ``loop.t`` (rows held back and detectors included)."""
        return Checkpoint(
            step=loop.t,
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            measurer=self.measurer.state_dict() if self.measurer else None,
            theta0=loop.theta0,
            initial_loss=loop.initial_loss,
            clip_count=loop.clip_count,
            metrics_offset=metrics_offset,
            pending=loop.rows.state_dict(),
            around=loop.around.state_dict() if loop.around is not None else None,
            final=final,
        )

    def _save(self, loop: _Loop) -> None:
        """Write the checkpoint of step ``loop.t`` (after the background's measurements are in)."""
        assert self.store is not None
        if loop.actor is not None:  # the checkpoint holds the measurer's state after them
            self._settle(loop, loop.actor.drain(), loop.t - 1 - loop.rows.hold)
            assert self.measurer is not None  # the actor runs a copy of it (_background)
            self.measurer.load_state_dict(loop.actor.call("state_dict"))
        self.store.save_checkpoint(self._checkpoint(loop, self.store.metrics_offset()).to_state())
        self.store.write_status(
            "running", step=loop.t, steps=self.steps, clip_count=loop.clip_count, **loop.timing
        )

    def _evaluate(self, t: int, loop: _Loop) -> tuple[dict[str, Any], float, bool]:
        """Loss at θ_t on batch t and, unless it diverged or this is the last step, its gradient."""
        lr = float(self.schedule(t))
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        Xb, yb = self.batch(t)
        with self._step_rng(t):
            loss = self.loss_fn(self.model(Xb), yb)
        loss_val = float(loss.detach())
        if loop.initial_loss is None:
            loop.initial_loss = loss_val
        row: dict[str, Any] = {
            "step": t,
            "lr": lr,
            "train_loss": loss_val if math.isfinite(loss_val) else None,
        }
        diverged = not math.isfinite(loss_val) or loss_val > self.diverge_factor * abs(loop.initial_loss)
        if not diverged and t < self.steps:
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            gnorm, fired = self._clip()
            row["grad_norm"] = gnorm if math.isfinite(gnorm) else None
            diverged = not math.isfinite(gnorm)
            if self.clip_norm is not None or self.clip_value is not None:
                row["clipped"] = fired
                loop.clip_count += int(fired)
        return row, loss_val, diverged

    def _measure_step(self, t: int, loss_val: float, pending: _Pending, loop: _Loop) -> None:
        """Measure θ_t if due, and around an instability the steps before it that were kept."""
        measure, around = self.measure_config, loop.around
        assert measure is not None and self.measurer is not None
        regular = t % measure.every == 0 or t == self.steps
        # the ring buffer keeps each step's threshold; without it only measured steps need one
        threshold = stability_threshold(self.optimizer) if regular or around is not None else None
        now, back = around.observe(t, loss_val) if around is not None else (False, [])
        for s, snapshot, thr, clips in around.past(back) if around is not None else ():
            earlier = loop.rows.get(s)
            if earlier is not None and not earlier.measured:
                earlier.row["around_instability"] = True
                self._measure_into(loop, earlier, snapshot, thr, clips)
        if regular or now:
            if not regular:
                pending.row["around_instability"] = True
            self._measure_into(loop, pending, None, threshold, loop.clip_count)
        if around is not None:
            kept = None if pending.measured else self.measurer.snapshot(self.optimizer)
            around.keep(t, kept, threshold, loop.clip_count)

    def _measure_into(
        self,
        loop: _Loop,
        pending: _Pending,
        snapshot: dict[str, Any] | None,
        threshold: float | None,
        clips: int,
    ) -> None:
        """Measure θ now (or the kept ``snapshot``) into ``pending``'s row, or send it to the background."""
        assert self.measurer is not None
        if loop.actor is not None:
            pending.waiting = True
            loop.actor.submit(
                "measure_snapshot",
                snapshot or self.measurer.snapshot(self.optimizer),
                threshold,
                loop.theta0,
                tag=(pending, clips),
            )
        else:
            m = (
                self.measurer.measure(self.optimizer, threshold, loop.theta0)
                if snapshot is None
                else self.measurer.measure_past(snapshot, threshold, loop.theta0)
            )
            self._record(pending.row, m, clips, loop.eigen)
        pending.measured = True

    def _settle(self, loop: _Loop, done: list[tuple[Any, Measurement]], upto: float) -> None:
        """Merge the background measurements that came back, then write the rows that are complete."""
        for (pending, clips), m in done:
            self._record(pending.row, m, clips, loop.eigen)
            pending.waiting = False
        loop.rows.write(upto)

    def _end(self, loop: _Loop) -> TrainResult:
        """The final checkpoint and status, and the result."""
        store = self.store
        if store is not None:
            if loop.status == "completed":
                store.save_checkpoint(self._checkpoint(loop, store.metrics_offset(), final=True).to_state())
            extra = {"diverged_step": loop.t} if loop.status == "diverged" else {}
            store.write_status(
                loop.status, step=loop.t, steps=self.steps, clip_count=loop.clip_count, **extra, **loop.timing
            )
        return TrainResult(
            status=loop.status,
            step=loop.t,
            metrics=loop.rows.written,
            eigen=loop.eigen,
            clip_count=loop.clip_count,
        )


@dataclass
class Checkpoint:
    """What ``checkpoints/latest.pt`` holds: the loop resumes from it exactly.

    Stored as a plain dict (:meth:`to_state`; the store writes tensors and plain values only).
    """

    step: int
    model: dict[str, Any]
    optimizer: dict[str, Any]
    measurer: dict[str, Any] | None
    theta0: torch.Tensor
    initial_loss: float | None
    clip_count: int
    metrics_offset: int
    pending: list[dict[str, Any]] = field(default_factory=list)  # rows held back (around instabilities)
    around: dict[str, Any] | None = None  # the online detectors' state
    final: bool = False  # the run had completed

    def to_state(self) -> dict[str, Any]:
        """The dict the store writes (no deep copy: ``dataclasses.asdict`` would copy the tensors)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Checkpoint:
        """From a loaded checkpoint dict (older ones lack ``pending``, ``around`` and ``final``)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in state.items() if k in names})


@dataclass
class _Loop:
    """The loop's mutable state between its named steps."""

    rows: _Rows
    around: _Around | None
    start: int
    theta0: torch.Tensor
    initial_loss: float | None = None
    clip_count: int = 0
    t: int = 0
    status: str = "completed"
    actor: BackgroundActor | None = None
    eigen: dict[int, EigenResult] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=lambda: {"train_seconds": 0.0, "measure_seconds": 0.0})


@dataclass
class _Pending:
    """A row not yet written: its background measurement is out, or a later step may still add one."""

    row: dict[str, Any]
    waiting: bool = False  # a background measurement of it is not back yet
    measured: bool = False


class _Rows:
    """Rows are written in step order, each once nothing more can join it.

    A row waits for its background measurement, and around instabilities for ``hold`` more steps:
    an instability that starts at step t has steps t - hold … t - 1 measured after the fact.
    """

    def __init__(
        self, store: RunStore | None, progress: Callable[[dict[str, Any]], None] | None, hold: int
    ) -> None:
        self.store, self.progress, self.hold = store, progress, hold
        self.queue: deque[_Pending] = deque()
        self.written: list[dict[str, Any]] = []

    def push(self, row: dict[str, Any]) -> _Pending:
        """Queue the row of the step just evaluated."""
        pending = _Pending(row)
        self.queue.append(pending)
        return pending

    def get(self, step: int) -> _Pending | None:
        """The queued row of ``step`` (``None`` once written)."""
        if not self.queue:
            return None
        i = step - self.queue[0].row["step"]
        return self.queue[i] if 0 <= i < len(self.queue) else None

    def write(self, upto: float) -> None:
        """Write the leading rows of steps ≤ ``upto`` whose measurements are in."""
        while self.queue and not self.queue[0].waiting and self.queue[0].row["step"] <= upto:
            row = self.queue.popleft().row
            self.written.append(row)
            if self.store is not None:
                self.store.append(row)
            if self.progress is not None:
                self.progress(row)

    def state_dict(self) -> list[dict[str, Any]]:
        """The held rows (none is waiting at a checkpoint: the background queue was drained)."""
        return [{"row": p.row, "measured": p.measured} for p in self.queue]

    def load_state_dict(self, state: list[dict[str, Any]]) -> None:
        """Restore :meth:`state_dict`."""
        self.queue = deque(_Pending(p["row"], measured=p["measured"]) for p in state)


class _Around:
    """Online instability detection (one detector per δ) and the ring buffer of recent snapshots."""

    def __init__(self, config: MeasureConfig) -> None:
        self.detectors = [InstabilityDetector(d) for d in (config.around_deltas or (DEFAULT_DELTA,))]
        self.before, self.after = config.around_before, config.around_after
        self.ring: deque[tuple[int, dict[str, Any] | None, float | None, int]] = deque(maxlen=self.before)
        self.after_until = -1

    def observe(self, step: int, loss: float) -> tuple[bool, list[int]]:
        """Feed the loss of ``step``: whether to measure it, and which earlier steps to measure now."""
        now = False
        back: set[int] = set()  # steps just before an instability's start
        for det in self.detectors:
            if det.update(step, loss) is not None:  # ended here: measure it and the steps after
                now = True
                self.after_until = max(self.after_until, step + self.after)
            elif (spell := det.current) is not None:  # active
                now = True
                if spell.start == step:
                    back.update(range(step - self.before, step))
        return now or step <= self.after_until, sorted(back)

    def past(self, steps: list[int]) -> list[tuple[int, dict[str, Any] | None, float | None, int]]:
        """The kept snapshots of ``steps`` (those still in the ring and not measured already)."""
        return [e for e in self.ring if e[0] in steps and e[1] is not None]

    def keep(self, step: int, snapshot: dict[str, Any] | None, threshold: float | None, clips: int) -> None:
        """Remember θ at ``step`` (``None``: it was measured anyway)."""
        self.ring.append((step, snapshot, threshold, clips))

    def state_dict(self) -> dict[str, Any]:
        """Detectors, ring buffer and the after-end window: what a resumed run needs."""
        return {
            "detectors": [d.state_dict() for d in self.detectors],
            "ring": list(self.ring),
            "after_until": self.after_until,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        for det, st in zip(self.detectors, state["detectors"], strict=True):
            det.load_state_dict(st)
        self.ring = deque(state["ring"], maxlen=self.before)
        self.after_until = int(state["after_until"])
