"""Data sets as tensors: MNIST-1D now; synthetic and vision sets follow (DESIGN §5)."""

from landscope.data.dataset import Dataset
from landscope.data.mnist1d import data_dir, load_mnist1d

__all__ = ["Dataset", "load_mnist1d", "data_dir"]
