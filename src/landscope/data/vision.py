"""Fashion-MNIST (IDX files) and CIFAR-10 (python pickle batches) from a local folder.

Both read their standard on-disk formats with NumPy alone (no torchvision). Inputs are scaled to
[0, 1] and then standardised per channel with the mean and std of the *returned* training
samples (after ``n_train`` slicing), so ``X_train`` has mean 0 and std 1 per channel and the
test set sees the same affine map. The statistics come from pixel histograms, exact and without
a float64 copy of the images. Files live under ``$LANDSCOPE_DATA`` unless ``root`` is given;
``download=True`` fetches missing ones (see :mod:`landscope.data.download`).
"""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from landscope.data._checks import check_count
from landscope.data.dataset import Dataset
from landscope.data.download import CIFAR10_FOLDER, download_cifar10, download_fashion_mnist
from landscope.data.mnist1d import data_dir
from landscope.errors import DataError

_FMNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_IDX_IMAGES, _IDX_LABELS = 2051, 2049  # 0x0803: ubyte, 3 dims; 0x0801: ubyte, 1 dim
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"
_HOW_TO_GET = "pass download=True, or set LANDSCOPE_DATA to the folder that holds them"


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file (gzipped or plain) as a uint8 array of the shape its header states."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError; a cut gzip is EOFError
        raise DataError(f"fashion_mnist: cannot read {path}: {e}") from e
    if len(raw) < 4:
        raise DataError(f"fashion_mnist: {path} is truncated ({len(raw)} bytes, no IDX header)")
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        raise DataError(f"fashion_mnist: {path} has IDX magic number {got}, expected {magic}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"fashion_mnist: {path} is truncated ({len(raw)} bytes, header needs {header})")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise DataError(
            f"fashion_mnist: {path} holds {len(raw) - header} data bytes, its header "
            f"{shape} needs {size} (truncated or corrupt)"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx(root: Path, download: bool) -> list[Path]:
    """The four IDX paths in ``root`` (plain preferred over ``.gz``), downloading if asked."""

    def find(name: str) -> Path | None:
        return next((p for p in (root / name, root / f"{name}.gz") if p.is_file()), None)

    if download and any(find(n) is None for n in _FMNIST_FILES):
        download_fashion_mnist(root)
    found = {n: find(n) for n in _FMNIST_FILES}
    missing = [n for n, p in found.items() if p is None]
    if missing:
        raise DataError(
            f"fashion_mnist: missing {', '.join(m + '[.gz]' for m in missing)} in {root}; {_HOW_TO_GET}"
        )
    return [p for p in found.values() if p is not None]


def _labels(y: np.ndarray, n_images: int, where: object) -> np.ndarray:
    """``y`` after checking it has one label in 0..9 per image."""
    if len(y) != n_images:
        raise DataError(f"{where}: {len(y)} labels for {n_images} images")
    if len(y) and y.max() > 9:
        raise DataError(f"{where}: label {int(y.max())} outside the 10 classes 0..9")
    return y


def _standardise(train: np.ndarray, test: np.ndarray, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 ``(N, C, H, W)`` arrays → float32, scaled to [0, 1], then per-channel z-scored.

    Mean and std use the training array only, computed exactly from 256-bin histograms.
    """
    levels = np.arange(256, dtype=np.float64) / 255.0
    mean, std = np.empty(train.shape[1]), np.empty(train.shape[1])
    for c in range(train.shape[1]):
        counts = np.bincount(train[:, c].ravel(), minlength=256)
        p = counts / counts.sum()
        mean[c] = p @ levels
        std[c] = np.sqrt(p @ (levels - mean[c]) ** 2)
    if np.any(std == 0):
        raise DataError(
            f"{name}: training images are constant in channel {int(np.argmin(std))}; cannot standardise"
        )
    shift = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    scale = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def convert(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.float32)).div_(255.0).sub_(shift).div_(scale)

    return convert(train), convert(test)


def load_fashion_mnist(
    root: str | os.PathLike | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    download: bool = False,
) -> Dataset:
    """Fashion-MNIST (Xiao et al. 2017): 28×28 grey images of 10 clothing classes.

    Args:
        root: folder with the four IDX files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``,
            gzipped or plain (default ``$LANDSCOPE_DATA/fashion_mnist``).
        n_train: take the first n training samples (``None``: all 60,000).
        n_test: take the first n test samples (``None``: all 10,000).
        download: fetch missing files from the canonical URL first (checksums verified).

    Returns float32 ``X_*`` of shape ``(N, 1, 28, 28)``, int64 ``y_*``, ``n_classes=10``.
    """
    root = Path(root) if root is not None else data_dir() / "fashion_mnist"
    tr_x, tr_y, te_x, te_y = _find_idx(root, download)
    X_tr, X_te = _read_idx(tr_x, _IDX_IMAGES), _read_idx(te_x, _IDX_IMAGES)
    for path, X in ((tr_x, X_tr), (te_x, X_te)):
        if X.shape[1:] != (28, 28):
            raise DataError(f"fashion_mnist: {path} holds {X.shape[1]}×{X.shape[2]} images, expected 28×28")
    y_tr = _labels(_read_idx(tr_y, _IDX_LABELS), len(X_tr), f"fashion_mnist: {tr_y}")
    y_te = _labels(_read_idx(te_y, _IDX_LABELS), len(X_te), f"fashion_mnist: {te_y}")
    n_train = check_count("fashion_mnist", "n_train", n_train, len(X_tr), tr_x)
    n_test = check_count("fashion_mnist", "n_test", n_test, len(X_te), te_x)
    X_train, X_test = _standardise(X_tr[:n_train, None], X_te[:n_test, None], "fashion_mnist")
    return Dataset(
        name="fashion_mnist",
        X_train=X_train,
        y_train=torch.from_numpy(y_tr[:n_train].astype(np.int64)),
        X_test=X_test,
        y_test=torch.from_numpy(y_te[:n_test].astype(np.int64)),
        n_classes=10,
    )


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR batches contain (dicts, lists, NumPy arrays), never arbitrary code."""

    # _codecs.encode appears in protocol-2 pickles of bytes written by Python 3
    _ALLOWED = {
        ("_codecs", "encode"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch as uint8 images ``(N, 3, 32, 32)`` and uint8 labels ``(N,)``."""
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as e:
        raise DataError(f"cifar10: cannot read {path} as a pickled CIFAR batch: {e}") from e
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"cifar10: {path} is not a CIFAR batch (needs a dict with b'data' and b'labels')")
    X = np.asarray(batch[b"data"])
    if X.dtype != np.uint8 or X.ndim != 2 or X.shape[1] != 3072:
        raise DataError(
            f"cifar10: {path} has data of dtype {X.dtype} and shape {X.shape}, expected uint8 (N, 3072)"
        )
    y = np.asarray(batch[b"labels"])
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise DataError(f"cifar10: {path} has labels that are not a list of class indices")
    # rows are 1024 red, then green, then blue values of a row-major 32×32 image
    return X.reshape(-1, 3, 32, 32), _labels(y, len(X), f"cifar10: {path}").astype(np.uint8)


def _find_cifar(root: Path, download: bool) -> Path:
    """The folder holding the batches: ``root/cifar-10-batches-py`` or ``root`` itself."""
    names = (*_CIFAR_TRAIN, _CIFAR_TEST)

    def complete(folder: Path) -> bool:
        return all((folder / n).is_file() for n in names)

    for folder in (root / CIFAR10_FOLDER, root):
        if complete(folder):
            return folder
    if download:
        return download_cifar10(root)
    raise DataError(
        f"cifar10: no complete set of batches ({', '.join(names)}) in {root / CIFAR10_FOLDER} "
        f"or {root}; {_HOW_TO_GET}"
    )


def load_cifar10(
    root: str | os.PathLike | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    download: bool = False,
) -> Dataset:
    """CIFAR-10 (Krizhevsky 2009): 32×32 colour images of 10 classes, 50,000 train / 10,000 test.

    Args:
        root: folder containing ``cifar-10-batches-py/`` or that folder itself (default
            ``$LANDSCOPE_DATA/cifar10``). The batches are pickles; only dicts, lists and NumPy
            arrays are unpickled from them.
        n_train: take the first n training samples (``None``: all 50,000).
        n_test: take the first n test samples (``None``: all 10,000).
        download: fetch and extract the tarball first if batches are missing (checksum verified).

    Returns float32 ``X_*`` of shape ``(N, 3, 32, 32)``, int64 ``y_*``, ``n_classes=10``.
    """
    root = Path(root) if root is not None else data_dir() / "cifar10"
    folder = _find_cifar(root, download)
    train = [_read_cifar_batch(folder / n) for n in _CIFAR_TRAIN]
    X_tr, y_tr = np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train])
    X_te, y_te = _read_cifar_batch(folder / _CIFAR_TEST)
    n_train = check_count("cifar10", "n_train", n_train, len(X_tr), folder)
    n_test = check_count("cifar10", "n_test", n_test, len(X_te), folder / _CIFAR_TEST)
    X_train, X_test = _standardise(X_tr[:n_train], X_te[:n_test], "cifar10")
    return Dataset(
        name="cifar10",
        X_train=X_train,
        y_train=torch.from_numpy(y_tr[:n_train].astype(np.int64)),
        X_test=X_test,
        y_test=torch.from_numpy(y_te[:n_test].astype(np.int64)),
        n_classes=10,
    )
