"""Load any data set by name, as configs and the CLI name them (DESIGN §5)."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from landscope.data.dataset import Dataset
from landscope.data.mnist1d import load_mnist1d
from landscope.data.synthetic import load_src, load_wreg
from landscope.data.vision import load_cifar10, load_fashion_mnist
from landscope.errors import DataError

LOADERS: dict[str, Callable[..., Dataset]] = {
    "mnist1d": load_mnist1d,
    "wreg": load_wreg,
    "src": load_src,
    "fashion_mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
}
DATASETS: tuple[str, ...] = tuple(LOADERS)


def load_dataset(name: str, **kwargs: object) -> Dataset:
    """The data set ``name`` (one of :data:`DATASETS`), built by its loader with ``kwargs``.

    Arguments are checked against the loader's signature first, so a misspelt key in a config
    is reported by name instead of surfacing as a ``TypeError`` from deep inside.
    """
    loader = LOADERS.get(name)
    if loader is None:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    accepted = inspect.signature(loader).parameters
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise DataError(
            f"{name}: unknown argument {unknown[0]!r} for {loader.__name__}; it takes {', '.join(accepted)}"
        )
    return loader(**kwargs)
