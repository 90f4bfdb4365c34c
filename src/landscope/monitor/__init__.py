"""Practitioner tools: a sharpness monitor for any training loop and a largest-stable-η finder.

- :class:`SharpnessMonitor`: ``status = mon.step(optimizer)`` after ``optimizer.step()`` says
  whether λ1 is below (``stable``), near (``edge``) or above (``unstable``) the optimiser's
  stability threshold; records, logs and sends each measurement to sinks.
- :func:`find_max_stable_lr`: the largest learning rate that trains, from the early curvature and
  short catapult probes (``landscope lr-find CONFIG``).
- :func:`lr_range_test`: the classic exponential LR range test, the baseline it is measured against.
- Adapters (import them explicitly; they need the ``monitor`` extra):
  ``landscope.monitor.lightning.SharpnessCallback`` (PyTorch Lightning) and
  ``landscope.monitor.huggingface.SharpnessCallback`` (``transformers.Trainer``).
"""

from landscope.monitor.lr_finder import LRFinderResult, Probe, find_max_stable_lr
from landscope.monitor.monitor import STATUSES, MonitorRecord, SharpnessMonitor, classify
from landscope.monitor.range_test import RangeTestResult, lr_range_test

__all__ = [
    "SharpnessMonitor",
    "MonitorRecord",
    "STATUSES",
    "classify",
    "find_max_stable_lr",
    "LRFinderResult",
    "Probe",
    "lr_range_test",
    "RangeTestResult",
]
