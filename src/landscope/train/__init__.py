"""Deprecated home of :mod:`landscope.training`: old imports keep working, with a warning.

``landscope.train`` was both this subpackage and (as ``ls.train``) the function that trains a
config, so ``landscope.train.Trainer`` failed once the function shadowed the package. The package
is now :mod:`landscope.training`; ``ls.train`` is the function. ``from landscope.train import X``
and ``import landscope.train.store`` still work. Importing them can make ``landscope.train`` this
module again, so the module is callable: ``ls.train(config, out)`` trains either way.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import types
import warnings
from typing import Any

import landscope.training as _training
from landscope.training import *  # noqa: F403 - the old namespace, as it was
from landscope.training import __all__  # noqa: F401

warnings.warn(
    "landscope.train (the package) is now landscope.training; ls.train is the function that trains a config",
    DeprecationWarning,
    stacklevel=2,
)

for _info in pkgutil.iter_modules(_training.__path__):  # landscope.train.store is training.store
    _module = importlib.import_module(f"landscope.training.{_info.name}")
    sys.modules.setdefault(f"{__name__}.{_info.name}", _module)
    globals()[_info.name] = _module


class _CallableModule(types.ModuleType):
    """The shim, callable as :func:`landscope.training.train` (it may replace ``ls.train``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _training.train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
