"""Initialisation schemes of [G]'s comparison: default, scaled, Fixup, MetaInit, GradInit.

Each scheme changes a freshly built model's parameters in place; :func:`apply_init` dispatches by
name (``build_model(init=...)`` calls it). The two meta-initialisations learn one scalar per
parameter tensor on a batch, as their papers do, and return an :class:`InitTrace` of their
objective so a caller can see that it fell.

Conventions shared by :func:`metainit`, :func:`gradinit` and :func:`gradient_quotient`:

- they run the model functionally (``torch.func.functional_call``) with BatchNorm in training
  mode (batch statistics, the mode in which the model will be trained) but on *copies* of its
  buffers, and with dropout off (GradInit's reference code does the same), so the model's running
  statistics and ``training`` flags are as before;
- they fork the global RNG and draw what they need from a ``torch.Generator`` seeded by ``seed``:
  same seed and batch → same parameters, and the caller's RNG is untouched;
- ``loss_fn`` is a loss name (``"mse"``, ``"ce"``) or a mean-reduced ``loss_fn(outputs, targets)``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call

from landscope.checks import positive_int, tensor_pair
from landscope.curvature.modes import cuda_devices, kept_flags
from landscope.errors import InputError
from landscope.models.losses import LossFn, get_loss
from landscope.models.resnet import ResNetLite, ScalarBias, ScalarScale

INITS = ("default", "scaled", "fixup", "metainit", "gradinit")
META_INITS = ("metainit", "gradinit")

# Fixup's m: weight layers per residual branch of a basic block.
_BRANCH_LAYERS = 2

# The meta-initialisations' default step counts, their papers' (see metainit and gradinit).
METAINIT_STEPS = 500  # Dauphin & Schoenholz 2019, Figure 2: metainit(..., steps=500)
GRADINIT_STEPS = 390  # Zhu et al. 2021, launch/run_gradinit.sh: --gradinit-iters 390 (one epoch)


@dataclass(frozen=True)
class InitTrace:
    """What a meta-initialisation did.

    ``objective`` holds the objective before each of the ``steps`` updates and once more after the
    last (``steps + 1`` values): the gradient quotient for MetaInit, the loss on the held-out half
    after one gradient step for GradInit. ``selected`` is the index in ``objective`` of the
    iterate the model was given (MetaInit: the lowest; GradInit: the last). ``multipliers`` maps
    each rescaled parameter to the factor its tensor was multiplied by. ``constraint_steps`` counts
    GradInit's steps spent on the constraint ‖g‖ ≤ γ.
    """

    name: str
    objective: tuple[float, ...]
    multipliers: dict[str, float] = field(default_factory=dict)
    selected: int = -1
    constraint_steps: int = 0


# ----------------------------------------------------------------------------- simple schemes


def scaled_init(model: nn.Module, scale: float) -> None:
    """Multiply every weight matrix and convolution kernel (tensors of ≥ 2 dims) by ``scale``.

    *Ours*: [G]'s "large initialisation → high early curvature" knob. Biases and normalisation
    parameters are left as they are.
    """
    _check_scale(scale)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(scale)


def fixup_init(model: nn.Module, seed: int = 0) -> None:
    """Fixup (Zhang, Dauphin & Ma 2019) on a ``resnet_lite(..., fixup=True)`` network.

    The paper's three rules: (1) the final ``Linear`` (weight and bias) and the last convolution of
    every residual branch start at zero; (2) the other branch convolutions are He-initialised and
    scaled by L^(−1/(2m−2)), with L residual branches and m = 2 layers per branch; (3) scalar biases
    start at 0 and branch multipliers at 1. He initialisation is normal with std gain/√fan_out, as
    in the reference code, with the gain of the model's activation (√2 for ReLU); projection
    shortcuts are He-initialised without scaling and the stem keeps PyTorch's default (both as in
    the reference code). Draws come from a generator seeded by ``seed``.
    """
    if not isinstance(model, ResNetLite) or not model.fixup:
        got = f"resnet_lite(fixup={model.fixup})" if isinstance(model, ResNetLite) else type(model).__name__
        raise InputError(
            f"init 'fixup' needs resnet_lite(..., fixup=True) (build_model('resnet_lite', "
            f"init='fixup') builds it), got {got}"
        )
    gen = torch.Generator().manual_seed(seed)
    blocks = model.residual_blocks
    branch_scale = len(blocks) ** (-1.0 / (2 * _BRANCH_LAYERS - 2))
    gain = _gain(model.activation)
    with torch.no_grad():
        for block in blocks:
            _he_normal_(block.conv1.weight, gain * branch_scale, gen)
            block.conv2.weight.zero_()
            if block.projects:
                # a projecting block's shortcut is Sequential(conv, norm) (BasicBlock.__init__)
                projection = block.shortcut.get_submodule("0")
                assert isinstance(projection, nn.modules.conv._ConvNd)
                _he_normal_(projection.weight, gain, gen)
        for m in model.modules():
            if isinstance(m, ScalarBias):
                m.bias.zero_()
            elif isinstance(m, ScalarScale):
                m.weight.fill_(1.0)
        model.fc.weight.zero_()
        model.fc.bias.zero_()


def _gain(activation: str) -> float:
    match activation:
        case "relu" | "tanh" | "sigmoid":
            return nn.init.calculate_gain(activation)
        case "identity":
            return 1.0
        case _:
            return nn.init.calculate_gain("relu")  # gelu, elu: ReLU-like


def _he_normal_(w: torch.Tensor, gain: float, gen: torch.Generator) -> None:
    fan_out = w.shape[0] * math.prod(w.shape[2:])
    w.copy_(torch.empty(w.shape, dtype=w.dtype).normal_(0.0, gain / math.sqrt(fan_out), generator=gen))


# ----------------------------------------------------------------------------- shared machinery

Batch = tuple[torch.Tensor, torch.Tensor]


def _sum(terms: Iterable[torch.Tensor]) -> torch.Tensor:
    """The builtin ``sum`` of per-parameter terms, typed as the tensor it is (not ``Tensor | 0``)."""
    total = sum(terms)
    assert isinstance(total, torch.Tensor)  # never empty: _grads (autograd.grad) refuses no inputs
    return total


def _explicit_batch_norm(m: nn.modules.batchnorm._BatchNorm) -> Callable[[torch.Tensor], torch.Tensor]:
    """``m``'s forward written with plain tensor ops, which have derivatives of every order.

    MetaInit differentiates through a double backward (third derivatives); ``F.batch_norm`` has
    no third derivative in torch 2.14 ("batch_norm does not support 3rd+ order derivatives"). In
    training mode the batch statistics are used (biased variance, as BatchNorm normalises) and
    the running statistics are left alone (the caller works on copies of the buffers anyway).
    """

    def forward(x: torch.Tensor) -> torch.Tensor:
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        if m.training or m.running_mean is None or m.running_var is None:  # both or neither
            dims = [0, *range(2, x.dim())]
            mean = x.mean(dims, keepdim=True)
            var = ((x - mean) ** 2).mean(dims, keepdim=True)
        else:
            mean, var = m.running_mean.view(shape), m.running_var.view(shape)
        out = (x - mean) / torch.sqrt(var + m.eps)
        if m.affine:
            out = out * m.weight.view(shape) + m.bias.view(shape)
        return out

    return forward


@contextlib.contextmanager
def _functional_mode(model: nn.Module, seed: int) -> Iterator[dict[str, torch.Tensor]]:
    """BatchNorm in training mode (explicit ops), dropout off, forked RNG; yields buffer copies."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    try:
        with kept_flags(model), torch.random.fork_rng(devices=cuda_devices(model)):
            torch.default_generator.manual_seed(seed)
            model.train()
            for m in model.modules():
                if isinstance(m, nn.modules.dropout._DropoutNd):
                    m.eval()
            for m in norms:
                # an instance attribute shadowing the method: mypy objects to assigning methods
                m.forward = _explicit_batch_norm(m)  # type: ignore[method-assign, assignment]
            yield {n: b.clone() for n, b in model.named_buffers()}
    finally:
        for m in norms:
            m.__dict__.pop("forward", None)


def _loss(
    model: nn.Module,
    loss_fn: LossFn,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    X: torch.Tensor,
    y: torch.Tensor,
) -> torch.Tensor:
    return loss_fn(functional_call(model, {**params, **buffers}, (X,)), y)


def _grads(out: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Gradients of ``out`` w.r.t. ``inputs``, graph kept for the next derivative; 0 for unused ones."""
    gs = torch.autograd.grad(out, inputs, create_graph=True, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(gs, inputs, strict=True)]


def _gq(
    model: nn.Module,
    loss_fn: LossFn,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    X: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    eps_rel: float = 0.0,
) -> torch.Tensor:
    """GQ = (1/N)‖(g − Hg) ⊘ (g + ε·sign g) − 1‖₁ (MetaInit eq. 1), differentiable in ``params``.

    Hg is the gradient of ½‖g‖², the Hessian-vector product by double backward; ε keeps the
    quotient finite where g ≈ 0, with the sign of g as in the paper's reference code.
    """
    xs = list(params.values())
    g = _grads(_loss(model, loss_fn, params, buffers, X, y), xs)
    hg = _grads(_sum((gi * gi).sum() for gi in g) / 2, xs)
    if eps_rel > 0:
        mean_abs = sum(gi.detach().abs().sum() for gi in g) / sum(x.numel() for x in xs)
        eps = max(eps, eps_rel * float(mean_abs))
    total = _sum(
        ((gi - hi) / (gi + eps * torch.where(gi >= 0, 1.0, -1.0).detach()) - 1).abs().sum()
        for gi, hi in zip(g, hg, strict=True)
    )
    return total / sum(x.numel() for x in xs)


def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def _require(init: str, loss_fn: object, batch: object) -> None:
    missing = [k for k, v in (("loss_fn", loss_fn), ("init_batch=(X, y)", batch)) if v is None]
    if missing:
        raise InputError(f"init {init!r} needs {' and '.join(missing)}, got None")


def _resolve_loss(loss_fn: str | LossFn, init: str) -> LossFn:
    if isinstance(loss_fn, str):
        return get_loss(loss_fn)
    if not callable(loss_fn):
        raise InputError(f"init {init!r}: loss_fn must be a loss name or a callable, got {loss_fn!r}")
    return loss_fn


def _check_batch(batch: Batch, model: nn.Module, init: str, min_n: int = 1) -> Batch:
    """``(X, y)`` on the model's device, ``X`` in its dtype; the error names what is wrong."""
    X, y = tensor_pair(f"init {init!r}: init_batch", batch)
    if X.dim() == 0 or len(X) != len(y) or len(X) < min_n:
        raise InputError(
            f"init {init!r}: init_batch needs X and y with the same number of samples "
            f"(at least {min_n}), got X {tuple(X.shape)} and y {tuple(y.shape)}"
        )
    p = next(model.parameters())
    X = X.to(device=p.device, dtype=p.dtype) if X.is_floating_point() else X.to(p.device)
    y = y.to(device=p.device, dtype=p.dtype) if y.is_floating_point() else y.to(p.device)
    return X, y


def _check_steps(steps: int, init: str) -> int:
    return positive_int(f"init {init!r}: init_steps", steps)


def _check_scale(scale: float) -> None:
    if (
        isinstance(scale, bool)
        or not isinstance(scale, (int, float))
        or not math.isfinite(scale)
        or scale <= 0
    ):
        raise InputError(f"init_scale must be a positive finite number, got {scale!r}")


# ----------------------------------------------------------------------------- MetaInit


def gradient_quotient(
    model: nn.Module, loss_fn: str | LossFn, batch: Batch, eps: float = 1e-5, eps_rel: float = 0.0
) -> float:
    """MetaInit's gradient quotient of ``model`` on ``batch`` (see :func:`metainit`).

    GQ(θ) = (1/N)‖(g − Hg) ⊘ (g + ε·sign g) − 1‖₁ over all N trainable parameters: the mean
    relative change of the gradient after one gradient step, to first order; 0 where curvature is
    negligible, ≫ 1 where a unit step overshoots. ε = max(``eps``, ``eps_rel`` · mean|g|); the
    defaults give the paper's ε = 1e-5, the objective :func:`metainit` descends by default.
    """
    _require("metainit", loss_fn, batch)
    loss_fn = _resolve_loss(loss_fn, "metainit")
    X, y = _check_batch(batch, model, "metainit")
    with _functional_mode(model, 0) as buffers:
        params = {n: p.clone().requires_grad_() for n, p in _trainable(model).items()}
        return _gq(model, loss_fn, params, buffers, X, y, eps, eps_rel).item()


def metainit(
    model: nn.Module,
    loss_fn: str | LossFn,
    batch: Batch,
    *,
    steps: int = METAINIT_STEPS,
    lr: float = 0.1,
    momentum: float = 0.9,
    eps: float = 1e-5,
    eps_rel: float = 0.0,
    min_scale: float = 0.01,
    max_samples: int | None = 128,
    seed: int = 0,
) -> InitTrace:
    """MetaInit (Dauphin & Schoenholz 2019): rescale each weight tensor to lower the gradient quotient.

    The paper's algorithm (its Figure 2, "Basic Pytorch code for the MetaInit algorithm"): each
    weight tensor (≥ 2 dims) is written as its norm times its direction, and the norms follow
    signSGD with momentum on GQ (:func:`gradient_quotient`), whose gradient needs Hg and hence third
    derivatives (a backward pass through a double backward). The defaults are Figure 2's:
    ``steps`` = 500, ``lr`` = 0.1, ``momentum`` = 0.9, ``eps`` = 1e-5. As there, the momentum
    buffer is added to the norm itself (``lr`` is in norm units), and biases and normalisation
    parameters count in GQ but are not rescaled.

    Simplifications and changes, ours:

    - one fixed batch (``batch``: real data; at most ``max_samples`` of it, a seeded subset)
      instead of Figure 2's fresh N(0, 1) inputs with uniformly random labels at every step
      (Figure 2 leaves the batch size to the caller; we found none stated). Each step needs
      third derivatives (~4 evaluations of GQ): on one CPU thread ~0.05 s for the init_norm
      experiment's ResNet-lite (width 8, 128 MNIST-1D samples), so the 500 steps take ~20-30 s,
      and ~0.4 s for a width-64 ResNet-lite (~3 min for 500), hence the sample cap;
    - each norm is kept ≥ ``min_scale`` × its starting value, so a signSGD overshoot cannot flip a
      tensor's sign, and the model gets the iterate with the lowest objective seen
      (``trace.selected``), not the last. With momentum 0.9 a step can move a norm by up to
      ~10 × ``lr`` = 1, about the norms (1.4-2.4) of init_norm's tensors, so GQ oscillates
      through all 500 steps instead of settling: there (seeds 0-2) the last iterate's GQ was
      above the start's every time (up to 900×), the lowest came at step 409, 4 and 29, and one
      shortcut kernel ended at the floor.

    ``eps_rel`` > 0 sets ε = max(``eps``, ``eps_rel`` · mean|g|). The 20-step version of this
    function used 0.01: on a 3×-scaled CNN the paper's fixed ε first points towards larger
    weights, so its early steps gain little (15 steps on the tests' random data: GQ unchanged,
    against 110 → 9 with 0.01; 20 steps on 512 MNIST-1D samples: 36.6 → 16.6, against → 3.8).
    With the paper's 500 steps the fixed ε ends where 0.01 does (MNIST-1D: 0.67 both; random
    data: 1.20 vs 1.24), and on init_norm's model mean|g| ≈ 1e-3, so 0.01 · mean|g| ≈ 1e-5
    anyway: the default is the paper's ε.

    Returns the objective (GQ with that ε) before each step and after the last.
    """
    _require("metainit", loss_fn, batch)
    loss_fn = _resolve_loss(loss_fn, "metainit")
    X, y = _check_batch(batch, model, "metainit")
    steps = _check_steps(steps, "metainit")
    if max_samples is not None and (not isinstance(max_samples, int) or max_samples < 1):
        raise InputError(f"metainit: max_samples must be a positive integer or None, got {max_samples!r}")
    if max_samples is not None and len(X) > max_samples:
        keep = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))[:max_samples]
        X, y = X[keep.to(X.device)], y[keep.to(X.device)]
    base = _trainable(model)
    names = [n for n, p in base.items() if p.dim() >= 2 and bool(p.norm() > 0)]
    norm0 = torch.stack([base[n].norm() for n in names])
    direction = {n: base[n] / norm0[i] for i, n in enumerate(names)}
    norms, memory = norm0.clone(), torch.zeros_like(norm0)
    history: list[float] = []
    best = (math.inf, 0, norm0)
    with _functional_mode(model, seed) as buffers:
        for t in range(steps + 1):
            w = norms.clone().requires_grad_()
            params = {n: p.clone().requires_grad_() for n, p in base.items()}
            params.update({n: w[i] * direction[n] for i, n in enumerate(names)})
            gq = _gq(model, loss_fn, params, buffers, X, y, eps, eps_rel)
            history.append(gq.item())
            if history[-1] < best[0]:
                best = (history[-1], t, norms)
            if t == steps:
                break
            (dw,) = torch.autograd.grad(gq, w)
            memory = momentum * memory - lr * torch.sign(dw)
            norms = torch.maximum(norms + memory, min_scale * norm0)
    factors = dict(zip(names, (best[2] / norm0).tolist(), strict=True))
    _rescale(model, factors)
    return InitTrace("metainit", tuple(history), factors, selected=best[1])


# ----------------------------------------------------------------------------- GradInit


def gradinit(
    model: nn.Module,
    loss_fn: str | LossFn,
    batch: Batch,
    *,
    steps: int = GRADINIT_STEPS,
    lr: float = 0.05,
    eta: float = 0.1,
    gamma: float = 1.0,
    min_scale: float = 0.01,
    grad_clip: float = 1.0,
    batch_size: int | None = None,
    seed: int = 0,
) -> InitTrace:
    """GradInit (Zhu et al. 2021): per-tensor multipliers α that make the first SGD step effective.

    Every trainable tensor θᵢ becomes αᵢθᵢ (αᵢ = 1 at the start). ``batch`` is split in two: with
    ``perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))``, S is
    ``perm[:n // 2]`` and the held-out S̃ the rest. Each step takes the gradient g on S and, as
    the paper's constrained problem prescribes for SGD,

    - if ‖g‖₂ > γ: one Adam step on α that lowers ‖g‖₂ (the constraint ‖g‖ ≤ γ, handled by
      descending on it while it is violated, with Adam moments of its own, as the paper's code);
    - else: one Adam step on α that lowers L(S̃; θ_α − η g/‖g‖) / η, the loss on the held-out half
      after one SGD step.

    After each Adam step α is clamped to ≥ ``min_scale`` for weights and scalar multipliers and
    ≥ 0 for biases, and the gradient w.r.t. α to ±``grad_clip``. The defaults are the SGD settings
    of the authors' CIFAR-10 scripts (github.com/zhuchen03/gradinit, ``launch/run_gradinit.sh``
    with ``train_cifar.py``): ``steps`` = 390 (``--gradinit-iters 390``, one epoch of CIFAR-10 at
    batch 128; their DenseNet-100 and WRN-28-10 scripts run 780 at batch 64, also one epoch),
    Adam rate ``lr`` = 0.05 (``--gradinit-lr 5e-2``, their rate for ResNet-110 without
    BatchNorm, the nearest to an unnormalised ResNet-lite; 1e-3 for ResNet-110 with BatchNorm,
    1e-2 and 1e-1 for VGG-19 without and with it), η = 0.1 with the normalised gradient, γ = 1,
    lower bound 0.01, clip 1. On one CPU thread the 390 steps take ~8-9 s for the init_norm
    experiment's ResNet-lite on 512 MNIST-1D samples.

    Changes, ours: one fixed ``batch`` whose disjoint halves S, S̃ serve every step, where the
    reference code draws fresh minibatches from the training set at every step (S two draws of
    64, S̃ the first of them plus a fresh 64, so S̃ shares half of S); ``batch_size`` draws that
    many samples from each half every step (seeded), ``None`` uses the whole halves. As in the
    reference code the inner step treats g as a constant in the objective (first order), while the
    constraint step differentiates through g. Returns the held-out post-step loss
    L(S̃; θ_α − η g/‖g‖) before each step and after the last.
    """
    _require("gradinit", loss_fn, batch)
    loss_fn = _resolve_loss(loss_fn, "gradinit")
    X, y = _check_batch(batch, model, "gradinit", min_n=2)
    steps = _check_steps(steps, "gradinit")
    for name, v in (("lr", lr), ("eta", eta), ("gamma", gamma)):
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise InputError(f"gradinit: {name} must be a positive number, got {v!r}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise InputError(f"gradinit: batch_size must be a positive integer or None, got {batch_size!r}")
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(X), generator=gen).to(X.device)
    halves = perm[: len(X) // 2], perm[len(X) // 2 :]

    def draw(half: torch.Tensor) -> torch.Tensor:
        if batch_size is None or batch_size >= len(half):
            return half
        return half[torch.randperm(len(half), generator=gen)[:batch_size].to(half.device)]

    base = _trainable(model)
    names = list(base)
    dtype = base[names[0]].dtype
    alpha = torch.ones(len(names), dtype=dtype, device=X.device, requires_grad=True)
    floor = torch.tensor(
        [0.0 if n.rsplit(".", 1)[-1] == "bias" else min_scale for n in names], dtype=dtype, device=X.device
    )
    # Two Adams on the same α: the constraint and the objective keep separate moments (reference code).
    opt_objective = torch.optim.Adam([alpha], lr=lr)
    opt_constraint = torch.optim.Adam([alpha], lr=lr)
    history: list[float] = []
    n_constraint = 0
    with _functional_mode(model, seed) as buffers:
        for t in range(steps + 1):
            s, s_tilde = draw(halves[0]), draw(halves[1])
            params = {n: alpha[i] * base[n] for i, n in enumerate(names)}
            g = _grads(_loss(model, loss_fn, params, buffers, X[s], y[s]), list(params.values()))
            gnorm = torch.sqrt(_sum((gi * gi).sum() for gi in g))
            unit = [(gi / gnorm.clamp_min(torch.finfo(dtype).tiny)).detach() for gi in g]
            stepped = {n: params[n] - eta * u for n, u in zip(names, unit, strict=True)}
            after = _loss(model, loss_fn, stepped, buffers, X[s_tilde], y[s_tilde])
            history.append(after.item())
            if t == steps:
                break
            constrained = bool(gnorm > gamma)
            n_constraint += constrained
            objective, opt = (gnorm, opt_constraint) if constrained else (after / eta, opt_objective)
            opt.zero_grad()
            (alpha.grad,) = torch.autograd.grad(objective, alpha)
            alpha.grad.clamp_(-grad_clip, grad_clip)
            opt.step()
            with torch.no_grad():
                alpha.copy_(torch.maximum(alpha, floor))
    factors = dict(zip(names, alpha.detach().tolist(), strict=True))
    _rescale(model, factors)
    return InitTrace("gradinit", tuple(history), factors, selected=steps, constraint_steps=n_constraint)


def _rescale(model: nn.Module, factors: dict[str, float]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, f in factors.items():
            params[n].mul_(f)


# ----------------------------------------------------------------------------- dispatch


def apply_init(
    model: nn.Module,
    init: str,
    *,
    init_scale: float = 1.0,
    loss_fn: str | LossFn | None = None,
    init_batch: Batch | None = None,
    init_steps: int | None = None,
    seed: int = 0,
) -> InitTrace | None:
    """Apply the scheme named ``init`` (one of :data:`INITS`) to a freshly built ``model``.

    ``default`` leaves PyTorch's initialisation; ``scaled`` multiplies weights by ``init_scale``;
    ``fixup`` needs a Fixup ``resnet_lite``; ``metainit`` and ``gradinit`` need ``loss_fn`` and
    ``init_batch`` and start from the weights × ``init_scale`` (so they can be asked to repair a
    large init); ``init_steps`` overrides their step counts. A value that the scheme would ignore
    (``init_scale`` ≠ 1 for default/fixup, ``init_steps`` outside the meta-inits) is an error
    rather than silently dropped. Returns the meta-init's :class:`InitTrace`, else ``None``.
    """
    if init not in INITS:
        raise InputError(f"model: unknown init {init!r}; valid: {', '.join(sorted(INITS))}")
    _check_scale(init_scale)
    if init in ("default", "fixup") and init_scale != 1.0:
        raise InputError(
            f"model: init_scale={init_scale!r} has no effect with init {init!r}; "
            f"use init 'scaled' (or leave init_scale at 1.0)"
        )
    if init_steps is not None and init not in META_INITS:
        raise InputError(
            f"model: init_steps={init_steps!r} has no effect with init {init!r} "
            f"(only {' and '.join(META_INITS)} take steps)"
        )
    if init == "fixup":
        fixup_init(model, seed=seed)
        return None
    if init == "default":
        return None
    scaled_init(model, init_scale)
    if init == "scaled":
        return None
    run: Callable[..., InitTrace] = metainit if init == "metainit" else gradinit
    kwargs = {} if init_steps is None else {"steps": init_steps}
    return run(model, loss_fn, init_batch, seed=seed, **kwargs)
