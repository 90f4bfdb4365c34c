"""``ls.batch_sharpness`` against closed forms and a dense double-backward reference."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import landscope as ls


def test_linear_regression_closed_form():
    """½ mean (xᵀw + b − y)²: H_B = Z_Bᵀ Z_B / b, g_B = Z_Bᵀ (Z_B θ − y_B) / b, Z = [X, 1]."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(96, 4, generator=g, dtype=torch.float64) * torch.tensor(
        [2.0, 1.0, 0.5, 0.1], dtype=torch.float64
    )
    y = torch.randn(96, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(4, 1).double()

    def loss(out, target):
        return 0.5 * ((out - target) ** 2).mean()

    batches = [(X[i : i + 32], y[i : i + 32]) for i in range(0, 96, 32)]
    theta = torch.cat([model.weight.detach().reshape(-1), model.bias.detach()])
    expected = []
    for Xb, yb in batches:
        Z = torch.cat([Xb, torch.ones(len(Xb), 1, dtype=torch.float64)], dim=1)
        H = Z.T @ Z / len(Xb)
        grad = Z.T @ (Z @ theta - yb[:, 0]) / len(Xb)
        expected.append(float(grad @ H @ grad / (grad @ grad)))
    res = ls.batch_sharpness(model, loss, batches)
    assert res.per_batch == pytest.approx(expected, rel=1e-12)
    assert res.value == pytest.approx(sum(expected) / 3, rel=1e-12)
    std = torch.tensor(expected, dtype=torch.float64).std().item()
    assert res.stderr == pytest.approx(std / 3**0.5, rel=1e-9)
    assert res.n_matvecs == 3


def test_against_dense_hessian_of_an_mlp_with_batchnorm():
    """Train-mode BatchNorm: each batch's own statistics, as the step sees it."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 2)).double()
    g = torch.Generator().manual_seed(2)
    X = torch.randn(40, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (40,), generator=g)
    ce = nn.CrossEntropyLoss()
    batches = [(X[:20], y[:20]), (X[20:], y[20:])]
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(flat, Xb, yb):
        parts, i = {}, 0
        for n, s in zip(names, shapes, strict=True):
            k = int(torch.tensor(s).prod())
            parts[n] = flat[i : i + k].reshape(s)
            i += k
        buffers = {n: b.clone() for n, b in model.named_buffers()}
        return ce(torch.func.functional_call(model, {**parts, **buffers}, (Xb,)), yb)

    model.train()
    expected = []
    for Xb, yb in batches:
        H = torch.autograd.functional.hessian(lambda t, Xb=Xb, yb=yb: f(t, Xb, yb), flat0)
        flat = flat0.clone().requires_grad_()
        grad = torch.autograd.grad(f(flat, Xb, yb), flat)[0]
        expected.append(float(grad @ H @ grad / (grad @ grad)))
    before = {n: b.clone() for n, b in model.named_buffers()}
    res = ls.batch_sharpness(model, ce, batches)
    assert res.per_batch == pytest.approx(expected, rel=1e-9)
    assert all(torch.equal(b, before[n]) for n, b in model.named_buffers())  # BN stats untouched


def test_bad_input():
    model = nn.Linear(2, 1)
    with pytest.raises(ls.InputError, match="at least one batch"):
        ls.batch_sharpness(model, nn.MSELoss(), [])
    zero = nn.Linear(2, 1)
    with torch.no_grad():
        zero.weight.zero_()
        zero.bias.zero_()
    X = torch.zeros(4, 2)
    with pytest.raises(ls.InputError, match="non-zero gradient"):
        ls.batch_sharpness(zero, nn.MSELoss(), [(X, torch.zeros(4, 1))])
