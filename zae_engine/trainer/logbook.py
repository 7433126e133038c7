"""Per-step results of one epoch, kept on the device until somebody reads them.

Writing a step costs one small device copy per scalar key and never synchronises with the host;
reading (the epoch summary, a progress refresh, `log_train`) does, at a bounded rate.
Memory: 4 bytes per step per scalar key, reused across epochs.
"""

from __future__ import annotations

import math
from typing import Any

import torch

_INITIAL_CAPACITY = 1024


class StepLog:
    """The results `train_step`/`test_step` returned during the current epoch."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.count = 0
        self._capacity = _INITIAL_CAPACITY
        self._buffers: dict[str, torch.Tensor] = {}  # scalar key -> 1-D float32 buffer (reused)
        self._slots: dict[str, Any] = {}  # key -> its buffer, or a list for non-scalar values

    def reset(self) -> None:
        self.count = 0
        self._slots = {}

    def append(self, result: dict[str, Any]) -> None:
        n = self.count
        if n == self._capacity:
            self._grow()
        slots = self._slots
        for key, value in result.items():
            slot = slots.get(key)
            if slot is None:
                slot = self._open_slot(key, value)
            if slot.__class__ is list:
                slot.append(value.detach() if isinstance(value, torch.Tensor) else value)
            elif isinstance(value, torch.Tensor):
                slot[n] = value.detach()
            else:
                slot[n] = value
        self.count = n + 1

    def _open_slot(self, key: str, value: Any) -> Any:
        is_scalar = (isinstance(value, torch.Tensor) and value.dim() == 0) or isinstance(value, (int, float))
        if not is_scalar or isinstance(value, bool):
            slot: Any = []
        else:
            slot = self._buffers.get(key)
            if slot is None or slot.numel() != self._capacity:
                slot = torch.zeros(self._capacity, dtype=torch.float32, device=self.device)
                self._buffers[key] = slot
            if self.count:  # a key that appears mid-epoch: earlier steps read as NaN, not 0
                slot[: self.count] = math.nan
        self._slots[key] = slot
        return slot

    def _grow(self) -> None:
        self._capacity *= 2
        for key, old in list(self._buffers.items()):
            new = torch.empty(self._capacity, dtype=old.dtype, device=old.device)
            new[: old.numel()] = old
            self._buffers[key] = new
            if self._slots.get(key) is old:
                self._slots[key] = new

    def scalar_keys(self) -> list[str]:
        return [k for k, v in self._slots.items() if v.__class__ is not list]

    def means(self) -> dict[str, float]:
        """Epoch means of scalar results (and of one-element tensors), with one host sync."""
        n = self.count
        if n == 0:
            return {}
        keys = self.scalar_keys()
        out: dict[str, float] = {}
        if keys:
            sums = torch.stack([self._slots[k][:n].sum(dtype=torch.float64) for k in keys])
            out = {k: s / n for k, s in zip(keys, sums.tolist())}
        for key, items in self._slots.items():
            if items.__class__ is list and items and _all_single_numbers(items):
                out[key] = float(sum(float(v) for v in items) / len(items))
        return out

    def first_non_finite(self, key: str = "loss") -> int | None:
        """Index (0-based) of the first step whose `key` was NaN/Inf, or None."""
        slot = self._slots.get(key)
        if slot is None or slot.__class__ is list or self.count == 0:
            return None
        bad = torch.nonzero(~torch.isfinite(slot[: self.count]))
        return int(bad[0, 0]) if bad.numel() else None

    def as_lists(self) -> dict[str, list]:
        """Step values as plain Python lists (what `Trainer.log_train`/`log_test` show)."""
        n = self.count
        return {k: (list(v) if v.__class__ is list else v[:n].tolist()) for k, v in self._slots.items()}


def _all_single_numbers(items: list) -> bool:
    return all(
        (isinstance(v, torch.Tensor) and v.numel() == 1) or (isinstance(v, (int, float)) and not isinstance(v, bool))
        for v in items
    )
