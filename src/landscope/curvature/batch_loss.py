"""The loss of one batch as a function of the parameters, for every batch structure.

Internally every operator differentiates ``batch_loss(model, batch)``: the batch's mean loss,
computed by calling the model. It is evaluated inside ``torch.func.functional_call`` on a module
that holds the model, so the parameters are substituted *wherever the loss reads them*: in the
forward pass, and also in a regulariser that a loss closure computes over ``model.parameters()``.

Three ways to say what the loss is:

* ``batch_loss=f``: ``f(model, batch)`` returns the batch's mean loss (anything: several inputs,
  masks, auxiliary terms);
* ``loss_fn(outputs, targets)`` with ``(X, y)`` batches: the model is called as ``model(X)``,
  ``model(*X)`` for a tuple and ``model(**X)`` for a dict; an output with ``.logits`` (a Hugging
  Face ``ModelOutput``), a dict with ``"logits"`` or a tuple passes its logits (first element);
* neither, for dict batches: ``model(**batch).loss``, Hugging Face's own loss when the batch has
  ``labels``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from landscope.curvature.batches import Batch, is_pair
from landscope.errors import DataError, InputError

LossFn = Callable[[Any, Any], torch.Tensor]
BatchLoss = Callable[[nn.Module, Batch], torch.Tensor]


def model_arguments(inputs: Any) -> tuple[tuple, dict[str, Any]]:
    """How inputs are passed: ``model(X)``, ``model(*X)`` for a tuple or list, ``model(**X)`` for a dict."""
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs), {}
    return (inputs,), {}


def call_model(model: nn.Module, inputs: Any) -> Any:
    """``model`` called on ``inputs`` as :func:`model_arguments` says."""
    args, kwargs = model_arguments(inputs)
    return model(*args, **kwargs)


def outputs_of(out: Any) -> Any:
    """The tensor a ``loss_fn`` compares with the targets: logits of a ``ModelOutput`` or dict."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, Mapping):
        if isinstance(out.get("logits"), torch.Tensor):
            return out["logits"]
        raise DataError(
            f"the model returned a dict without 'logits' (keys: {sorted(out)}); "
            "pass batch_loss=f(model, batch) to say which output the loss reads"
        )
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise DataError(
        f"the model returned {type(out).__name__}, not a tensor, a dict with 'logits' "
        "or an output with .logits; pass batch_loss=f(model, batch)"
    )


def output_loss(out: Any) -> torch.Tensor:
    """The loss a model computed itself (Hugging Face: ``.loss`` when the batch has labels)."""
    loss = getattr(out, "loss", None)
    if loss is None and isinstance(out, Mapping):
        loss = out.get("loss")
    if not isinstance(loss, torch.Tensor):
        raise InputError(
            "no loss_fn or batch_loss was given and the model's output has no .loss "
            "(does the dict batch hold 'labels'?); pass loss_fn=… or batch_loss=…"
        )
    return loss


class PerSample:
    """A sum-reduced ``loss_fn`` divided by the chunk's sample count: the mean loss again."""

    def __init__(self, loss_fn: LossFn) -> None:
        self.loss_fn = loss_fn

    def __call__(self, out: Any, y: Any) -> torch.Tensor:
        n = out.shape[0] if isinstance(out, torch.Tensor) and out.dim() > 0 else 1
        return self.loss_fn(out, y) / n


def make_batch_loss(loss_fn: LossFn | None, batch_loss: BatchLoss | None) -> BatchLoss:
    """The ``batch_loss(model, batch)`` that an operator differentiates (see the module docstring)."""
    if batch_loss is not None:
        if loss_fn is not None:
            raise InputError(
                "pass loss_fn or batch_loss, not both (batch_loss computes the loss "
                "from the model and the batch)"
            )
        if not callable(batch_loss):
            raise InputError(
                f"batch_loss must be callable (model, batch) → loss, got {type(batch_loss).__name__}"
            )
        return batch_loss
    if loss_fn is not None:
        if not callable(loss_fn):
            raise InputError(f"loss_fn must be callable, got {type(loss_fn).__name__}")

        def from_loss_fn(model: nn.Module, batch: Batch) -> torch.Tensor:
            if not is_pair(batch):
                raise DataError(
                    f"loss_fn(outputs, targets) needs (X, y) batches, got a "
                    f"{type(batch).__name__}; pass batch_loss=f(model, batch) instead"
                )
            return loss_fn(outputs_of(call_model(model, batch[0])), batch[1])

        return from_loss_fn

    def model_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
        if not isinstance(batch, Mapping):
            raise InputError(
                f"no loss_fn or batch_loss was given, and the batches are "
                f"{type(batch).__name__}, not dicts whose model computes .loss; "
                "pass loss_fn=… or batch_loss=…"
            )
        return output_loss(model(**batch))

    return model_loss


class LossModule(nn.Module):
    """``forward(batch) = batch_loss(model, batch)``: what ``functional_call`` reparametrises.

    Its parameters and buffers are the model's, prefixed ``model.``.
    """

    def __init__(self, model: nn.Module, batch_loss: BatchLoss) -> None:
        super().__init__()
        self.model = model
        self.batch_loss = batch_loss

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.batch_loss(self.model, batch)
