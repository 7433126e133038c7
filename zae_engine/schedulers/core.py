"""Scheduler base and chaining: closed-form schedules, so a state round-trip and chaining stay exact."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from torch.optim import Optimizer, lr_scheduler

from zae_engine.errors import ConfigError


class SchedulerBase(lr_scheduler.LRScheduler, ABC):
    """A learning-rate schedule of `total_iters` steps ending at `eta_min`.

    Subclasses implement `get_lr()` as a function of `self.last_epoch` (the steps taken so far), so
    the rate at any step can be recomputed after a resume or inside a `SchedulerChain`.
    """

    def __init__(self, optimizer: Optimizer, total_iters: int, eta_min: float = 0.0, last_epoch: int = -1) -> None:
        kind = type(self).__name__
        if isinstance(total_iters, bool) or not isinstance(total_iters, int) or total_iters < 1:
            raise ConfigError(f"{kind}: 'total_iters' must be a whole number >= 1, got {total_iters!r}")
        if not isinstance(eta_min, (int, float)) or eta_min < 0:
            raise ConfigError(f"{kind}: 'eta_min' must be a number >= 0, got {eta_min!r}")
        if not isinstance(optimizer, Optimizer):
            raise ConfigError(f"{kind}: 'optimizer' must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self.total_iters = total_iters
        self.eta_min = float(eta_min)
        super().__init__(optimizer, last_epoch=last_epoch)

    @property
    def progress(self) -> float:
        """Fraction of the schedule done, clamped to [0, 1]: past the end the rate stays at its final value."""
        return min(max(self.last_epoch, 0), self.total_iters) / self.total_iters

    @abstractmethod
    def get_lr(self) -> list[float]:
        """Rates for each param group at step `self.last_epoch`."""


class SchedulerChain(SchedulerBase):
    """Run schedules one after another on one optimizer, e.g. a warm-up then a cosine decay."""

    def __init__(self, *schedulers: SchedulerBase) -> None:
        if not schedulers or not all(isinstance(s, SchedulerBase) for s in schedulers):
            raise ConfigError(
                "SchedulerChain: give one or more SchedulerBase instances, e.g. SchedulerChain(warmup, cosine)"
            )
        optimizers = {id(s.optimizer) for s in schedulers}
        if len(optimizers) != 1:
            raise ConfigError(f"SchedulerChain: all schedulers must share one optimizer, found {len(optimizers)}")
        self.schedulers = list(schedulers)
        self.starts = []
        start = 0
        for s in self.schedulers:
            self.starts.append(start)
            start += s.total_iters
        super().__init__(schedulers[0].optimizer, total_iters=start, eta_min=schedulers[-1].eta_min)

    @property
    def next_iters(self) -> list[int]:
        """The steps at which the chain moves on to its next schedule: `[3]` for a 3-step warm-up, then a cosine.

        Read-only (a fresh list), under the name upstream zae-engine code reads.
        """
        return self.starts[1:]

    @property
    def i_scheduler(self) -> int:
        """Index in `schedulers` of the schedule that sets the current rate (the last one once the chain is done)."""
        return self._active()[0]

    def _active(self) -> tuple[int, int]:
        """(index of the schedule in use, steps into it)."""
        step = max(self.last_epoch, 0)
        for index in reversed(range(len(self.schedulers))):
            if step >= self.starts[index]:
                return index, step - self.starts[index]
        return 0, step

    def get_lr(self) -> list[float]:
        index, local = self._active()
        scheduler = self.schedulers[index]
        scheduler.last_epoch = local
        return scheduler.get_lr()

    def state_dict(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "schedulers")}
        state["schedulers"] = [s.state_dict() for s in self.schedulers]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        for scheduler, child in zip(self.schedulers, state.pop("schedulers", [])):
            scheduler.load_state_dict(child)
        self.__dict__.update(state)
