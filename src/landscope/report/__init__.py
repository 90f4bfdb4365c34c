"""Figures (and, later, HTML reports) of runs and their analyses (DESIGN §8)."""

from landscope.report import plots

__all__ = ["plots"]
