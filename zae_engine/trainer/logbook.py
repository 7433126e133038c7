"""Per-step results of one epoch, kept on the device until somebody reads them.

Writing a step appends each value (detached) to a short list and never synchronises with the host; every
`_FLUSH_EVERY` steps, and before any read, each scalar key's list becomes one `torch.stack` copied into a
reused float32 buffer. On the CPU there is no device to wait for, so a 0-d tensor is kept as its Python number
instead: the tensor is freed at once rather than held until the next flush, which is cheaper per step. Reading
(the epoch summary, a progress refresh, `log_train`) syncs, at a bounded rate.
Memory: 4 bytes per step per scalar key, plus at most `_FLUSH_EVERY` pending values per key.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import torch

_INITIAL_CAPACITY = 1024
_FLUSH_EVERY = 256  # steps kept as separate tensors before one stack copies them into the buffer
_PLAIN_NUMBERS = frozenset((float, int))  # not bool: True is not a loss


class StepLog:
    """The results `train_step`/`test_step` returned during the current epoch."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._as_numbers = device.type == "cpu"  # 0-d tensors kept as numbers: reading one costs no sync there
        self.count = 0
        self._flushed = 0  # steps already copied into the buffers
        self._buffers: dict[str, torch.Tensor] = {}  # scalar key -> 1-D float32 buffer (reused across epochs)
        self._columns: dict[str, list] = {}  # scalar key -> values since the last flush; other keys -> all values
        self._keepers: dict[str, Callable[[Any], Any]] = {}  # key -> what a step's value is stored as
        self._scalar: set[str] = set()

    def reset(self) -> None:
        self.count = self._flushed = 0
        self._columns = {}
        self._keepers = {}
        self._scalar = set()

    def append(self, result: dict[str, Any]) -> None:
        columns, keepers = self._columns, self._keepers
        for key, value in result.items():
            keep = keepers.get(key)
            if keep is None:
                keep = self._keeper(key, value)
            try:
                value = keep(value)  # what the key's first value called for (no type checks per step)
            except (TypeError, RuntimeError):  # a value unlike the key's first one
                value = self._kept(key, value)
            columns[key].append(value)
        self.count += 1
        if len(result) != len(columns):  # a key seen before is missing from this step
            self._pad_missing()
        if self.count - self._flushed >= _FLUSH_EVERY:
            self._flush()

    def _keeper(self, key: str, value: Any) -> Callable[[Any], Any]:
        """How the key's values are stored, chosen by its first value this epoch (or since a restore)."""
        if key not in self._columns:
            self._open_column(key, value)
        if not isinstance(value, torch.Tensor):
            keep = functools.partial(_stored, as_number=self._as_numbers and key in self._scalar)
        elif key in self._scalar and self._as_numbers:
            keep = torch.Tensor.item  # a 0-d tensor raises nothing; any other value falls back to _kept
        else:
            keep = torch.Tensor.detach
        self._keepers[key] = keep
        return keep

    def _open_column(self, key: str, value: Any) -> None:
        scalar = (isinstance(value, torch.Tensor) and value.dim() == 0) or isinstance(value, (int, float))
        column: list = []
        if scalar and not isinstance(value, bool):
            self._scalar.add(key)
            # a key that appears mid-epoch: earlier steps read as NaN, not 0
            column.extend([math.nan] * (self.count - self._flushed))
            if self._flushed:
                self._buffer(key)[: self._flushed] = math.nan
        self._columns[key] = column

    def _kept(self, key: str, value: Any) -> Any:
        return _stored(value, self._as_numbers and key in self._scalar)

    def _pad_missing(self) -> None:
        pending = self.count - self._flushed
        for key in self._scalar:
            column = self._columns[key]
            if len(column) < pending:
                column.append(math.nan)

    def _buffer(self, key: str) -> torch.Tensor:
        """The key's buffer, grown (doubling) to hold `count` steps."""
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < self.count:
            capacity = max(_INITIAL_CAPACITY, 1 << (self.count - 1).bit_length())
            grown = torch.full((capacity,), math.nan, dtype=torch.float32, device=self.device)
            if buffer is not None and self._flushed:
                grown[: self._flushed] = buffer[: self._flushed]
            self._buffers[key] = buffer = grown
        return buffer

    def _flush(self) -> None:
        start, end = self._flushed, self.count
        if end == start:
            return
        for key in self._scalar:
            column = self._columns[key]
            self._buffer(key)[start:end] = _stack(column, self.device)
            column.clear()
        self._flushed = end

    def scalar_keys(self) -> list[str]:
        return [k for k in self._columns if k in self._scalar]

    def means(self) -> dict[str, float]:
        """Epoch means of scalar results (and of one-element tensors), with one host sync."""
        n = self.count
        if n == 0:
            return {}
        self._flush()
        keys = self.scalar_keys()
        out: dict[str, float] = {}
        if keys:
            sums = torch.stack([self._buffers[k][:n].sum(dtype=torch.float64) for k in keys])
            out = {k: s / n for k, s in zip(keys, sums.tolist())}
        for key, items in self._columns.items():
            if key not in self._scalar and items and _all_single_numbers(items):
                out[key] = float(sum(float(v) for v in items) / len(items))
        return out

    def first_non_finite(self, key: str = "loss") -> int | None:
        """Index (0-based) of the first step whose `key` was NaN/Inf, or None."""
        if key not in self._scalar or self.count == 0:
            return None
        self._flush()
        bad = torch.nonzero(~torch.isfinite(self._buffers[key][: self.count]))
        return int(bad[0, 0]) if bad.numel() else None

    def keys(self) -> list[str]:
        return list(self._columns)

    def values_of(self, key: str) -> list:
        """One key's step values as a new list (scalars as floats: one host sync)."""
        if key in self._scalar:
            self._flush()
            return self._buffers[key][: self.count].tolist()
        return list(self._columns[key])

    def as_lists(self) -> dict[str, list]:
        """Step values as plain Python lists."""
        return {key: self.values_of(key) for key in self._columns}

    def state_dict(self) -> dict[str, Any]:
        """The steps recorded so far, for a checkpoint taken inside an epoch: scalar keys as float32 tensors (the
        values the epoch means are made of, bit for bit), other keys as their lists (tensors and JSON values)."""
        self._flush()
        n = self.count
        return {
            "count": n,
            "scalars": {key: self._buffers[key][:n].to("cpu", copy=True) for key in self.scalar_keys()},
            "others": {key: list(items) for key, items in self._columns.items() if key not in self._scalar},
            "order": list(self._columns),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue an epoch from `state_dict()`: the next step appends after the restored ones."""
        self.reset()
        n = int(state["count"])
        scalars, others = state["scalars"], state["others"]
        self.count = self._flushed = n
        for key in state["order"]:
            if key in scalars:
                self._scalar.add(key)
                self._columns[key] = []
                self._buffer(key)[:n] = scalars[key].to(self.device, torch.float32)
            elif key in others:
                self._columns[key] = list(others[key])


class EpochLog(MutableMapping):
    """`Trainer.log_train` / `log_test`: this epoch's per-step results, key -> list, that the user may add to.

    A key the loop records (what `train_step`/`test_step` returned) reads as a new list of its values so far; a key
    the user writes (`log["acc"] = [...]`) or appends to (`log["output"].append(x)`, a missing key starts as an
    empty list) keeps that list, and a user's list shadows a recorded key of the same name. Everything is cleared
    when the next epoch of that mode starts. The loop's own recording never goes through this (no host sync).
    """

    def __init__(self, recorded: StepLog) -> None:
        self.recorded = recorded
        self._added: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key in self._added:
            return self._added[key]
        if key in self.recorded._columns:
            return self.recorded.values_of(key)
        return self._added.setdefault(key, [])

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default

    def __contains__(self, key: object) -> bool:
        return key in self._added or key in self.recorded._columns

    def __setitem__(self, key: str, value: Any) -> None:
        self._added[key] = value

    def __delitem__(self, key: str) -> None:
        del self._added[key]

    def __iter__(self) -> Iterator[str]:
        yield from self._added
        yield from (key for key in self.recorded._columns if key not in self._added)

    def __len__(self) -> int:
        return len(self._added.keys() | self.recorded._columns.keys())

    def clear(self) -> None:
        """Start a new epoch: the loop's records and what the user added."""
        self.recorded.reset()
        self._added = {}

    def __repr__(self) -> str:
        return f"EpochLog({dict(self)!r})"


def _stored(value: Any, as_number: bool) -> Any:
    """A step's value as kept: detached from the graph; on the CPU, a scalar key's 0-d tensor as its number."""
    if not isinstance(value, torch.Tensor):
        return value
    return value.item() if as_number and value.dim() == 0 else value.detach()


def _stack(values: list, device: torch.device) -> torch.Tensor:
    """One tensor of a column's pending values: a single stack when they are same-typed tensors on the device."""
    if set(map(type, values)) <= _PLAIN_NUMBERS:  # checked in C: this runs at every log point
        return torch.tensor(values, dtype=torch.float32, device=device)
    try:
        return torch.stack(values)
    except (TypeError, RuntimeError):  # Python numbers, NaN padding, mixed dtypes or devices
        return torch.stack([torch.as_tensor(v, dtype=torch.float32, device=device).reshape(()) for v in values])


def _all_single_numbers(items: list) -> bool:
    return all(
        (isinstance(v, torch.Tensor) and v.numel() == 1) or (isinstance(v, (int, float)) and not isinstance(v, bool))
        for v in items
    )
