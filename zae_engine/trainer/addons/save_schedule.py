"""When a checkpoint is due inside an epoch: every n optimizer steps, or every n minutes by rank 0's clock.

A step count is the same on every rank, so `every_n_steps` needs no agreement. Clocks differ, so under
torch.distributed rank 0 alone reads its clock and shares what it decided, with one small broadcast at steps
every rank knows in advance: each broadcast also carries the step of the next one, spaced so that about
twenty fall in one interval at the measured step rate, never closer than `MIN_SPACING` steps apart. In one
process the clock is read after every optimizer step (a few tens of nanoseconds).
"""

from __future__ import annotations

from time import monotonic

import torch

from zae_engine.distributed import broadcast_ints, is_distributed, is_rank_zero

MIN_SPACING = 10  # optimizer steps between two broadcasts at least (never one per step)
MAX_SPACING = 1000
CHECKS_PER_INTERVAL = 20


class SaveSchedule:
    def __init__(self, every_n_steps: int | None, every_n_minutes: float | None) -> None:
        self.every_n_steps = every_n_steps
        self.interval = None if every_n_minutes is None else every_n_minutes * 60.0
        self._last_save = monotonic()
        self._next_check = MIN_SPACING
        self._checked_at = (0, monotonic())  # (step, time) of the last broadcast
        self.active = every_n_steps is not None or self.interval is not None

    def start(self, steps_done: int) -> None:
        """A run starts (or resumes) after `steps_done` optimizer steps: the clock starts now."""
        now = monotonic()
        self._last_save = now
        self._checked_at = (steps_done, now)
        self._next_check = steps_done + MIN_SPACING

    def saved(self) -> None:
        self._last_save = monotonic()

    def due(self, steps_done: int, device: torch.device) -> bool:
        """Whether to save after this optimizer step; the same answer on every rank."""
        if self.every_n_steps is not None and steps_done % self.every_n_steps == 0:
            return True
        if self.interval is None:
            return False
        if not is_distributed():
            return monotonic() - self._last_save >= self.interval
        if steps_done < self._next_check:
            return False
        decision = [0, steps_done + MIN_SPACING]
        if is_rank_zero():
            now = monotonic()
            step_seconds = (now - self._checked_at[1]) / max(1, steps_done - self._checked_at[0])
            spacing = int(self.interval / CHECKS_PER_INTERVAL / max(step_seconds, 1e-9))
            decision = [
                int(now - self._last_save >= self.interval),
                steps_done + min(MAX_SPACING, max(MIN_SPACING, spacing)),
            ]
        due, self._next_check = broadcast_ints(decision, device)
        self._checked_at = (steps_done, monotonic())
        return bool(due)
