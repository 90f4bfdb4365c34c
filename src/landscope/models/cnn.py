"""Small convolutional networks: 1-D for MNIST-1D-shaped signals, 2-D for images.

Both are ``Conv → norm → act`` blocks with stride 2 (each halves the length or the image side),
global average pooling, then one ``Linear``: the "small CNN" of DESIGN §5, the same in 1-D and 2-D
so a result on MNIST-1D and one on Fashion-MNIST / CIFAR-10 compare like with like.
"""

from __future__ import annotations

from torch import nn

from landscope.errors import InputError
from landscope.models.mlp import ACTIVATIONS, check_activation
from landscope.models.norms import NORMS, check_norm, norm_layer

__all__ = ["cnn1d", "cnn2d", "NORMS"]

_CONVS = {1: nn.Conv1d, 2: nn.Conv2d}
_POOLS = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d}


class Unsqueeze(nn.Module):
    """Add the channel axis to inputs given without one: MNIST-1D rows ``(N, L)`` → ``(N, 1, L)``.

    Inputs that already have ``spatial_dims + 2`` axes pass through unchanged.
    """

    def __init__(self, spatial_dims: int = 1):
        super().__init__()
        self.spatial_dims = spatial_dims

    def forward(self, x):
        return x.unsqueeze(1) if x.dim() == self.spatial_dims + 1 else x


def _small_cnn(
    spatial_dims: int,
    in_channels: int,
    out_features: int,
    channels: tuple[int, ...],
    kernel_size: int,
    norm: str,
    activation: str,
) -> nn.Sequential:
    check_norm(norm)
    check_activation(activation)
    if not channels or any(not isinstance(c, int) or c < 1 for c in channels):
        raise InputError(f"channels must be positive integers, got {channels!r}")
    for name, v in (
        ("in_channels", in_channels),
        ("out_features", out_features),
        ("kernel_size", kernel_size),
    ):
        if not isinstance(v, int) or v < 1:
            raise InputError(f"cnn: {name} must be a positive integer, got {v!r}")
    layers: list[nn.Module] = [Unsqueeze(spatial_dims)]
    c_in = in_channels
    for c in channels:
        layers += [
            _CONVS[spatial_dims](c_in, c, kernel_size, stride=2, padding=kernel_size // 2),
            norm_layer(norm, c, spatial_dims),
            ACTIVATIONS[activation](),
        ]
        c_in = c
    layers += [_POOLS[spatial_dims](1), nn.Flatten(), nn.Linear(c_in, out_features)]
    return nn.Sequential(*layers)


def cnn1d(
    in_channels: int = 1,
    out_features: int = 10,
    channels: tuple[int, ...] = (16, 32),
    kernel_size: int = 5,
    norm: str = "none",
    activation: str = "relu",
) -> nn.Sequential:
    """``Conv1d → norm → act`` blocks with stride 2, global average pooling, then ``Linear``.

    Takes ``(N, C, L)``, or ``(N, L)`` when ``in_channels == 1``. ``norm="layer"`` is
    ``GroupNorm(1, C)``: LayerNorm over (channels, length) of each sample.
    """
    return _small_cnn(1, in_channels, out_features, channels, kernel_size, norm, activation)


def cnn2d(
    in_channels: int = 1,
    out_features: int = 10,
    channels: tuple[int, ...] = (16, 32),
    kernel_size: int = 3,
    norm: str = "none",
    activation: str = "relu",
) -> nn.Sequential:
    """``Conv2d → norm → act`` blocks with stride 2, global average pooling, then ``Linear``.

    For images ``(N, C, H, W)`` (Fashion-MNIST ``(1, 28, 28)``, CIFAR-10 ``(3, 32, 32)``), or
    ``(N, H, W)`` when ``in_channels == 1``; otherwise as :func:`cnn1d`.
    """
    return _small_cnn(2, in_channels, out_features, channels, kernel_size, norm, activation)
