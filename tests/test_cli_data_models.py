import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from landscope.cli import app
from landscope.data import load_mnist1d
from landscope.errors import InputError
from landscope.models import cnn1d, mlp

runner = CliRunner()


@pytest.fixture(autouse=True)
def _data_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LANDSCOPE_DATA", str(tmp_path_factory.getbasetemp() / "data"))


def test_eigs_prints_top_eigenvalues():
    result = runner.invoke(app, ["eigs", "--k", "3", "--n-train", "300", "--steps", "5", "--width", "8"])
    assert result.exit_code == 0, result.output
    assert "Top-3 Hessian eigenvalues" in result.output
    assert "converged: True" in result.output
    assert "2/η = 20" in result.output


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--k", "0"], "k must be a positive integer, got 0"),
        (["--k", "100000"], "k=100000 exceeds the operator's dimension"),
        (["--loss", "hinge"], "'hinge'"),
        (["--lr", "-1"], "lr=-1"),
    ],
)
def test_eigs_bad_input_exits_2_with_the_value(args, needle):
    result = runner.invoke(app, ["eigs", "--n-train", "100", "--steps", "0", "--width", "4", *args])
    assert result.exit_code == 2
    assert needle in result.output
    assert "Traceback" not in result.output


def test_every_command_has_help():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "eigs" in result.output
    assert runner.invoke(app, ["eigs", "--help"]).exit_code == 0


def test_mnist1d_shapes_cache_and_global_rng_untouched():
    state = np.random.get_state()
    ds = load_mnist1d(n_train=300, n_test=100)
    assert np.array_equal(np.random.get_state()[1], state[1])
    assert ds.X_train.shape == (300, 40) and ds.X_test.shape == (100, 40)
    assert ds.X_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert set(ds.y_train.tolist()) == set(range(10)) and ds.n_classes == 10
    again = load_mnist1d(n_train=300, n_test=100)  # from the cache: same arrays
    assert torch.equal(again.X_train, ds.X_train) and torch.equal(again.y_test, ds.y_test)


def test_mnist1d_rejects_bad_sizes():
    with pytest.raises(InputError, match="n_train must be a positive integer, got 0"):
        load_mnist1d(n_train=0)


def test_models_shapes_and_bad_options():
    assert mlp(40, 10, width=32, depth=2)(torch.zeros(5, 40)).shape == (5, 10)
    assert sum(p.numel() for p in mlp(40, 10, width=32, depth=2).parameters()) == 2698
    assert cnn1d(norm="batch")(torch.zeros(5, 40)).shape == (5, 10)
    with pytest.raises(InputError, match="'swish'"):
        mlp(4, 2, activation="swish")
    with pytest.raises(InputError, match="'group'"):
        cnn1d(norm="group")
