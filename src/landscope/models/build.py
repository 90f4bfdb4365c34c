"""``build_model``: one entry point from a run config's ``model:`` section to a seeded network."""

from __future__ import annotations

import math

import torch
from torch import nn

from landscope.checks import int_at_least
from landscope.errors import InputError
from landscope.models.cnn import cnn1d, cnn2d
from landscope.models.init import INITS, META_INITS, Batch, apply_init
from landscope.models.losses import LossFn
from landscope.models.mlp import ACTIVATIONS, mlp
from landscope.models.norms import NORMS
from landscope.models.resnet import resnet_lite

MODELS = ("mlp", "cnn", "resnet_lite")


def _positive_int(key: str, value: object, minimum: int = 1) -> int:
    """``value`` if it is an integer ≥ ``minimum`` (1 or 0), else an error naming ``key``."""
    return int_at_least(f"model: {key}", value, minimum)


def _one_of(key: str, value: object, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise InputError(f"model: unknown {key} {value!r}; valid: {', '.join(sorted(valid))}")
    return value


def _input_shape(input_shape: object) -> tuple[int, ...]:
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list, torch.Size)) else None
    if (
        not shape
        or len(shape) > 3
        or any(not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in shape)
    ):
        raise InputError(
            f"model: input_shape must be (L,), (C, L) or (C, H, W) of positive integers "
            f"(no batch axis), got {input_shape!r}"
        )
    return shape


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    n_outputs: int,
    *,
    width: int = 64,
    depth: int = 2,
    activation: str = "tanh",
    norm: str = "none",
    init: str = "default",
    init_scale: float = 1.0,
    seed: int = 0,
    loss_fn: str | LossFn | None = None,
    init_batch: Batch | None = None,
    init_steps: int | None = None,
) -> nn.Module:
    """The network a run config names, initialised by ``init``, its parameters fixed by ``seed``.

    ``input_shape`` excludes the batch axis: ``(40,)`` for MNIST-1D, ``(1, 28, 28)`` for
    Fashion-MNIST, ``(3, 32, 32)`` for CIFAR-10. How ``width`` and ``depth`` map onto each model:

    - ``mlp``: ``depth`` hidden layers of ``width`` units (:func:`~landscope.models.mlp.mlp`);
      an ``nn.Flatten`` comes first when the input has more than one axis.
    - ``cnn``: ``depth`` ≥ 1 stride-2 conv blocks with ``width·2^i`` channels (the first has
      ``width``), Conv1d (kernel 5) for ``(L,)`` / ``(C, L)`` inputs, Conv2d (kernel 3) for
      ``(C, H, W)`` (:func:`~landscope.models.cnn.cnn1d`, :func:`~landscope.models.cnn.cnn2d`).
    - ``resnet_lite``: base width ``width`` and ``depth`` ≥ 1 stages of one basic block each
      (:func:`~landscope.models.resnet.resnet_lite`); ``init="fixup"`` builds its Fixup form.

    ``norm`` is ``none`` | ``batch`` | ``layer``; ``init`` one of :data:`INITS` (see
    :func:`~landscope.models.init.apply_init`; ``metainit``/``gradinit`` need ``loss_fn`` and
    ``init_batch=(X, y)``). Parameters are drawn inside ``torch.random.fork_rng`` from the CPU
    generator seeded with ``seed``: the same seed gives the same weights, and the caller's global
    RNG is left as it was. Bad values raise :class:`InputError` naming the key and the value.
    """
    _one_of("name", name, MODELS)
    shape = _input_shape(input_shape)
    n_outputs = _positive_int("n_outputs", n_outputs)
    width = _positive_int("width", width)
    depth = _positive_int("depth", depth, minimum=0 if name == "mlp" else 1)
    _one_of("activation", activation, tuple(ACTIVATIONS))
    _one_of("norm", norm, NORMS)
    _one_of("init", init, INITS)
    if (
        isinstance(init_scale, bool)
        or not isinstance(init_scale, (int, float))
        or not math.isfinite(init_scale)
        or init_scale <= 0
    ):
        raise InputError(f"model: init_scale must be a positive finite number, got {init_scale!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InputError(f"model: seed must be an integer, got {seed!r}")
    if init_steps is not None:
        _positive_int("init_steps", init_steps)
    fixup = init == "fixup"
    if fixup and name != "resnet_lite":
        raise InputError(f"model: init 'fixup' needs a residual network (name 'resnet_lite'), got {name!r}")
    if fixup and norm != "none":
        raise InputError(f"model: init 'fixup' replaces normalisation, so norm must be 'none', got {norm!r}")

    if (
        init in META_INITS
        and isinstance(init_batch, (tuple, list))
        and init_batch
        and isinstance(init_batch[0], torch.Tensor)
        and tuple(init_batch[0].shape[1:]) != shape
    ):
        raise InputError(
            f"model: init_batch X has samples of shape {tuple(init_batch[0].shape[1:])}, "
            f"expected input_shape {shape}"
        )

    # Only the CPU generator is seeded (not torch.manual_seed, which would also reseed CUDA's).
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        model = _architecture(name, shape, n_outputs, width, depth, activation, norm, fixup)
        init_seed = int(torch.randint(0, 2**62, ()))  # continues the seeded stream for the init
    apply_init(
        model,
        init,
        init_scale=init_scale,
        loss_fn=loss_fn,
        init_batch=init_batch,
        init_steps=init_steps,
        seed=init_seed,
    )
    return model


def _architecture(
    name: str,
    shape: tuple[int, ...],
    n_outputs: int,
    width: int,
    depth: int,
    activation: str,
    norm: str,
    fixup: bool,
) -> nn.Module:
    if name == "mlp":
        net = mlp(math.prod(shape), n_outputs, width=width, depth=depth, activation=activation, norm=norm)
        return nn.Sequential(nn.Flatten(), *net) if len(shape) > 1 else net
    if name == "cnn":
        channels = tuple(width * 2**i for i in range(depth))
        in_channels = 1 if len(shape) == 1 else shape[0]
        make = cnn2d if len(shape) == 3 else cnn1d
        return make(in_channels, n_outputs, channels=channels, norm=norm, activation=activation)
    return resnet_lite(
        shape, n_outputs, width=width, stages=depth, norm=norm, activation=activation, fixup=fixup
    )
