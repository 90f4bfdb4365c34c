"""Exceptions that carry a message meant for the user, not a traceback.

Every check at a public boundary raises one of these with the bad value in the message; the CLI
turns them into exit code 2. They subclass the built-in type a Python user would expect.
"""

from __future__ import annotations


class LandscopeError(Exception):
    """Base of every error landscope raises on purpose."""


class InputError(LandscopeError, ValueError):
    """A value given to landscope is out of range, of the wrong shape, or inconsistent."""


class DataError(InputError):
    """The data (a Hessian set, a data set) cannot be used as given."""


class ConfigError(InputError):
    """A run, sweep or experiment configuration is invalid."""
