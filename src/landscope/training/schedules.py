"""Learning-rate schedules as pure functions ``step → η`` (DESIGN §4).

Pure, so a resumed run recomputes η exactly, and the report can plot a schedule without running it.
Warmup composes with every schedule: η is multiplied by ``(t + 1) / warmup_steps`` for
``t < warmup_steps`` (Goyal et al. 2017; the warmup of [G] §4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from landscope.errors import InputError
from landscope.training.config import ScheduleConfig


@dataclass(frozen=True)
class Schedule:
    """η(t) for a base η₀ and a run of ``total_steps`` steps."""

    config: ScheduleConfig
    base_lr: float
    total_steps: int

    def __post_init__(self) -> None:
        if not self.base_lr > 0:
            raise InputError(f"schedule: base learning rate must be positive, got {self.base_lr!r}")
        if not isinstance(self.total_steps, int) or self.total_steps < 1:
            raise InputError(f"schedule: total_steps must be a positive integer, got {self.total_steps!r}")
        c = self.config
        if c.name == "cyclic" and c.lr_low is not None and c.lr_low > self.base_lr:
            raise InputError(
                f"schedule 'cyclic': lr_low={c.lr_low} exceeds η_high = optimizer.lr = {self.base_lr}"
            )

    def __call__(self, step: int) -> float:
        c, eta0 = self.config, self.base_lr
        if c.name == "constant":
            eta = eta0
        elif c.name == "step":
            eta = eta0 * c.gamma ** sum(step >= m for m in c.milestones)
        elif c.name == "delayed_decay":
            assert c.delay is not None  # ScheduleConfig._needed_keys requires it
            eta = eta0 * _decay(c.decay, step - c.delay, self.total_steps - c.delay, c.final_factor)
        elif c.name == "cosine":
            eta = eta0 * _decay("cosine", step, self.total_steps, c.final_factor)
        else:  # cyclic triangular: η_low → η_high → η_low over one period
            # ScheduleConfig._needed_keys requires a period and exactly one of lr_low and ratio
            assert c.period is not None
            if c.lr_low is not None:
                low = c.lr_low
            else:
                assert c.ratio is not None
                low = eta0 / c.ratio
            phase = (step % c.period) / c.period
            eta = low + (eta0 - low) * (1.0 - abs(2.0 * phase - 1.0))
        if step < c.warmup_steps:
            eta *= (step + 1) / c.warmup_steps
        return float(eta)

    def values(self, n: int | None = None) -> np.ndarray:
        """η at steps ``0 … n−1`` (default: the whole run), for plots."""
        return np.array([self(t) for t in range(self.total_steps if n is None else n)])


def _decay(shape: str, t: int, span: int, final: float) -> float:
    """Factor from 1 (t ≤ 0) to ``final`` (t ≥ span) with the given shape."""
    if t < 0:
        return 1.0
    if shape == "step" or span <= 0:
        return final
    x = min(t / span, 1.0)
    if shape == "linear":
        return 1.0 + (final - 1.0) * x
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * x))


def make_schedule(config: ScheduleConfig | None, base_lr: float, total_steps: int) -> Schedule:
    """The :class:`Schedule` of ``config`` (``None``: constant)."""
    return Schedule(config or ScheduleConfig(), float(base_lr), int(total_steps))
