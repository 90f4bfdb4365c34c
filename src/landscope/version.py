"""The package version, in a module every layer may import (the root package imports them all)."""

__version__ = "0.1.0"
