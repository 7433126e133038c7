"""A copy of a training state in host memory, taken at a step boundary, so training goes on while it is written.

CPU tensors are cloned (the optimizer updates the originals in place on the next step). CUDA tensors are
copied into pinned host buffers with non-blocking copies queued on the current stream, and an event recorded
after the last copy: the writer waits for that event, the training stream never does, and whatever the next
step does to the originals is queued after the copies. The pinned buffers are kept for the next save (same
place in the state, shape and dtype), so a run pins its host memory once. Containers are rebuilt, so later
changes to the trainer's dicts and lists (learning rates, history) do not reach the copy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class HostStaging:
    """Copies states into host memory; owns the pinned buffers CUDA tensors are copied into."""

    def __init__(self) -> None:
        self._pinned: dict[tuple[str, tuple[int, ...], torch.dtype], torch.Tensor] = {}

    def copy(self, state: Any) -> tuple[Any, Callable[[], None]]:
        """(the copy, a function that returns once every queued device-to-host copy has landed)."""
        streams: dict[torch.device, None] = {}

        def visit(value: Any, path: str) -> Any:
            if isinstance(value, torch.Tensor):
                value = value.detach()
                if value.device.type == "cuda":
                    streams[value.device] = None
                    buffer = self._buffer(path, value)
                    buffer.copy_(value, non_blocking=True)
                    return buffer
                return value.clone()
            if isinstance(value, dict):
                return {key: visit(item, f"{path}/{key}") for key, item in value.items()}
            if isinstance(value, (list, tuple)):
                items = [visit(item, f"{path}/{i}") for i, item in enumerate(value)]
                return items if isinstance(value, list) else tuple(items)
            return value  # str, int, float, bool, None: immutable

        copied = visit(state, "")
        events = []
        for device in streams:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(device))
            events.append(event)

        def landed() -> None:
            for event in events:
                event.synchronize()

        return copied, landed

    def _buffer(self, path: str, tensor: torch.Tensor) -> torch.Tensor:
        key = (path, tuple(tensor.shape), tensor.dtype)
        buffer = self._pinned.get(key)
        if buffer is None:
            buffer = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu", pin_memory=True)
            self._pinned[key] = buffer
        return buffer

    def release(self) -> None:
        """Give the pinned memory back (at the end of a run)."""
        self._pinned.clear()
