"""Shared fixtures: tiny float64 models, small data, losses and dense reference Hessians.

Models are parametrised through fixtures (as curvlinops does): a test that takes ``case`` runs on
the tanh MLP and on the CNN with BatchNorm; ``loss_name`` adds cross-entropy and ½‖f − onehot‖².
Every fixture builds fresh objects, so a test may mutate them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from reference import LOSSES, dense_hessian, param_names
from torch import nn

from landscope.models import cnn1d, mlp

N_SAMPLES = 20
N_CLASSES = 3


@dataclass
class Case:
    """A model with its Hessian set and what a test needs to know about it."""

    name: str
    model: nn.Module
    X: torch.Tensor
    y: torch.Tensor
    first_layer: tuple[str, ...]  # ls.layers(model, first=1).names, as a reader counts layers
    last_layer: tuple[str, ...]  # ls.layers(model, last=1).names
    glob: str  # a glob pattern that selects one layer
    glob_names: tuple[str, ...]  # what it matches

    @property
    def dim(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def names(self) -> list[str]:
        return param_names(self.model)


def _randomise_batchnorm(model: nn.Module, seed: int) -> None:
    """Non-trivial affine parameters and running statistics, so eval and train modes differ."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.weight.copy_(1.0 + 0.3 * torch.randn(c, generator=g, dtype=m.weight.dtype))
                m.bias.copy_(0.2 * torch.randn(c, generator=g, dtype=m.bias.dtype))
                m.running_mean.copy_(0.3 * torch.randn(c, generator=g, dtype=m.weight.dtype))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g, dtype=m.weight.dtype))
                m.num_batches_tracked.fill_(7)


def _data(n_features: int, seed: int, n: int = N_SAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, n_features, generator=g, dtype=torch.float64)
    y = torch.arange(n) % N_CLASSES  # every class present
    y = y[torch.randperm(n, generator=g)]
    return X, y


def make_mlp() -> Case:
    torch.manual_seed(0)
    model = mlp(5, N_CLASSES, width=6, depth=1, activation="tanh").double()
    X, y = _data(5, seed=1)
    return Case(
        "mlp",
        model,
        X,
        y,
        first_layer=("0.weight", "0.bias"),
        last_layer=("2.weight", "2.bias"),
        glob="2.*",
        glob_names=("2.weight", "2.bias"),
    )


def make_cnn_bn() -> Case:
    torch.manual_seed(1)
    model = cnn1d(
        in_channels=1, out_features=N_CLASSES, channels=(3, 4), kernel_size=3, norm="batch", activation="tanh"
    ).double()
    _randomise_batchnorm(model, seed=2)
    X, y = _data(12, seed=3)
    # Sequential: 0 unsqueeze, 1 conv, 2 BN, 3 tanh, 4 conv, 5 BN, 6 tanh, 7 pool, 8 flatten, 9 fc.
    # A layer is a weight-owning module plus the 1-D-only modules after it (the conv and its BN).
    return Case(
        "cnn_bn",
        model,
        X,
        y,
        first_layer=("1.weight", "1.bias", "2.weight", "2.bias"),
        last_layer=("9.weight", "9.bias"),
        glob="4.*",
        glob_names=("4.weight", "4.bias"),
    )


def make_bn_dropout() -> Case:
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Dropout(0.3), nn.Linear(6, N_CLASSES)
    ).double()
    _randomise_batchnorm(model, seed=4)
    X, y = _data(5, seed=5)
    return Case(
        "bn_dropout",
        model,
        X,
        y,
        first_layer=("0.weight", "0.bias", "1.weight", "1.bias"),
        last_layer=("4.weight", "4.bias"),
        glob="1.*",
        glob_names=("1.weight", "1.bias"),
    )


MAKERS = {"mlp": make_mlp, "cnn_bn": make_cnn_bn, "bn_dropout": make_bn_dropout}


@pytest.fixture(scope="session", autouse=True)
def _data_cache(tmp_path_factory):
    """Data sets (MNIST-1D) and meta-inits cached once per test session, never in the user's cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LANDSCOPE_DATA", str(tmp_path_factory.getbasetemp() / "data"))
        mp.setenv("LANDSCOPE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        yield


@pytest.fixture(scope="session")
def eos_run(tmp_path_factory):
    """configs/eos_mlp.yaml (GD at the edge of stability) with top-3 eigenpairs every 10 steps,
    parameters and test predictions stored: a real run for the analyses, plots and CLI."""
    import yaml

    import landscope as ls

    cfg = yaml.safe_load((Path(__file__).parent.parent / "configs" / "eos_mlp.yaml").read_text())
    cfg["measure"] = {"every": 10, "k": 3, "save_params": True, "save_predictions": True}
    return ls.train(cfg, tmp_path_factory.mktemp("runs") / "eos", progress=False)


@pytest.fixture(params=["mlp", "cnn_bn"])
def case(request) -> Case:
    """The tiny tanh MLP (5→6→3, 57 parameters) and the CNN with BatchNorm (81 parameters)."""
    return MAKERS[request.param]()


@pytest.fixture
def mlp_case() -> Case:
    return make_mlp()


@pytest.fixture
def cnn_case() -> Case:
    return make_cnn_bn()


@pytest.fixture(params=["cnn_bn", "bn_dropout"])
def bn_case(request) -> Case:
    """Models with BatchNorm (the second also with Dropout): for modes and state purity."""
    return MAKERS[request.param]()


@pytest.fixture
def bn_dropout_case() -> Case:
    return make_bn_dropout()


@pytest.fixture(params=["ce", "mse"])
def loss_name(request) -> str:
    return request.param


@pytest.fixture
def loss_fn(loss_name):
    return LOSSES[loss_name]


@pytest.fixture
def ce():
    return LOSSES["ce"]


@pytest.fixture
def dense_H(case, loss_fn) -> torch.Tensor:  # noqa: N802 (H: the Hessian)
    """Float64 Hessian of the mean loss (eval mode) by autograd over the flat parameters."""
    return dense_hessian(case.model, loss_fn, case.X, case.y)


@pytest.fixture
def mlp_ce_H(mlp_case, ce) -> torch.Tensor:  # noqa: N802
    return dense_hessian(mlp_case.model, ce, mlp_case.X, mlp_case.y)


def pytest_configure(config):
    # The models are tiny: one thread is several times faster than two (no thread hand-offs per
    # op) and keeps the timings stable when other processes share the cores.
    torch.set_num_threads(1)


@pytest.fixture
def one_thread():
    """Bitwise equality with a one-thread process (a worker, a child run) needs the same reductions."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
