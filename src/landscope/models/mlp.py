"""Multi-layer perceptrons, the workhorse of the papers' small-scale experiments."""

from __future__ import annotations

from torch import nn

from landscope.errors import InputError
from landscope.models.norms import check_norm, norm_layer

ACTIVATIONS = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def check_activation(activation: str) -> None:
    """Raise :class:`InputError` naming ``activation`` unless it is a key of :data:`ACTIVATIONS`."""
    if activation not in ACTIVATIONS:
        raise InputError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")


def mlp(
    in_features: int,
    out_features: int,
    width: int = 64,
    depth: int = 2,
    activation: str = "tanh",
    norm: str = "none",
) -> nn.Sequential:
    """``depth`` hidden layers of ``width`` units: ``Linear → norm → act`` repeated, then ``Linear``.

    ``norm`` is ``"none"``, ``"batch"`` (BatchNorm1d) or ``"layer"`` (LayerNorm), the normalisers
    [G] compares. ``mlp(40, 10, width=32, depth=2)`` is the 40→32→32→10 network of the benchmarks.
    """
    check_activation(activation)
    check_norm(norm)
    for name, v in (("in_features", in_features), ("out_features", out_features), ("width", width)):
        if not isinstance(v, int) or v < 1:
            raise InputError(f"mlp: {name} must be a positive integer, got {v!r}")
    if not isinstance(depth, int) or depth < 0:
        raise InputError(f"mlp: depth must be a non-negative integer, got {depth!r}")
    layers: list[nn.Module] = []
    d = in_features
    for _ in range(depth):
        layers.append(nn.Linear(d, width))
        if norm != "none":  # no Identity placeholder: keeps the layer indices of norm="none" as before
            layers.append(norm_layer(norm, width, 0))
        layers.append(ACTIVATIONS[activation]())
        d = width
    layers.append(nn.Linear(d, out_features))
    return nn.Sequential(*layers)
