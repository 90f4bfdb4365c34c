"""*Ours*: two synthetic data sets with known structure (DESIGN §5).

**W-reg** regresses Gaussian inputs onto a fixed random teacher network, so the target function
is exactly representable and its difficulty is set by the teacher's width and depth. **SRC** is a
Gaussian mixture of C classes whose separation sets how easy classification is. Every draw comes
from one explicit ``torch.Generator`` seeded by ``seed``: the same seed gives the same tensors,
and the global torch / NumPy random streams are never touched.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from landscope.data._checks import check_int, check_nonneg_float
from landscope.data.dataset import Dataset


def _random_teacher(
    g: torch.Generator, dim: int, out_dim: int, width: int, depth: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A bias-free tanh MLP ``dim → width (×depth) → out_dim`` with weights N(0, 1/fan_in).

    The 1/fan_in variance keeps pre-activations O(1) at every layer, so tanh is neither linear
    nor saturated and the targets have O(1) scale whatever the width.
    """
    sizes = [dim, *([width] * depth), out_dim]
    weights = [
        torch.randn(n_in, n_out, generator=g) / n_in**0.5
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)
    ]

    def teacher(x: torch.Tensor) -> torch.Tensor:
        for W in weights[:-1]:
            x = torch.tanh(x @ W)
        return x @ weights[-1]

    return teacher


def load_wreg(
    n_train: int = 1000,
    n_test: int = 1000,
    dim: int = 20,
    out_dim: int = 1,
    teacher_width: int = 32,
    teacher_depth: int = 2,
    noise: float = 0.0,
    seed: int = 0,
) -> Dataset:
    """*Ours* W-reg: targets ``teacher(x) + noise·ε`` for x ~ N(0, I_dim), ε ~ N(0, 1).

    Args:
        n_train: number of training samples.
        n_test: number of test samples (same teacher, fresh inputs).
        dim: input dimension d.
        out_dim: number of regression outputs; ``y_*`` has shape ``(N, out_dim)``.
        teacher_width: width of each hidden layer of the teacher.
        teacher_depth: number of hidden tanh layers of the teacher (0 gives a linear teacher).
        noise: standard deviation of the Gaussian label noise added to every target.
        seed: seeds the teacher's weights, then the inputs, then the noise, in that order, so
            one seed fixes the teacher whatever the sample counts.

    Returns float32 ``X_*`` of shape ``(N, dim)``, float32 ``y_*`` and ``n_classes=None``
    (a regression set, for the MSE loss).
    """
    n_train = check_int("wreg", "n_train", n_train)
    n_test = check_int("wreg", "n_test", n_test)
    dim = check_int("wreg", "dim", dim)
    out_dim = check_int("wreg", "out_dim", out_dim)
    teacher_width = check_int("wreg", "teacher_width", teacher_width)
    teacher_depth = check_int("wreg", "teacher_depth", teacher_depth, minimum=0)
    noise = check_nonneg_float("wreg", "noise", noise)
    seed = check_int("wreg", "seed", seed, minimum=0)

    g = torch.Generator().manual_seed(seed)
    teacher = _random_teacher(g, dim, out_dim, teacher_width, teacher_depth)
    n = n_train + n_test
    X = torch.randn(n, dim, generator=g)
    y = teacher(X) + noise * torch.randn(n, out_dim, generator=g)
    return Dataset(
        name="wreg",
        X_train=X[:n_train],
        y_train=y[:n_train],
        X_test=X[n_train:],
        y_test=y[n_train:],
        n_classes=None,
    )


def _balanced_labels(g: torch.Generator, n: int, n_classes: int) -> torch.Tensor:
    """``n`` labels with class counts differing by at most one, in random order."""
    return (torch.arange(n) % n_classes)[torch.randperm(n, generator=g)]


def load_src(
    n_train: int = 1000,
    n_test: int = 1000,
    dim: int = 20,
    n_classes: int = 10,
    separation: float = 3.0,
    seed: int = 0,
) -> Dataset:
    """*Ours* SRC: a Gaussian mixture, class c sampled as ``separation·u_c + N(0, I_dim)``.

    The class directions ``u_c`` are independent uniformly random unit vectors (normalised
    N(0, I) draws). In high dimension they are nearly orthogonal, so two class means lie about
    ``separation·√2`` apart against unit noise: ``separation`` alone sets the difficulty
    (0 makes the classes indistinguishable).

    Args:
        n_train: number of training samples; each split is balanced (class counts differ by
            at most one) and shuffled.
        n_test: number of test samples.
        dim: input dimension d.
        n_classes: number of classes C (at least 2).
        separation: distance of every class mean from the origin, in units of the noise std.
        seed: seeds the class means, then the training split, then the test split.

    Returns float32 ``X_*`` of shape ``(N, dim)``, int64 ``y_*`` in ``[0, C)``, for the CE loss.
    """
    n_train = check_int("src", "n_train", n_train)
    n_test = check_int("src", "n_test", n_test)
    dim = check_int("src", "dim", dim)
    n_classes = check_int("src", "n_classes", n_classes, minimum=2)
    separation = check_nonneg_float("src", "separation", separation)
    seed = check_int("src", "seed", seed, minimum=0)

    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(n_classes, dim, generator=g)
    means = separation * directions / directions.norm(dim=1, keepdim=True)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = _balanced_labels(g, n, n_classes)
        return means[y] + torch.randn(n, dim, generator=g), y

    X_train, y_train = split(n_train)
    X_test, y_test = split(n_test)
    return Dataset(
        name="src", X_train=X_train, y_train=y_train, X_test=X_test, y_test=y_test, n_classes=n_classes
    )
