"""Learning-rate schedules: `CosineAnnealingScheduler(optimizer, total_iters, eta_min=0.0)` and friends."""

from zae_engine.schedulers.core import SchedulerBase, SchedulerChain
from zae_engine.schedulers.scheduler import CosineAnnealingScheduler, WarmUpScheduler

__all__ = ["SchedulerBase", "SchedulerChain", "CosineAnnealingScheduler", "WarmUpScheduler"]
