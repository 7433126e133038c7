"""Ready-made schedules."""

from __future__ import annotations

import math

from zae_engine.schedulers.core import SchedulerBase


class WarmUpScheduler(SchedulerBase):
    """Linear rise from `eta_min` to the optimizer's base rate over `total_iters` steps."""

    def get_lr(self) -> list[float]:
        return [self.eta_min + (base - self.eta_min) * self.progress for base in self.base_lrs]


class CosineAnnealingScheduler(SchedulerBase):
    """Cosine decay from the optimizer's base rate to `eta_min` over `total_iters` steps."""

    def get_lr(self) -> list[float]:
        factor = (1.0 + math.cos(math.pi * self.progress)) / 2.0
        return [self.eta_min + (base - self.eta_min) * factor for base in self.base_lrs]
