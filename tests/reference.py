"""Independent dense references for the curvature tests.

Nothing here calls landscope: every matrix is built by ``torch.autograd.functional`` (double
backward, one row at a time) from the loss written out directly, on a deep copy of the model, so a
reference can never share a bug (or a side effect) with the code under test, which uses
``torch.func``.

Why not ``torch.func.hessian``: in torch 2.13 it returns wrong cross terms for
``F.batch_norm(training=True)`` between the BN weight and anything feeding BN (e.g. 2-D input
``x * s`` then ``batch_norm(…, weight=g, training=True)``: relative error ≈ 1 against
``torch.autograd.functional.hessian`` and finite differences). ``test_reference_*`` in
``test_operators.py`` checks these references against finite differences.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.functional import hessian, jacobian
from torch.func import functional_call


def cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy."""
    return F.cross_entropy(out, y)


def half_mse_onehot(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """½‖f − onehot(y)‖² per sample, mean over samples (the edge-of-stability convention)."""
    target = F.one_hot(y, out.shape[-1]).to(out.dtype)
    return 0.5 * ((out - target) ** 2).sum(dim=-1).mean()


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ce": cross_entropy,
    "mse": half_mse_onehot,
}


def reference_copy(model: nn.Module, mode: str = "eval") -> nn.Module:
    """A deep copy of ``model`` in the requested mode, unable to touch the original's state.

    ``"train"``: BatchNorm normalises with the batch statistics and has *no* running buffers at all
    (so nothing can be updated), dropout is off.
    """
    m = copy.deepcopy(model)
    if mode == "eval":
        m.eval()
        return m
    assert mode == "train"
    m.train()
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.track_running_stats = False
            mod.running_mean = None
            mod.running_var = None
            mod.num_batches_tracked = None
        if isinstance(mod, nn.modules.dropout._DropoutNd):
            mod.eval()
    return m


def param_names(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters()]


def flat_params(model: nn.Module, names: Sequence[str] | None = None) -> torch.Tensor:
    named = dict(model.named_parameters())
    names = list(names) if names is not None else list(named)
    return torch.cat([named[n].detach().reshape(-1) for n in names]).clone()


def _flat_fn(model: nn.Module, names: Sequence[str] | None, mode: str):
    """``(m, theta0, unflatten)``: a reference copy, the flat selected parameters, and theta→dict."""
    m = reference_copy(model, mode)
    named = {n: p.detach() for n, p in m.named_parameters()}
    names = list(names) if names is not None else list(named)
    buffers = {n: b.detach() for n, b in m.named_buffers()}
    shapes = [named[n].shape for n in names]
    numels = [named[n].numel() for n in names]
    theta0 = torch.cat([named[n].reshape(-1) for n in names]).clone()

    def unflatten(theta: torch.Tensor) -> dict[str, torch.Tensor]:
        d = dict(named)
        d.update(buffers)
        for n, t, s in zip(names, torch.split(theta, numels), shapes, strict=True):
            d[n] = t.reshape(s)
        return d

    return m, theta0, unflatten


def _chunks(X: torch.Tensor, y: torch.Tensor, chunk_size: int | None):
    N = len(X)
    step = chunk_size or N
    for s in range(0, N, step):
        yield X[s : s + step], y[s : s + step], len(X[s : s + step]) / N


_MEMO: dict[tuple, torch.Tensor] = {}


def _memo_key(
    kind: str, model: nn.Module, loss_fn, X: torch.Tensor, y: torch.Tensor, names, mode: str, chunk_size
) -> tuple:
    """Identify a reference by value: the model's full state, the data and the options."""
    state = hashlib.sha256()
    for t in (*model.parameters(), *model.buffers(), X, y):
        state.update(str((t.dtype, tuple(t.shape))).encode())
        state.update(t.detach().contiguous().numpy().tobytes())
    arch = repr(model)
    return (kind, arch, state.hexdigest(), loss_fn, tuple(names) if names else None, mode, chunk_size)


def _memoised(kind: str):
    """References are pure functions of their arguments' values: compute each one once."""

    def wrap(fn):
        def inner(model, loss_fn, X, y, names=None, mode="eval", chunk_size=None):
            key = _memo_key(kind, model, loss_fn, X, y, names, mode, chunk_size)
            if key not in _MEMO:
                _MEMO[key] = fn(model, loss_fn, X, y, names, mode, chunk_size)
            return _MEMO[key].clone()

        inner.__doc__ = fn.__doc__
        return inner

    return wrap


@_memoised("hessian")
def dense_hessian(
    model: nn.Module,
    loss_fn,
    X: torch.Tensor,
    y: torch.Tensor,
    names: Sequence[str] | None = None,
    mode: str = "eval",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Hessian of ``Σ_b (n_b/N) loss_b`` w.r.t. the flattened ``names`` (all by default)."""
    m, theta0, unflatten = _flat_fn(model, names, mode)
    H = torch.zeros(theta0.numel(), theta0.numel(), dtype=theta0.dtype)
    for Xb, yb, w in _chunks(X, y, chunk_size):

        def f(theta, Xb=Xb, yb=yb):
            return loss_fn(functional_call(m, unflatten(theta), (Xb,)), yb)

        H += w * hessian(f, theta0)
    return H


@_memoised("ggn")
def dense_ggn(
    model: nn.Module,
    loss_fn,
    X: torch.Tensor,
    y: torch.Tensor,
    names: Sequence[str] | None = None,
    mode: str = "eval",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """``Σ_b (n_b/N) J_bᵀ H_L J_b``: ``J_b`` and ``H_L`` (w.r.t. the outputs) by autograd."""
    m, theta0, unflatten = _flat_fn(model, names, mode)
    P = theta0.numel()
    G = torch.zeros(P, P, dtype=theta0.dtype)
    for Xb, yb, w in _chunks(X, y, chunk_size):

        def outputs(theta, Xb=Xb):
            return functional_call(m, unflatten(theta), (Xb,))

        out = outputs(theta0).detach()
        J = jacobian(outputs, theta0).reshape(out.numel(), P)
        HL = hessian(lambda o, yb=yb: loss_fn(o, yb), out).reshape(out.numel(), out.numel())
        G += w * (J.T @ HL @ J)
    return G


def names_to_index(model: nn.Module, names: Sequence[str]) -> torch.Tensor:
    """Positions of the parameters ``names`` in the full flattened parameter vector."""
    idx, start = [], 0
    chosen = set(names)
    for n, p in model.named_parameters():
        if n in chosen:
            idx.extend(range(start, start + p.numel()))
        start += p.numel()
    return torch.tensor(idx, dtype=torch.long)


def max_rel_err(A: torch.Tensor, B: torch.Tensor, ref: torch.Tensor | None = None) -> float:
    """``max|A − B| / max|ref|`` (``ref`` defaults to ``B``)."""
    ref = B if ref is None else ref
    return float((A.double() - B.double()).abs().max() / ref.double().abs().max())


def random_orthogonal(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, R = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return Q * torch.sign(torch.diagonal(R))


def with_spectrum(values: Sequence[float] | torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, Q)``: the symmetric matrix ``Q diag(values) Qᵀ`` for a random orthogonal ``Q``."""
    lam = torch.as_tensor(values, dtype=torch.float64)
    Q = random_orthogonal(len(lam), seed)
    A = (Q * lam) @ Q.T
    return 0.5 * (A + A.T), Q


def model_state(model: nn.Module) -> dict:
    """Everything a pure operator must leave alone, copied bitwise."""
    return {
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
        "grads": {
            n: None if p.grad is None else p.grad.detach().clone() for n, p in model.named_parameters()
        },
        "buffers": {n: b.detach().clone() for n, b in model.named_buffers()},
        "training": [(n, m.training) for n, m in model.named_modules()],
        "rng": torch.get_rng_state().clone(),
    }


def assert_same_state(before: dict, model: nn.Module) -> None:
    after = model_state(model)
    for n, p in before["params"].items():
        assert torch.equal(p, after["params"][n]), f"parameter {n} changed"
    for n, g in before["grads"].items():
        g2 = after["grads"][n]
        if g is None:
            assert g2 is None, f".grad of {n} was None and is now set"
        else:
            assert g2 is not None and torch.equal(g, g2), f".grad of {n} changed"
    assert before["buffers"].keys() == after["buffers"].keys()
    for n, b in before["buffers"].items():
        assert torch.equal(b, after["buffers"][n]), f"buffer {n} changed"
    assert before["training"] == after["training"], "a module's training flag changed"
    assert torch.equal(before["rng"], after["rng"]), "the global torch RNG state changed"


def python_blocks(file: str = "README.md") -> list[tuple[str, str]]:
    """``(section, code)`` of every ```python block of ``file`` (a repo path), in order."""
    import re
    from pathlib import Path

    out, section = [], ""
    text = (Path(__file__).parent.parent / file).read_text()
    for part in re.split(r"(^## .*$)", text, flags=re.M):
        if part.startswith("## "):
            section = part[3:].strip()
            continue
        out += [(section, code) for code in re.findall(r"```python\n(.*?)```", part, re.S)]
    return out


def run_readme_example(section: str, file: str = "README.md") -> dict:
    """Execute the first Python block under the heading ``## {section}`` of ``file``; its namespace."""
    code = next(code for s, code in python_blocks(file) if s == section)
    namespace: dict = {}
    exec(compile(code, f"{file}: {section}", "exec"), namespace)
    return namespace
