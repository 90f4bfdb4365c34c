"""The effective-parameter perturbation test ([W&R] §3).

θ is moved by ±ε along each outlier eigenvector, along bulk directions (the remaining computed
eigenvectors, *ours*: the paper's bulk directions could not be checked) and along random unit
directions; for each group we record how much the outputs, the test loss and the test accuracy
change. The claim: outlier directions move outputs and performance far more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from landscope.curvature.modes import kept_flags
from landscope.errors import InputError


@dataclass(frozen=True)
class PerturbationGroup:
    """Mean changes over the directions of one group (both signs)."""

    name: str
    n_directions: int
    output_change: float  # mean ‖f(θ ± εd) − f(θ)‖ per sample
    loss_change: float  # mean |L(θ ± εd) − L(θ)|
    accuracy_change: float | None


@dataclass(frozen=True)
class Perturbation:
    """The three groups (outlier, bulk, random) at step size ``eps``."""

    eps: float
    groups: tuple[PerturbationGroup, ...]

    def group(self, name: str) -> PerturbationGroup:
        """The group called ``name``."""
        return next(g for g in self.groups if g.name == name)


@torch.no_grad()
def perturbation_test(
    model: nn.Module,
    loss_fn: Callable,
    data: tuple[torch.Tensor, torch.Tensor],
    vectors: np.ndarray | torch.Tensor,
    k_star: int,
    eps: float = 0.1,
    n_random: int = 10,
    seed: int = 0,
) -> Perturbation:
    """Perturb all parameters along outlier, bulk and random directions (see module docstring).

    ``vectors``: ``(dim, m)`` top eigenvectors over all parameters (m > k_star for a bulk group).
    """
    X, y = data
    names = [n for n, _ in model.named_parameters()]
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    dim = sum(p.numel() for p in base.values())
    V = torch.as_tensor(np.asarray(vectors), dtype=torch.float32)
    if V.ndim != 2 or V.shape[0] != dim:
        raise InputError(f"vectors must be (dim={dim}, m), got {tuple(V.shape)}")
    if not 1 <= k_star <= V.shape[1]:
        raise InputError(f"k_star={k_star} must be in [1, {V.shape[1]}] (the number of vectors)")
    gen = torch.Generator().manual_seed(seed)
    R = torch.randn(dim, n_random, generator=gen)
    R /= R.norm(dim=0, keepdim=True)

    def evaluate(delta: torch.Tensor | None) -> tuple[torch.Tensor, float, float | None]:
        params, i = {}, 0
        for n in names:
            p = base[n]
            params[n] = p if delta is None else p + delta[i : i + p.numel()].view_as(p).to(p)
            i += p.numel()
        out = functional_call(model, params, (X,))
        acc = None if y.is_floating_point() else float((out.argmax(-1) == y).float().mean())
        return out, float(loss_fn(out, y)), acc

    with kept_flags(model):
        model.eval()
        out0, loss0, acc0 = evaluate(None)
        groups = []
        for name, D in (("outlier", V[:, :k_star]), ("bulk", V[:, k_star:]), ("random", R)):
            outs, losses, accs = [], [], []
            for j in range(D.shape[1]):
                for sign in (1.0, -1.0):
                    out, loss, acc = evaluate(sign * eps * D[:, j])
                    outs.append(float((out - out0).reshape(len(X), -1).norm(dim=1).mean()))
                    losses.append(abs(loss - loss0))
                    if acc is not None and acc0 is not None:  # both None for float targets
                        accs.append(abs(acc - acc0))
            groups.append(
                PerturbationGroup(
                    name,
                    D.shape[1],
                    float(np.mean(outs)) if outs else np.nan,
                    float(np.mean(losses)) if losses else np.nan,
                    float(np.mean(accs)) if accs else None,
                )
            )
    return Perturbation(eps, tuple(groups))
