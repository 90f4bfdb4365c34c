"""Fetch Fashion-MNIST and CIFAR-10 from their canonical URLs, verified by MD5.

Each file streams into a temporary file beside its destination and is renamed into place only
once its checksum matches, so an interrupted or corrupted download never leaves a file that a
loader would trust. MD5 guards against truncation and corruption, which is what these published
checksums are for; the CIFAR-10 tarball is also checked member by member before extraction.
Nothing here runs in the tests, which mock ``urllib.request.urlopen``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from landscope.errors import DataError

FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FOLDER = "cifar-10-batches-py"
_TIMEOUT_S = 60
_CHUNK = 1 << 20


def fetch(url: str, dest: Path, md5: str) -> Path:
    """Download ``url`` to ``dest`` if its MD5 is ``md5``; on a mismatch delete it and raise."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise DataError(
                f"download of {url} has MD5 {digest.hexdigest()}, expected {md5}; "
                f"the file was deleted (retry, or fetch it by hand into {dest.parent})"
            )
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as e:
        raise DataError(f"could not download {url} to {dest}: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def download_fashion_mnist(root: str | os.PathLike) -> Path:
    """Fetch the four gzipped IDX files of Fashion-MNIST into ``root`` (those already there are kept)."""
    root = Path(root)
    for name, md5 in FASHION_MNIST_MD5.items():
        if not (root / name).exists() and not (root / name.removesuffix(".gz")).exists():
            fetch(FASHION_MNIST_URL + name, root / name, md5)
    return root


def _check_members(tar: tarfile.TarFile, root: Path) -> list[tarfile.TarInfo]:
    """Only regular files and folders that land inside ``root``: no links, devices or ``..``."""
    base = root.resolve()
    members = tar.getmembers()
    for m in members:
        target = (base / m.name).resolve()
        if not (m.isfile() or m.isdir()) or not target.is_relative_to(base):
            raise DataError(f"unsafe member {m.name!r} in {tar.name!s}: refusing to extract")
    return members


def download_cifar10(root: str | os.PathLike) -> Path:
    """Fetch and extract CIFAR-10 (python version) to ``root/cifar-10-batches-py``; returns that folder.

    The tarball is extracted into a temporary folder first and its files moved into place, so
    a failed extraction leaves no half-written batches; the tarball is deleted afterwards.
    """
    root = Path(root)
    tarball = fetch(CIFAR10_URL, root / "cifar-10-python.tar.gz", CIFAR10_MD5)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".cifar10-extract."))
    try:
        try:
            with tarfile.open(tarball, "r:gz") as tar:
                members = _check_members(tar, staging)
                kwargs: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(staging, members=members, **kwargs)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DataError(f"cannot extract {tarball}: {e}") from e
        extracted = staging / CIFAR10_FOLDER
        if not extracted.is_dir():
            raise DataError(f"{tarball} has no folder {CIFAR10_FOLDER}/")
        dest = root / CIFAR10_FOLDER
        dest.mkdir(exist_ok=True)
        for f in extracted.iterdir():
            os.replace(f, dest / f.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    tarball.unlink()
    return dest
