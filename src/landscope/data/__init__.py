"""Data sets as tensors (DESIGN §5), each loader returning a :class:`Dataset`.

- ``load_mnist1d``: MNIST-1D, generated procedurally (no download), cached as ``.npz``.
- ``load_wreg`` / ``load_src``: *ours*, synthetic regression onto a random teacher network and a
  Gaussian-mixture classification, both from one seeded generator.
- ``load_fashion_mnist`` / ``load_cifar10``: read from ``$LANDSCOPE_DATA`` in their standard
  formats; ``download_*`` fetch them with verified checksums.
- ``load_dataset(name, **kwargs)`` dispatches on the names in ``DATASETS``.
"""

from landscope.data.dataset import Dataset
from landscope.data.download import download_cifar10, download_fashion_mnist
from landscope.data.mnist1d import data_dir, load_mnist1d
from landscope.data.registry import DATASETS, load_dataset
from landscope.data.synthetic import load_src, load_wreg
from landscope.data.vision import load_cifar10, load_fashion_mnist

__all__ = [
    "Dataset",
    "DATASETS",
    "data_dir",
    "download_cifar10",
    "download_fashion_mnist",
    "load_cifar10",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist1d",
    "load_src",
    "load_wreg",
]
