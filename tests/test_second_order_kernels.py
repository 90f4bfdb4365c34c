"""The rewritten convolution and eval-mode batch norm (curvature/kernels.py): same Hessian, exactly.

Each case is a model whose conv / batch-norm configuration takes a different path through
``_conv`` / ``_eval_batch_norm``; the operator's dense matrix (``kernels="landscope"``, the
default) must equal the independent float64 reference of ``tests/reference.py`` (PyTorch's own
double backward, one row at a time, no ``torch.func``).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import landscope as ls
from landscope.curvature import kernels
from tests.reference import cross_entropy, dense_hessian, half_mse_onehot, max_rel_err


class Unbatched(nn.Module):
    """A conv applied to each sample without its batch dimension (``(C, L)`` input)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 3, stride=2)
        self.head = nn.Linear(3 * 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.head(torch.tanh(self.conv(s)).reshape(-1)) for s in x])


def _affine_bn(bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    with torch.no_grad():  # running statistics away from (0, 1), so that the rewrite matters
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return bn


def _net(*body: nn.Module, features: int, classes: int) -> nn.Sequential:
    """``body`` then tanh, flatten and a linear head."""
    return nn.Sequential(*body, nn.Tanh(), nn.Flatten(), nn.Linear(features, classes))


class UnbatchedConvBN(nn.Module):
    """An unbatched conv's ``(C, L)`` output into a batch norm, which takes it as ``(N, C)``: its
    channels are the conv's positions (square, so a fold along the conv's channels would fit)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 3)
        self.bn = _affine_bn(nn.BatchNorm1d(3))
        self.head = nn.Linear(9, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.head(torch.tanh(self.bn(self.conv(s))).reshape(-1)) for s in x])


class ConvBNResidual(nn.Module):
    """A conv's output read by an eval batch norm *and* by the sum after it (the fold must not
    take the conv's output away from its other reader)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 2, 3, padding=1)
        self.bn = _affine_bn(nn.BatchNorm1d(2))
        self.head = nn.Linear(2 * 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv(x)
        return self.head(torch.tanh(self.bn(c) + c).flatten(1))


CASES = {
    # name: (model builder, input shape, n_classes)
    "conv1d-stride2-bias": (
        lambda: _net(nn.Conv1d(2, 3, 3, stride=2), features=3 * 4, classes=4),
        (2, 9),
        4,
    ),
    "conv2d-bn-eval": (
        lambda: nn.Sequential(
            nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False),
            _affine_bn(nn.BatchNorm2d(3)),
            nn.Tanh(),
            nn.Flatten(),
            nn.Linear(3 * 9, 4),
        ),
        (2, 6, 6),
        4,
    ),
    "conv2d-dilated-groups": (
        lambda: nn.Sequential(
            nn.Conv2d(4, 4, 3, dilation=2, groups=2, padding=2), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 25, 3)
        ),
        (4, 5, 5),
        3,
    ),
    "conv2d-circular": (
        lambda: nn.Sequential(
            nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular"),
            nn.Tanh(),
            nn.Flatten(),
            nn.Linear(2 * 16, 3),
        ),
        (2, 4, 4),
        3,
    ),
    "conv2d-same-string": (  # left to PyTorch: must still be exact
        lambda: nn.Sequential(
            nn.Conv2d(2, 2, 3, padding="same"), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 16, 3)
        ),
        (2, 4, 4),
        3,
    ),
    "conv3d-bn-no-affine": (
        lambda: nn.Sequential(
            nn.Conv3d(1, 2, 2, stride=(1, 2, 1)),
            _affine_bn(nn.BatchNorm3d(2, affine=False)),
            nn.Tanh(),
            nn.Flatten(),
            nn.Linear(2 * 2 * 1 * 2, 3),
        ),
        (1, 3, 3, 3),
        3,
    ),
    "conv1d-bias-bn-eval": (  # the fold's bias: b·s + shift
        lambda: _net(nn.Conv1d(2, 3, 3, stride=2), _affine_bn(nn.BatchNorm1d(3)), features=3 * 4, classes=4),
        (2, 9),
        4,
    ),
    "conv2d-groups-bn-eval": (  # grouped weights scale along the output channels too
        lambda: _net(
            nn.Conv2d(4, 4, 3, groups=2, padding=1), _affine_bn(nn.BatchNorm2d(4)), features=4 * 16, classes=3
        ),
        (4, 4, 4),
        3,
    ),
    "conv-inplace-relu-bn": (  # ReLU(inplace=True) changes the conv's output: no fold
        lambda: _net(
            nn.Conv1d(2, 3, 3, padding=1),
            nn.ReLU(inplace=True),
            _affine_bn(nn.BatchNorm1d(3)),
            features=3 * 6,
            classes=3,
        ),
        (2, 6),
        3,
    ),
    "conv-bn-residual": (ConvBNResidual, (2, 5), 3),
    "bn1d-mlp": (
        lambda: nn.Sequential(nn.Linear(5, 6), _affine_bn(nn.BatchNorm1d(6)), nn.Tanh(), nn.Linear(6, 3)),
        (5,),
        3,
    ),
    "unbatched-conv": (Unbatched, (2, 9), 4),
    "unbatched-conv-bn": (UnbatchedConvBN, (2, 5), 4),
}


@pytest.mark.parametrize("loss", ["ce", "mse"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_rewritten_kernels_match_dense_reference(case: str, loss: str) -> None:
    build, shape, classes = CASES[case]
    torch.manual_seed(0)
    model = build().double()
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(6, *shape, generator=gen, dtype=torch.float64)
    y = torch.randint(0, classes, (6,), generator=gen)
    loss_fn = {"ce": cross_entropy, "mse": half_mse_onehot}[loss]
    ref = dense_hessian(model, loss_fn, X, y)
    op = ls.HessianOperator(model, loss_fn, (X, y))
    assert op.kernels == "landscope"
    H = op.matmat(torch.eye(op.dim, dtype=torch.float64))
    assert max_rel_err(H, ref) < 1e-12


def test_train_mode_batch_norm_is_left_to_pytorch() -> None:
    """Batch statistics are not an affine map of the input: train mode keeps PyTorch's formula."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(1, 2, 3), nn.BatchNorm1d(2), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 5, 3)
    ).double()
    X = torch.randn(8, 1, 7, dtype=torch.float64)
    y = torch.randint(0, 3, (8,))
    ref = dense_hessian(model, cross_entropy, X, y, mode="train")
    op = ls.HessianOperator(model, cross_entropy, (X, y), model_mode="train")
    assert max_rel_err(op.matmat(torch.eye(op.dim, dtype=torch.float64)), ref) < 1e-12


def test_subset_of_parameters_and_vmap_matmat() -> None:
    """Only the conv weight selected (its input and the other parameters need no gradient)."""
    build, shape, classes = CASES["conv2d-bn-eval"]
    torch.manual_seed(0)
    model = build().double()
    X = torch.randn(5, *shape, dtype=torch.float64)
    y = torch.randint(0, classes, (5,))
    names = ["0.weight", "1.weight"]
    ref = dense_hessian(model, cross_entropy, X, y, names=names)
    op = ls.HessianOperator(model, cross_entropy, (X, y), params=names, vmap_matmat=True)
    assert max_rel_err(op.matmat(torch.eye(op.dim, dtype=torch.float64)), ref) < 1e-12


def test_the_rewrite_runs_by_default_and_not_with_kernels_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default takes the rewritten convolution; ``kernels="torch"`` never does; same matrix."""
    calls: list[int] = []
    original = kernels._Conv.apply

    def counted(*args: object) -> torch.Tensor:
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(kernels._Conv, "apply", counted)
    build, shape, classes = CASES["conv2d-bn-eval"]
    torch.manual_seed(0)
    model = build().double()
    X = torch.randn(5, *shape, dtype=torch.float64)
    y = torch.randint(0, classes, (5,))
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    fast = ls.HessianOperator(model, cross_entropy, (X, y)).matvec(v)
    assert calls
    calls.clear()
    plain = ls.HessianOperator(model, cross_entropy, (X, y), kernels="torch").matvec(v)
    assert not calls
    assert torch.allclose(fast, plain, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    ("case", "folds"),
    [("conv2d-bn-eval", True), ("conv1d-bias-bn-eval", True), ("conv-inplace-relu-bn", False)],
)
def test_an_eval_batch_norm_of_a_conv_output_folds_into_the_conv(
    case: str, folds: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Folded: one convolution with the scaled weight, no activation-sized affine map; an
    in-place op between them keeps the plain affine map."""
    build, shape, classes = CASES[case]
    torch.manual_seed(0)
    model = build().double()
    X = torch.randn(5, *shape, dtype=torch.float64)
    y = torch.randint(0, classes, (5,))
    op = ls.HessianOperator(model, cross_entropy, (X, y))
    fold, affine = [], []
    original = kernels._folded
    monkeypatch.setattr(kernels, "_folded", lambda *a: fold.append(1) or original(*a))
    real_mul = torch.Tensor.__mul__

    def mul(a: torch.Tensor, b: object) -> torch.Tensor:
        if isinstance(b, torch.Tensor) and a.dim() >= 3 and a.shape[0] == 5:  # activation × scale
            affine.append(1)
        return real_mul(a, b)

    monkeypatch.setattr(torch.Tensor, "__mul__", mul)
    op.gradient()
    assert len(fold) == (1 if folds else 0)
    assert bool(affine) is not folds


class InPlaceInput(nn.Module):
    """The conv's input changed in place after the conv: invalid for gradients (the conv saved it)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 3)
        self.bn = _affine_bn(nn.BatchNorm1d(3))
        self.head = nn.Linear(9, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(x)
        c = self.conv(h)
        h.mul_(2.0)
        return self.head(torch.tanh(self.bn(c)).flatten(1))


@pytest.mark.parametrize("kern", ["landscope", "torch"])
def test_a_conv_input_changed_in_place_fails_as_in_pytorch_not_folded_silently(kern: str) -> None:
    """A fold would convolve the changed input again, with no error; PyTorch's autograd refuses."""
    torch.manual_seed(0)
    model = InPlaceInput().double()
    X = torch.randn(4, 2, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (4,))
    op = ls.HessianOperator(model, cross_entropy, (X, y), kernels=kern)
    with pytest.raises(ls.DataError, match="modified by an inplace operation"):
        op.gradient()


def test_bad_kernels_value_is_named() -> None:
    model = nn.Linear(2, 2)
    with pytest.raises(ls.InputError, match="kernels must be 'landscope' or 'torch', got 'cudnn'"):
        ls.HessianOperator(
            model, cross_entropy, (torch.randn(3, 2), torch.tensor([0, 1, 0])), kernels="cudnn"
        )  # type: ignore[arg-type]
