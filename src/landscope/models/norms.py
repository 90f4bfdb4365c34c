"""The normalisation layers of [G]'s comparison (none / BatchNorm / LayerNorm), for any layer type.

One place decides what "layer norm" means for each kind of layer, so the MLP, the CNNs and
ResNet-lite compare the same things: for a dense layer it is ``LayerNorm(features)``; for a
convolution it is ``GroupNorm(1, channels)``, the LayerNorm over (channels, spatial) of each sample.
"""

from __future__ import annotations

from torch import nn

from landscope.errors import InputError

NORMS = ("none", "batch", "layer")

_BATCH_NORMS = {0: nn.BatchNorm1d, 1: nn.BatchNorm1d, 2: nn.BatchNorm2d}


def check_norm(norm: str, where: str = "norm") -> None:
    """Raise :class:`InputError` naming ``norm`` unless it is one of :data:`NORMS`."""
    if norm not in NORMS:
        raise InputError(f"{where} must be one of {NORMS}, got {norm!r}")


def norm_layer(norm: str, channels: int, spatial_dims: int) -> nn.Module:
    """The ``norm`` layer for ``channels`` features with ``spatial_dims`` (0 dense, 1 or 2 conv)."""
    if norm == "batch":
        return _BATCH_NORMS[spatial_dims](channels)
    if norm == "layer":
        return nn.LayerNorm(channels) if spatial_dims == 0 else nn.GroupNorm(1, channels)
    return nn.Identity()
