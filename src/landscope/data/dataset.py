"""The in-memory data set type every loader returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Dataset:
    """Train and test tensors of one data set.

    ``X_*`` are float32 inputs (first dimension indexes samples); ``y_*`` are int64 class labels
    for classification or float targets for regression (``n_classes`` is then ``None``).
    """

    name: str
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int | None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample."""
        return tuple(self.X_train.shape[1:])

    @property
    def train(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(X_train, y_train)``: a Hessian set as the curvature operators take it."""
        return self.X_train, self.y_train

    @property
    def test(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(X_test, y_test)``."""
        return self.X_test, self.y_test
