"""Hugging Face adapter: ``Trainer(..., callbacks=[SharpnessCallback(batch=batch)])``.

``on_step_end`` gets the model and the optimiser (``kwargs["model"]``, ``kwargs["optimizer"]``;
Accelerate's wrapper is unwrapped) and steps a :class:`~landscope.monitor.SharpnessMonitor`. With
a dict batch holding ``labels`` and no ``loss_fn`` the monitored loss is the model's own
``.loss`` (no user code). With ``loss_fn`` and an ``(X, y)`` batch the monitor sees
``model(X)[output_key]`` (default ``"logits"``), so ``loss_fn(logits, y)`` is the loss. The
default optimiser of ``transformers.Trainer`` is AdamW, for which the
monitor measures the preconditioned sharpness against 38/η (β₁ = 0.9). Records go to
``callback.monitor.history``, to the sinks, and to the Trainer's log: each measurement asks for a
log event and adds ``sharpness/lambda1``, ``/threshold`` and ``/ratio`` to it, so they land in
``trainer.state.log_history`` and (with :meth:`SharpnessCallback.put_first`) in every
``report_to`` reporter. A measurement error is warned once and turns the monitor off: training
goes on. Needs ``transformers`` (the ``monitor`` extra).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

try:
    from transformers import TrainerCallback
except ImportError as e:  # pragma: no cover
    raise ImportError(
        "landscope.monitor.huggingface needs transformers: "
        "pip install 'landscope[monitor]' (or pip install transformers accelerate)"
    ) from e

from landscope.curvature.batches import map_tensors
from landscope.errors import InputError
from landscope.monitor.monitor import (
    MONITOR_TOL,
    SharpnessMonitor,
    check_batch,
    check_options,
    start_monitor,
)


class _Outputs(nn.Module):
    """``model(X)[key]`` for models returning a ``ModelOutput`` / dict; other outputs pass through."""

    def __init__(self, model: nn.Module, key: str) -> None:
        super().__init__()
        self.model, self.key = model, key

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.model(*args, **kwargs)
        if isinstance(out, torch.Tensor):
            return out
        if isinstance(out, dict) or hasattr(out, "keys"):
            if self.key not in out:
                raise InputError(
                    f"the model's output has no {self.key!r} (it has {list(out.keys())}); pass output_key="
                )
            return out[self.key]
        if isinstance(out, (tuple, list)):
            return out[0]
        raise InputError(f"cannot take {self.key!r} from a model output of type {type(out).__name__}")


class SharpnessCallback(TrainerCallback):
    """Sharpness monitoring inside ``transformers.Trainer``.

    Args:
        loss_fn: ``loss_fn(model(X)[output_key], y)``, mean-reduced; ``None`` (default) for a dict
            batch with ``labels``: the model's own ``.loss``.
        batch: the fixed batch to measure on, a dict (``input_ids``, ``attention_mask``,
            ``labels``…) or ``(X, y)`` (moved to the model's device).
        every, k, tol, edge, sinks, name, background, batch_loss, batch_weight, strict: as
            :class:`~landscope.monitor.SharpnessMonitor`.
        output_key: which field of the model's output ``loss_fn`` takes.
    """

    def __init__(
        self,
        loss_fn: Callable | None = None,
        batch: Any = None,
        every: int = 50,
        k: int = 1,
        tol: float = MONITOR_TOL,
        edge: float = 0.9,
        sinks: object = (),
        name: str = "sharpness",
        background: bool | str = False,
        output_key: str = "logits",
        *,
        batch_loss: Callable | None = None,
        batch_weight: Callable | None = None,
        strict: bool = False,
    ) -> None:
        check_options(every, k, tol, edge, name)
        self.batch = check_batch(batch)
        self.loss_fn, self.output_key = loss_fn, output_key
        self.options: dict[str, Any] = {
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
        self.monitor: SharpnessMonitor | None = None
        self._pending: Any = None  # a record not yet in the Trainer's log
        self.error: BaseException | None = None  # what turned monitoring off at set-up
        self._logged: Any = None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        model, optimizer = kwargs.get("model"), kwargs.get("optimizer")
        if model is None or optimizer is None:
            raise InputError("transformers did not pass the model and the optimizer to on_step_end")
        if self.error is not None:
            return control
        if self.monitor is None:
            device = next(model.parameters()).device
            batch = map_tensors(lambda t: t.to(device), self.batch)
            # the operator takes the logits of a ModelOutput itself; another field needs the wrapper
            watched = (
                model
                if self.output_key == "logits" or self.loss_fn is None
                else _Outputs(model, self.output_key)
            )
            self.monitor, self.error = start_monitor(watched, self.loss_fn, batch, self.options)
            if self.monitor is None:
                return control
        self.monitor.step(optimizer)
        last = self.monitor.last
        if last is not None and last is not self._logged:
            self._pending = last
            control.should_log = True  # a log event at this step carries the measurement
        return control

    def metrics(self) -> dict[str, float]:
        """The last measurement as ``{name/lambda1, name/threshold, name/ratio}`` (finite only)."""
        r = self.monitor.last if self.monitor is not None else None
        return {} if r is None else r.scalars(self.options["name"])

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> Any:
        """Add a new measurement to the Trainer's log.

        It lands in ``state.log_history`` and, when this callback runs before the reporters
        (:meth:`put_first`), in every ``report_to`` reporter.
        """
        if self._pending is None or logs is None:
            return control
        values = self.metrics()
        logs.update(values)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(values)
        else:
            state.log_history.append({**values, "step": state.global_step})
        self._logged, self._pending = self._pending, None
        return control

    def put_first(self, trainer: Any) -> SharpnessCallback:
        """Run before the Trainer's reporters, so that TensorBoard / W&B / … get the sharpness too.

        ``transformers.Trainer`` puts the callbacks it is given after its reporters, which have
        then already sent each log on; ``log_history`` gets the values either way.
        """
        handler = getattr(trainer, "callback_handler", None)
        if handler is None or not hasattr(handler, "callbacks"):
            raise InputError(f"put_first needs a transformers.Trainer, got {type(trainer).__name__}")
        handler.callbacks = [self] + [c for c in handler.callbacks if c is not self]
        return self

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.monitor is not None:
            self.monitor.close()  # records what is still measuring in the background
        return control
