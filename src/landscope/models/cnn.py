"""A small 1-D convolutional network for MNIST-1D-shaped inputs (and, by ``in_channels``, others)."""

from __future__ import annotations

from torch import nn

from landscope.errors import InputError
from landscope.models.mlp import ACTIVATIONS

NORMS = ("none", "batch", "layer")


class _Unsqueeze(nn.Module):
    """``(N, L)`` → ``(N, 1, L)``: MNIST-1D rows become one-channel signals."""

    def forward(self, x):
        return x.unsqueeze(1) if x.dim() == 2 else x


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm1d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)  # LayerNorm over (channels, length), per sample
    return nn.Identity()


def cnn1d(in_channels: int = 1, out_features: int = 10, channels: tuple[int, ...] = (16, 32),
          kernel_size: int = 5, norm: str = "none", activation: str = "relu") -> nn.Sequential:
    """``Conv1d → norm → act`` blocks with stride 2, global average pooling, then ``Linear``."""
    if norm not in NORMS:
        raise InputError(f"norm must be one of {NORMS}, got {norm!r}")
    if activation not in ACTIVATIONS:
        raise InputError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if not channels or any(not isinstance(c, int) or c < 1 for c in channels):
        raise InputError(f"channels must be positive integers, got {channels!r}")
    layers: list[nn.Module] = [_Unsqueeze()]
    c_in = in_channels
    for c in channels:
        layers += [nn.Conv1d(c_in, c, kernel_size, stride=2, padding=kernel_size // 2),
                   _norm(norm, c), ACTIVATIONS[activation]()]
        c_in = c
    layers += [nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(c_in, out_features)]
    return nn.Sequential(*layers)
