"""The mode a model is evaluated in for a curvature measurement, entered and left exactly.

A measurement must see a fixed, deterministic function of the parameters, and must leave the
model as it found it (flags, BatchNorm running statistics, the global RNG, the attention kernel).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch
from torch import nn

# layers whose train mode means batch statistics: the only ones "train" mode keeps training
BATCH_STATISTICS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


@contextlib.contextmanager
def math_attention() -> Iterator[None]:
    """Attention on kernels with derivatives of every order: the math ``scaled_dot_product_attention``.

    The fused kernels (flash, memory-efficient, and the CPU flash kernel PyTorch picks by default)
    have no derivative of their backward, so a Hessian product through attention fails on them;
    ``nn.MultiheadAttention``'s and ``nn.TransformerEncoderLayer``'s native fast path (taken in
    eval mode where no input requires grad, as under forward-mode AD) has no forward derivative.
    """
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3: the older switch
        kernel = torch.backends.cuda.sdp_kernel(
            enable_flash=False, enable_math=True, enable_mem_efficient=False
        )
    else:
        kernel = sdpa_kernel([SDPBackend.MATH])
    mha = getattr(torch.backends, "mha", None)
    fast = mha.get_fastpath_enabled() if mha is not None else None
    try:
        if mha is not None:
            mha.set_fastpath_enabled(False)
        with kernel:
            yield
    finally:
        if mha is not None:
            mha.set_fastpath_enabled(fast)


def cuda_devices(*where: nn.Module | torch.Tensor | torch.device | None) -> list[torch.device]:
    """The CUDA devices of modules' parameters and buffers, tensors or devices: what to fork.

    ``torch.random.fork_rng`` always forks the CPU generator; a block that draws on a GPU must
    name that GPU too. One rule for every forked block, so none leaves a GPU's RNG advanced.
    """
    found: dict[torch.device, None] = {}
    for w in where:
        if isinstance(w, nn.Module):
            devs = [t.device for t in (*w.parameters(), *w.buffers())]
        elif isinstance(w, torch.Tensor):
            devs = [w.device]
        else:
            devs = [torch.device(w)] if w is not None else []
        found.update((d, None) for d in devs if d.type == "cuda")
    return list(found)


@contextlib.contextmanager
def kept_flags(model: nn.Module) -> Iterator[None]:
    """Every module's ``training`` flag restored on exit, whatever the block set them to."""
    modules = list(model.modules())
    flags = [m.training for m in modules]
    try:
        yield
    finally:
        for m, f in zip(modules, flags, strict=True):
            m.training = f


@contextlib.contextmanager
def model_mode(
    model: nn.Module,
    mode: Literal["eval", "train"],
    *,
    dropout: bool = False,
    dropout_seed: int = 0,
    device: torch.device | None = None,
) -> Iterator[None]:
    """Evaluate ``model`` in ``mode`` inside the block; restore it exactly afterwards.

    ``"eval"``: every module in eval mode. ``"train"`` without ``dropout`` turns training on *only*
    for the batch-statistics layers (BatchNorm, InstanceNorm), without updating their running
    statistics; every other module is in eval mode, so modules that read ``self.training``
    themselves (Hugging Face attention applies its dropout that way) are deterministic too. With
    ``dropout`` the whole model trains and the masks are fixed by ``dropout_seed``. Attention runs
    on the math kernel (:func:`math_attention`); the global RNG is forked.
    """
    tracked = {m: m.track_running_stats for m in model.modules() if isinstance(m, BATCH_STATISTICS)}
    rng = torch.random.fork_rng(devices=cuda_devices(device))
    try:
        with kept_flags(model), rng, math_attention():
            if mode == "train":
                model.train(dropout)
                for norm in tracked:
                    norm.train()
                    norm.track_running_stats = False  # batch statistics, running ones untouched
                if dropout:
                    torch.manual_seed(dropout_seed)
            else:
                model.eval()
            yield
    finally:
        for norm, t in tracked.items():
            norm.track_running_stats = t
