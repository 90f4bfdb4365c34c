"""What a monitor record is to the code that writes it out, apart from the sinks that do.

:func:`json_safe` turns a record's values into what JSON can hold (the monitor's
:class:`~landscope.monitor.MonitorRecord`, the LR finder's results); :class:`Record` is the
interface a sink reads (:mod:`~landscope.monitor.sinks`), which ``MonitorRecord`` provides. Both
sit below the monitor, the finder and the sinks, so that none of them imports another for them.
"""

from __future__ import annotations

import math
from typing import Any, Protocol


def json_safe(x: Any) -> Any:
    """Non-finite floats as ``None`` (JSON has no infinity), tuples as lists."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (tuple, list)):
        return [json_safe(v) for v in x]
    return x


class Record(Protocol):
    """One measurement as a sink sees it: its step, a JSON-safe dict and the scalars to plot."""

    @property
    def step(self) -> int:
        """The step the measurement belongs to (a TensorBoard scalar's ``global_step``)."""
        ...

    def as_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of every field (see :func:`json_safe`)."""
        ...

    def scalars(self, name: str) -> dict[str, float]:
        """The finite scalars to plot, tagged ``{name}/…``."""
        ...
