"""ResNet-lite: a small basic-block ResNet for 1-D signals or images, optionally in Fixup form.

The residual network of [G]'s normalisation/initialisation comparison, kept small enough for CPU
runs: a stem convolution, ``stages`` stages of ``blocks_per_stage`` basic blocks with widths
``width·2^s`` (stride-2 downsampling entering every stage after the first), global average pooling,
then ``Linear``. A block is ``conv → norm → act → conv → norm``, added to an identity shortcut
(or a 1×1 stride-2 projection ``conv → norm`` where the shape changes), then ``act``.

With ``fixup=True`` the net is Fixup's (Zhang, Dauphin & Ma 2019, "Fixup initialization"): no
normalisation, convolutions without bias, a scalar bias before each convolution, activation and
the final ``Linear``, and a scalar multiplier at the end of each residual branch, so that
:func:`landscope.models.init.fixup_init` can make every branch output zero at initialisation.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from landscope.checks import positive_int
from landscope.errors import InputError
from landscope.models.cnn import Unsqueeze
from landscope.models.mlp import ACTIVATIONS, check_activation
from landscope.models.norms import check_norm, norm_layer

_CONVS = {1: nn.Conv1d, 2: nn.Conv2d}
_POOLS = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d}


class ScalarBias(nn.Module):
    """Fixup's scalar bias: ``x + b`` with one learnable ``b`` (initialised to 0)."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x + self.bias


class ScalarScale(nn.Module):
    """Fixup's scalar multiplier at the end of a residual branch (initialised to 1)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x * self.weight


def _fixup_or_identity(fixup: bool, module: type[nn.Module]) -> nn.Module:
    return module() if fixup else nn.Identity()


class BasicBlock(nn.Module):
    """``act(branch(x) + shortcut(x))`` with ``branch = conv → norm → act → conv → norm``.

    In Fixup form the branch is ``conv1(x + b1a) → + b1b → act → conv2(· + b2a) → ·s + b2b``,
    and a projection shortcut sees ``x + b1a``, as in the paper's reference code.
    """

    def __init__(
        self, c_in: int, c_out: int, stride: int, spatial_dims: int, norm: str, activation: str, fixup: bool
    ):
        super().__init__()
        conv = _CONVS[spatial_dims]
        bias = norm == "none" and not fixup
        # Registration order = forward order, so layers(model, first/last=k) counts them as read.
        self.bias1a = _fixup_or_identity(fixup, ScalarBias)
        self.conv1 = conv(c_in, c_out, 3, stride=stride, padding=1, bias=bias)
        self.norm1 = norm_layer(norm, c_out, spatial_dims)
        self.bias1b = _fixup_or_identity(fixup, ScalarBias)
        self.act1 = ACTIVATIONS[activation]()
        self.bias2a = _fixup_or_identity(fixup, ScalarBias)
        self.conv2 = conv(c_out, c_out, 3, stride=1, padding=1, bias=bias)
        self.norm2 = norm_layer(norm, c_out, spatial_dims)
        self.scale = _fixup_or_identity(fixup, ScalarScale)
        self.bias2b = _fixup_or_identity(fixup, ScalarBias)
        self.projects = stride != 1 or c_in != c_out
        self.shortcut: nn.Module = nn.Identity()
        if self.projects:
            self.shortcut = nn.Sequential(
                conv(c_in, c_out, 1, stride=stride, bias=bias), norm_layer(norm, c_out, spatial_dims)
            )
        self.act2 = ACTIVATIONS[activation]()

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch alone: zero at a Fixup initialisation."""
        out = self.act1(self.bias1b(self.norm1(self.conv1(self.bias1a(x)))))
        return self.bias2b(self.scale(self.norm2(self.conv2(self.bias2a(out)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.shortcut(self.bias1a(x)) if self.projects else x
        return self.act2(self.branch(x) + skip)


class ResNetLite(nn.Sequential):
    """The network :func:`resnet_lite` builds; ``fixup``, ``activation``, ``residual_blocks`` serve inits."""

    fc: nn.Linear  # the head, registered as a submodule by resnet_lite (declared for type checkers)

    def __init__(self, modules: OrderedDict[str, nn.Module], *, fixup: bool, activation: str):
        super().__init__(modules)
        self.fixup = fixup
        self.activation = activation

    @property
    def residual_blocks(self) -> list[BasicBlock]:
        """The residual blocks in forward order (their number is Fixup's L)."""
        return [m for m in self.modules() if isinstance(m, BasicBlock)]


def _spatial_dims(input_shape: tuple[int, ...]) -> tuple[int, int]:
    """``(in_channels, spatial_dims)`` of an input shape without the batch axis."""
    if (
        not isinstance(input_shape, (tuple, list))
        or not 1 <= len(input_shape) <= 3
        or any(not isinstance(d, int) or d < 1 for d in input_shape)
    ):
        raise InputError(
            f"input_shape must be (L,), (C, L) or (C, H, W) of positive integers, got {input_shape!r}"
        )
    if len(input_shape) == 1:
        return 1, 1
    return input_shape[0], len(input_shape) - 1


def resnet_lite(
    input_shape: tuple[int, ...],
    out_features: int,
    width: int = 16,
    stages: int = 3,
    blocks_per_stage: int = 1,
    norm: str = "none",
    activation: str = "relu",
    fixup: bool = False,
) -> ResNetLite:
    """A small basic-block ResNet: Conv1d for inputs ``(L,)`` or ``(C, L)``, Conv2d for ``(C, H, W)``.

    ``input_shape`` excludes the batch axis (MNIST-1D ``(40,)``, CIFAR-10 ``(3, 32, 32)``). Stage
    ``s`` has ``width·2^s`` channels; the stem keeps the resolution. ``fixup=True`` gives the Fixup
    architecture (scalar biases and multipliers, no norm: ``norm`` must be ``"none"``); apply
    :func:`landscope.models.init.fixup_init` to it, or build it with
    ``build_model("resnet_lite", ..., init="fixup")``.
    """
    in_channels, spatial_dims = _spatial_dims(input_shape)
    check_norm(norm)
    check_activation(activation)
    out_features = positive_int("resnet_lite: out_features", out_features)
    width = positive_int("resnet_lite: width", width)
    stages = positive_int("resnet_lite: stages", stages)
    blocks_per_stage = positive_int("resnet_lite: blocks_per_stage", blocks_per_stage)
    if fixup and norm != "none":
        raise InputError(
            f"resnet_lite: fixup=True replaces normalisation, so norm must be 'none', got {norm!r}"
        )
    conv = _CONVS[spatial_dims]
    mods: OrderedDict[str, nn.Module] = OrderedDict()
    mods["unsqueeze"] = Unsqueeze(spatial_dims)
    mods["stem"] = nn.Sequential(
        conv(in_channels, width, 3, padding=1, bias=norm == "none" and not fixup),
        norm_layer(norm, width, spatial_dims),
        _fixup_or_identity(fixup, ScalarBias),
        ACTIVATIONS[activation](),
    )
    blocks: list[nn.Module] = []
    c_in = width
    for s in range(stages):
        c_out = width * 2**s
        for b in range(blocks_per_stage):
            stride = 2 if s > 0 and b == 0 else 1
            blocks.append(BasicBlock(c_in, c_out, stride, spatial_dims, norm, activation, fixup))
            c_in = c_out
    mods["blocks"] = nn.Sequential(*blocks)
    mods["pool"] = _POOLS[spatial_dims](1)
    mods["flatten"] = nn.Flatten()
    mods["head_bias"] = _fixup_or_identity(fixup, ScalarBias)
    mods["fc"] = nn.Linear(c_in, out_features)
    return ResNetLite(mods, fixup=fixup, activation=activation)
