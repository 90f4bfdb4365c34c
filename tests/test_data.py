"""Data loaders (DESIGN §5): synthetic sets, tiny files in the real vision formats, the registry.

Nothing here downloads: an autouse fixture makes ``urllib.request.urlopen`` fail, and the
download tests replace it with a fake that serves small payloads with patched checksums.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import random
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from landscope.data import (
    DATASETS,
    download_fashion_mnist,
    load_cifar10,
    load_dataset,
    load_fashion_mnist,
    load_mnist1d,
    load_src,
    load_wreg,
)
from landscope.data import download as dl
from landscope.data.synthetic import _random_teacher
from landscope.errors import DataError

FMNIST_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch, tmp_path):
    monkeypatch.setenv("LANDSCOPE_DATA", str(tmp_path / "data"))

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to download")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


# --- tiny files in the real formats -------------------------------------------------------------


def _idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + np.asarray(arr.shape, dtype=">u4").tobytes()
    return header + arr.astype(np.uint8).tobytes()


def _fmnist_arrays(n_train: int = 12, n_test: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) * 7 % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) * 3 % 10).astype(np.uint8),
    }


def _fmnist_payloads(arrays: dict[str, np.ndarray], gz: bool) -> dict[str, bytes]:
    out = {}
    for name, arr in arrays.items():
        raw = _idx_bytes(arr, 2051 if "images" in name else 2049)
        out[name + ".gz" if gz else name] = gzip.compress(raw, mtime=0) if gz else raw
    return out


def _write_fmnist(root: Path, gz: bool = True, **kw) -> dict[str, np.ndarray]:
    arrays = _fmnist_arrays(**kw)
    root.mkdir(parents=True, exist_ok=True)
    for name, payload in _fmnist_payloads(arrays, gz).items():
        (root / name).write_bytes(payload)
    return arrays


def _cifar_batches(per_batch: int = 4, n_test: int = 5, seed: int = 0) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    batches = {}
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        n = n_test if name == "test_batch" else per_batch
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        data[:, 1024:2048] //= 2 + i  # channels with different statistics
        batches[name] = {
            b"batch_label": name.encode(),
            b"data": data,
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
        }
    return batches


def _write_cifar(folder: Path, **kw) -> dict[str, dict]:
    batches = _cifar_batches(**kw)
    folder.mkdir(parents=True, exist_ok=True)
    for name, batch in batches.items():
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return batches


def _assert_standardised(X: torch.Tensor) -> None:
    dims = [0, 2, 3]
    assert torch.allclose(X.mean(dim=dims), torch.zeros(X.shape[1]), atol=1e-5)
    assert torch.allclose(X.std(dim=dims, unbiased=False), torch.ones(X.shape[1]), atol=1e-5)


def _unstandardise(X: torch.Tensor, raw_train: np.ndarray) -> np.ndarray:
    """Undo the z-scoring with statistics recomputed here from the raw training pixels."""
    t = raw_train.astype(np.float64) / 255.0
    mean = t.mean(axis=(0, 2, 3), keepdims=True)
    std = t.std(axis=(0, 2, 3), keepdims=True)
    return (X.double().numpy() * std + mean) * 255.0


# --- Fashion-MNIST ------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_shapes_labels_and_standardisation(tmp_path, gz):
    arrays = _write_fmnist(tmp_path, gz=gz)
    ds = load_fashion_mnist(tmp_path)
    assert ds.name == "fashion_mnist" and ds.n_classes == 10
    assert ds.X_train.shape == (12, 1, 28, 28) and ds.X_test.shape == (6, 1, 28, 28)
    assert ds.X_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.y_train.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert ds.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    _assert_standardised(ds.X_train)
    raw_train = arrays["train-images-idx3-ubyte"][:, None]
    np.testing.assert_allclose(_unstandardise(ds.X_train, raw_train), raw_train, atol=1e-3)
    np.testing.assert_allclose(
        _unstandardise(ds.X_test, raw_train), arrays["t10k-images-idx3-ubyte"][:, None], atol=1e-3
    )


def test_fashion_mnist_slices_first_n_and_default_root(tmp_path):
    arrays = _write_fmnist(tmp_path / "data" / "fashion_mnist")  # $LANDSCOPE_DATA/fashion_mnist
    ds = load_fashion_mnist(n_train=5, n_test=3)
    assert ds.X_train.shape == (5, 1, 28, 28) and ds.X_test.shape == (3, 1, 28, 28)
    assert ds.y_train.tolist() == arrays["train-labels-idx1-ubyte"][:5].tolist()
    _assert_standardised(ds.X_train)  # statistics of the returned training samples
    with pytest.raises(DataError, match="n_train=13 exceeds the 12 samples in .*train-images"):
        load_fashion_mnist(n_train=13)
    with pytest.raises(DataError, match="n_test must be a positive integer, got 0"):
        load_fashion_mnist(n_test=0)


def test_fashion_mnist_missing_files_say_where_and_how(tmp_path):
    with pytest.raises(DataError) as err:
        load_fashion_mnist(tmp_path / "nowhere")
    msg = str(err.value)
    assert str(tmp_path / "nowhere") in msg and "train-images-idx3-ubyte" in msg
    assert "download=True" in msg and "LANDSCOPE_DATA" in msg
    _write_fmnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte") as err:
        load_fashion_mnist(tmp_path)
    assert "train-images" not in str(err.value)


@pytest.mark.parametrize(
    "corrupt, needle",
    [
        (lambda raw: (2049).to_bytes(4, "big") + raw[4:], "magic number 2049, expected 2051"),
        (lambda raw: raw[:-100], "truncated"),
        (lambda raw: raw[:10], "truncated"),
    ],
)
def test_fashion_mnist_bad_idx_names_the_file(tmp_path, corrupt, needle):
    _write_fmnist(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(DataError, match=needle) as err:
        load_fashion_mnist(tmp_path)
    assert str(path) in str(err.value)


def test_fashion_mnist_cut_gzip_and_label_mismatch(tmp_path):
    _write_fmnist(tmp_path, gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DataError, match="cannot read") as err:
        load_fashion_mnist(tmp_path)
    assert str(path) in str(err.value)
    _write_fmnist(tmp_path, gz=True)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(_idx_bytes(np.zeros(11, np.uint8), 2049)))
    with pytest.raises(DataError, match="11 labels for 12 images"):
        load_fashion_mnist(tmp_path)


# --- CIFAR-10 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["parent", "folder"])
def test_cifar10_both_layouts_shapes_labels_and_standardisation(tmp_path, layout):
    batches = _write_cifar(tmp_path / "cifar-10-batches-py")
    root = tmp_path if layout == "parent" else tmp_path / "cifar-10-batches-py"
    ds = load_cifar10(root)
    assert ds.name == "cifar10" and ds.n_classes == 10
    assert ds.X_train.shape == (20, 3, 32, 32) and ds.X_test.shape == (5, 3, 32, 32)
    assert ds.X_train.dtype == torch.float32 and ds.y_test.dtype == torch.int64
    train_names = [f"data_batch_{k}" for k in range(1, 6)]
    assert ds.y_train.tolist() == [v for n in train_names for v in batches[n][b"labels"]]
    assert ds.y_test.tolist() == batches["test_batch"][b"labels"]
    _assert_standardised(ds.X_train)
    # rows are 1024 R, 1024 G, 1024 B values of a row-major image
    raw_train = np.concatenate([batches[n][b"data"] for n in train_names]).reshape(-1, 3, 32, 32)
    np.testing.assert_allclose(_unstandardise(ds.X_train, raw_train), raw_train, atol=1e-3)
    raw_test = batches["test_batch"][b"data"].reshape(-1, 3, 32, 32)
    np.testing.assert_allclose(_unstandardise(ds.X_test, raw_train), raw_test, atol=1e-3)


def test_cifar10_slicing_default_root_and_errors(tmp_path):
    batches = _write_cifar(tmp_path / "data" / "cifar10" / "cifar-10-batches-py")
    ds = load_cifar10(n_train=6, n_test=2)  # crosses from data_batch_1 into data_batch_2
    assert ds.X_train.shape == (6, 3, 32, 32) and ds.X_test.shape == (2, 3, 32, 32)
    assert ds.y_train.tolist() == (
        batches["data_batch_1"][b"labels"] + batches["data_batch_2"][b"labels"][:2]
    )
    _assert_standardised(ds.X_train)
    with pytest.raises(DataError, match="n_test=6 exceeds the 5 samples"):
        load_cifar10(n_test=6)
    with pytest.raises(DataError) as err:
        load_cifar10(tmp_path / "empty")
    msg = str(err.value)
    assert str(tmp_path / "empty") in msg and "download=True" in msg and "LANDSCOPE_DATA" in msg


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.parametrize(
    "payload, needle",
    [
        (pickle.dumps({b"data": _Evil(), b"labels": [0]}), "refusing to load posix.getcwd|refusing to load"),
        (b"not a pickle", "cannot read"),
        (
            pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}),
            r"expected uint8 \(N, 3072\)",
        ),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}), "label 10 outside"),
        (pickle.dumps([1, 2]), "not a CIFAR batch"),
    ],
)
def test_cifar10_bad_batch_names_the_file(tmp_path, payload, needle):
    _write_cifar(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(payload)
    with pytest.raises(DataError, match=needle) as err:
        load_cifar10(tmp_path)
    assert str(tmp_path / "data_batch_3") in str(err.value)


# --- W-reg and SRC ------------------------------------------------------------------------------


def _rng_states():
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


@pytest.mark.parametrize("loader", [load_wreg, load_src])
def test_synthetic_deterministic_per_seed_and_global_rng_untouched(loader):
    torch.manual_seed(123)
    np.random.seed(123)
    before = _rng_states()
    a, b, c = (
        loader(n_train=40, n_test=20, seed=1),
        loader(n_train=40, n_test=20, seed=1),
        loader(n_train=40, n_test=20, seed=2),
    )
    after = _rng_states()
    assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1])
    assert before[2] == after[2]
    for x, y in ((a.X_train, b.X_train), (a.y_train, b.y_train), (a.X_test, b.X_test), (a.y_test, b.y_test)):
        assert torch.equal(x, y)
    assert not torch.equal(a.X_train, c.X_train)
    assert a.X_train.dtype == torch.float32 and a.X_train.shape == (40, 20) and a.X_test.shape == (20, 20)


def test_wreg_targets_are_the_teacher_plus_scaled_noise():
    kw = dict(dim=5, out_dim=3, teacher_width=16, teacher_depth=3, seed=7)
    clean = load_wreg(n_train=500, n_test=100, **kw)
    assert clean.name == "wreg" and clean.n_classes is None
    assert clean.y_train.shape == (500, 3) and clean.y_train.dtype == torch.float32
    assert 0.01 < clean.y_train.var().item() < 10  # O(1) targets from the 1/fan_in init
    # the same seed fixes the teacher whatever the sample counts: rebuild it and compare
    teacher = _random_teacher(torch.Generator().manual_seed(7), 5, 3, 16, 3)
    other = load_wreg(n_train=30, n_test=9, **kw)
    for ds in (clean, other):
        assert torch.equal(teacher(ds.X_train), ds.y_train) and torch.equal(teacher(ds.X_test), ds.y_test)
    wrong = _random_teacher(torch.Generator().manual_seed(8), 5, 3, 16, 3)
    assert not torch.allclose(wrong(clean.X_train), clean.y_train, atol=1e-2)
    # noise is drawn after the inputs: same x, targets shifted by noise·ε with one ε
    half, one = (
        load_wreg(n_train=500, n_test=100, noise=0.5, **kw),
        load_wreg(n_train=500, n_test=100, noise=1.0, **kw),
    )
    assert torch.equal(half.X_train, clean.X_train)
    eps_half, eps_one = (half.y_train - clean.y_train) / 0.5, one.y_train - clean.y_train
    assert torch.allclose(eps_half, eps_one, atol=1e-5)
    assert abs(eps_one.std().item() - 1.0) < 0.1


def test_src_balanced_shuffled_and_separable():
    ds = load_src(n_train=1000, n_test=1000, dim=20, n_classes=10, separation=3.0, seed=0)
    assert ds.name == "src" and ds.n_classes == 10 and ds.y_train.dtype == torch.int64
    assert torch.bincount(ds.y_train).tolist() == [100] * 10
    assert not torch.equal(ds.y_train, ds.y_train.sort().values)
    counts = torch.bincount(load_src(n_train=13, n_test=5, n_classes=4).y_train, minlength=4)
    assert counts.max() - counts.min() <= 1

    def nearest_mean_accuracy(d) -> float:
        means = torch.stack([d.X_train[d.y_train == c].mean(0) for c in range(d.n_classes)])
        return (torch.cdist(d.X_test, means).argmin(1) == d.y_test).float().mean().item()

    assert nearest_mean_accuracy(ds) > 0.6  # chance is 0.1
    blurred = load_src(n_train=1000, n_test=1000, separation=0.0, seed=0)
    assert nearest_mean_accuracy(blurred) < 0.2


@pytest.mark.parametrize(
    "loader, kwargs, needle",
    [
        (load_wreg, {"n_train": -3}, "wreg: n_train must be a positive integer, got -3"),
        (load_wreg, {"n_test": 2.0}, "wreg: n_test must be a positive integer, got 2.0"),
        (load_wreg, {"dim": True}, "wreg: dim must be a positive integer, got True"),
        (load_wreg, {"teacher_depth": -1}, "wreg: teacher_depth must be a non-negative integer, got -1"),
        (load_wreg, {"noise": -0.1}, "wreg: noise must be a finite number >= 0, got -0.1"),
        (load_wreg, {"noise": float("nan")}, "wreg: noise must be a finite number >= 0, got nan"),
        (load_wreg, {"seed": -1}, "wreg: seed must be a non-negative integer, got -1"),
        (load_src, {"n_classes": 1}, "src: n_classes must be an integer >= 2, got 1"),
        (load_src, {"separation": -2}, "src: separation must be a finite number >= 0, got -2"),
        (load_src, {"dim": 0}, "src: dim must be a positive integer, got 0"),
    ],
)
def test_synthetic_bad_arguments_name_the_value(loader, kwargs, needle):
    with pytest.raises(DataError) as err:
        loader(**kwargs)
    assert needle in str(err.value)


def test_wreg_linear_teacher():
    ds = load_wreg(n_train=50, n_test=10, dim=4, teacher_depth=0, seed=3)
    W = torch.linalg.lstsq(ds.X_train, ds.y_train).solution
    assert torch.allclose(ds.X_test @ W, ds.y_test, atol=1e-4)


# --- registry -----------------------------------------------------------------------------------


def test_registry_dispatches_every_name(tmp_path):
    assert DATASETS == ("mnist1d", "wreg", "src", "fashion_mnist", "cifar10")
    _write_fmnist(tmp_path / "f")
    _write_cifar(tmp_path / "c")
    kwargs = {
        "mnist1d": dict(n_train=50, n_test=10),
        "wreg": dict(n_train=8, n_test=4, seed=5),
        "src": dict(n_train=8, n_test=4, n_classes=3),
        "fashion_mnist": dict(root=tmp_path / "f", n_train=4),
        "cifar10": dict(root=tmp_path / "c", n_test=2),
    }
    direct = {
        "mnist1d": load_mnist1d,
        "wreg": load_wreg,
        "src": load_src,
        "fashion_mnist": load_fashion_mnist,
        "cifar10": load_cifar10,
    }
    for name in DATASETS:
        got, want = load_dataset(name, **kwargs[name]), direct[name](**kwargs[name])
        assert got.name == name
        assert torch.equal(got.X_train, want.X_train) and torch.equal(got.y_test, want.y_test)


def test_registry_errors():
    with pytest.raises(DataError) as err:
        load_dataset("imagenet")
    assert "'imagenet'" in str(err.value) and all(n in str(err.value) for n in DATASETS)
    with pytest.raises(DataError, match="unknown argument 'width' for load_wreg") as err:
        load_dataset("wreg", n_train=4, width=3)
    assert "teacher_width" in str(err.value)  # lists what it does take
    with pytest.raises(DataError, match="unknown argument 'seed' for load_fashion_mnist"):
        load_dataset("fashion_mnist", seed=1)
    with pytest.raises(DataError, match="n_train must be a positive integer, got -3"):
        load_dataset("src", n_train=-3)


# --- downloads (urllib mocked; never the network) -----------------------------------------------


def _serve(monkeypatch, payloads: dict[str, bytes]) -> list[str]:
    """Replace urlopen with a server of ``payloads`` keyed by URL; returns the URLs requested."""
    requested = []

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        if url not in payloads:
            raise urllib.error.URLError(f"no route to {url}")
        return io.BytesIO(payloads[url])

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return requested


def _md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def test_fetch_checksum_mismatch_leaves_no_file_and_match_lands_it(tmp_path, monkeypatch):
    _serve(monkeypatch, {"http://example/f.bin": b"tiny payload"})
    dest = tmp_path / "d" / "f.bin"
    with pytest.raises(DataError, match="MD5 .* expected 0{32}; the file was deleted"):
        dl.fetch("http://example/f.bin", dest, "0" * 32)
    assert list(dest.parent.iterdir()) == []
    assert dl.fetch("http://example/f.bin", dest, _md5(b"tiny payload")) == dest
    assert dest.read_bytes() == b"tiny payload" and list(dest.parent.iterdir()) == [dest]
    with pytest.raises(DataError, match="could not download http://example/missing"):
        dl.fetch("http://example/missing", tmp_path / "m", "0" * 32)
    assert not (tmp_path / "m").exists()


def test_fashion_mnist_download_true_fetches_verified_files(tmp_path, monkeypatch):
    payloads = _fmnist_payloads(_fmnist_arrays(), gz=True)
    for name, payload in payloads.items():
        monkeypatch.setitem(dl.FASHION_MNIST_MD5, name, _md5(payload))
    requested = _serve(monkeypatch, {dl.FASHION_MNIST_URL + n: p for n, p in payloads.items()})
    ds = load_fashion_mnist(tmp_path / "fm", download=True)
    assert ds.X_train.shape == (12, 1, 28, 28) and len(requested) == 4
    assert sorted(p.name for p in (tmp_path / "fm").iterdir()) == sorted(payloads)
    download_fashion_mnist(tmp_path / "fm")  # everything present: nothing fetched
    assert len(requested) == 4


def test_fashion_mnist_download_mismatch_raises_and_keeps_nothing(tmp_path, monkeypatch):
    payloads = _fmnist_payloads(_fmnist_arrays(), gz=True)  # real checksums do not match these
    _serve(monkeypatch, {dl.FASHION_MNIST_URL + n: p for n, p in payloads.items()})
    with pytest.raises(DataError, match="MD5"):
        load_fashion_mnist(tmp_path / "fm", download=True)
    assert list((tmp_path / "fm").iterdir()) == []


def _tarball(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_cifar10_download_true_extracts_verified_tarball(tmp_path, monkeypatch):
    batches = _cifar_batches()
    blob = _tarball({f"cifar-10-batches-py/{n}": pickle.dumps(b, protocol=2) for n, b in batches.items()})
    monkeypatch.setattr(dl, "CIFAR10_MD5", _md5(blob))
    _serve(monkeypatch, {dl.CIFAR10_URL: blob})
    ds = load_cifar10(download=True)  # default root: $LANDSCOPE_DATA/cifar10
    assert ds.X_train.shape == (20, 3, 32, 32)
    root = tmp_path / "data" / "cifar10"
    assert [p.name for p in root.iterdir()] == ["cifar-10-batches-py"]  # tarball and staging gone


def test_cifar10_download_refuses_unsafe_tarball(tmp_path, monkeypatch):
    blob = _tarball({"cifar-10-batches-py/data_batch_1": b"x", "../escaped": b"x"})
    monkeypatch.setattr(dl, "CIFAR10_MD5", _md5(blob))
    _serve(monkeypatch, {dl.CIFAR10_URL: blob})
    with pytest.raises(DataError, match="unsafe member '../escaped'"):
        load_cifar10(tmp_path / "c", download=True)
    assert not (tmp_path / "c" / "escaped").exists()
    assert not (tmp_path / "c" / "cifar-10-batches-py").exists()
