"""PyTorch Lightning adapter: ``trainer = Trainer(callbacks=[SharpnessCallback(loss_fn, batch)])``.

The callback builds a :class:`~landscope.monitor.SharpnessMonitor` on the ``LightningModule`` when
fitting starts (so ``module(X)`` must return what ``loss_fn`` takes), steps it after every
optimiser step (``on_train_batch_end`` with a new ``global_step``: gradient accumulation counts
once) with the trainer's first optimiser, and logs λ1, the threshold and their ratio through
``pl_module.log`` (so they reach whatever logger the trainer has). Needs ``lightning`` (the
``monitor`` extra); the standalone ``pytorch_lightning`` package is used when ``lightning`` is
absent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # checked against one of the two packages (the same class)
    from lightning.pytorch.callbacks import Callback
else:
    try:
        from lightning.pytorch.callbacks import Callback
    except ImportError:  # pragma: no cover - the older standalone package
        try:
            from pytorch_lightning.callbacks import Callback
        except ImportError as e:
            raise ImportError(
                "landscope.monitor.lightning needs PyTorch Lightning: "
                "pip install 'landscope[monitor]' (or pip install lightning)"
            ) from e

from landscope.curvature.batches import map_tensors
from landscope.monitor.monitor import (
    MONITOR_TOL,
    SharpnessMonitor,
    check_batch,
    check_options,
    start_monitor,
)


class SharpnessCallback(Callback):
    """Sharpness monitoring inside ``lightning.pytorch.Trainer.fit``.

    Args:
        loss_fn: ``loss_fn(pl_module(X), y)``, mean-reduced (or ``None`` with ``batch_loss``).
        batch: the fixed batch to measure on, ``(X, y)`` or a dict (moved to the module's device at
            fit start).
        every, k, tol, edge, sinks, name, background, batch_loss, batch_weight, strict: as
            :class:`~landscope.monitor.SharpnessMonitor` (a measurement error is warned once and
            turns the monitor off; ``strict=True`` raises).
        log: also log ``{name}/lambda1``, ``/threshold``, ``/ratio`` with ``pl_module.log``.

    ``callback.monitor`` is the monitor (``None`` before fitting); its ``history`` holds the records.
    """

    def __init__(
        self,
        loss_fn: Callable | None,
        batch: Any,
        every: int = 50,
        k: int = 1,
        tol: float = MONITOR_TOL,
        edge: float = 0.9,
        sinks: object = (),
        name: str = "sharpness",
        background: bool | str = False,
        log: bool = True,
        *,
        batch_loss: Callable | None = None,
        batch_weight: Callable | None = None,
        strict: bool = False,
    ) -> None:
        super().__init__()
        check_options(every, k, tol, edge, name)
        self.batch = check_batch(batch)
        self.loss_fn = loss_fn
        self.options = {
            "every": every,
            "k": k,
            "tol": tol,
            "edge": edge,
            "sinks": sinks,
            "name": name,
            "background": background,
            "batch_loss": batch_loss,
            "batch_weight": batch_weight,
            "strict": strict,
        }
        self.log_metrics, self.name = log, name
        self.monitor: SharpnessMonitor | None = None
        self._last_step: int | None = None
        self.error: BaseException | None = None  # what turned monitoring off at set-up

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        batch = map_tensors(lambda t: t.to(pl_module.device), self.batch)
        self.monitor, self.error = start_monitor(pl_module, self.loss_fn, batch, self.options)
        if self.monitor is None:
            return
        self._last_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.monitor is None or trainer.global_step == self._last_step:
            return  # no optimiser step since the last call (gradient accumulation)
        self._last_step = trainer.global_step
        n = len(self.monitor.history)
        self.monitor.step(trainer.optimizers[0])
        if self.log_metrics and len(self.monitor.history) > n:
            for tag, value in self.monitor.history[-1].scalars(self.name).items():
                pl_module.log(tag, value, on_step=True, on_epoch=False)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self.monitor is not None:
            self.monitor.close()  # records what is still measuring in the background
