"""Models of the experiments: MLP and a small CNN now; ResNet-lite, inits follow (DESIGN §5)."""

from landscope.models.cnn import cnn1d
from landscope.models.losses import LOSSES, ce, get_loss, mse
from landscope.models.mlp import mlp

__all__ = ["mlp", "cnn1d", "get_loss", "mse", "ce", "LOSSES"]
