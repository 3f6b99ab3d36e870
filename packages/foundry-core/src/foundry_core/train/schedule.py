"""Learning-rate schedules: stateless functions of the optimizer step (so resume needs no state).

Each schedule is a component (kind ``schedule``) with ``factor(step, total_steps) -> float`` that
multiplies the optimizer's base LR. ``warmup`` is a number of steps (int) or a fraction of the run
(float < 1). Tested by ``tests/test_train_units.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from foundry_core.errors import ConfigError


def warmup_steps(warmup: int | float, total_steps: int) -> int:
    """``warmup`` as steps: an int is taken as is, a float in [0, 1) is a fraction of ``total_steps``."""
    if isinstance(warmup, float):
        if not 0 <= warmup < 1:
            raise ConfigError(f"train.schedule.warmup: a fraction must be in [0, 1), got {warmup}")
        return int(round(warmup * total_steps))
    if warmup < 0:
        raise ConfigError(f"train.schedule.warmup: must be >= 0, got {warmup}")
    return int(warmup)


class _Schedule:
    @dataclass(kw_only=True)
    class Config:
        #: Linear warmup: steps (int) or fraction of the run (float in [0, 1)).
        warmup: int | float = 0

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    @classmethod
    def from_config(cls, cfg: Any, ctx: Any) -> _Schedule:
        return cls(cfg)

    def _warm(self, step: int, total: int) -> float | None:
        w = warmup_steps(self.cfg.warmup, total)
        if step < w:
            return (step + 1) / (w + 1)
        return None

    def factor(self, step: int, total_steps: int) -> float:
        raise TypeError("use a concrete schedule")  # pragma: no cover


class Constant(_Schedule):
    """Linear warmup, then the base LR."""

    def factor(self, step: int, total_steps: int) -> float:
        warm = self._warm(step, total_steps)
        return 1.0 if warm is None else warm


class Cosine(_Schedule):
    """Linear warmup, then cosine decay to ``min_ratio`` × base LR at the last step."""

    @dataclass(kw_only=True)
    class Config(_Schedule.Config):
        min_ratio: float = 0.0

    def factor(self, step: int, total_steps: int) -> float:
        warm = self._warm(step, total_steps)
        if warm is not None:
            return warm
        w = warmup_steps(self.cfg.warmup, total_steps)
        span = max(1, total_steps - w)
        progress = min(1.0, (step - w) / span)
        return self.cfg.min_ratio + (1 - self.cfg.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class WarmupStableDecay(_Schedule):
    """Warmup, constant LR, then linear decay to ``min_ratio`` over the last ``decay`` fraction."""

    @dataclass(kw_only=True)
    class Config(_Schedule.Config):
        #: Fraction of the run spent decaying (at the end).
        decay: float = 0.2
        min_ratio: float = 0.0

        def validate(self) -> None:
            if not 0 < self.decay <= 1:
                raise ConfigError(f"decay must be in (0, 1], got {self.decay}")

    def factor(self, step: int, total_steps: int) -> float:
        warm = self._warm(step, total_steps)
        if warm is not None:
            return warm
        decay_steps = max(1, int(round(self.cfg.decay * total_steps)))
        start = total_steps - decay_steps
        if step < start:
            return 1.0
        progress = min(1.0, (step - start + 1) / decay_steps)
        return 1.0 - (1.0 - self.cfg.min_ratio) * progress
