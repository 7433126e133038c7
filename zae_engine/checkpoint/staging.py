"""A copy of a training state in host memory, taken at a step boundary, so training goes on while it is written.

The copy goes into buffers kept from the previous save (per place in the state; replaced when a shape or dtype
changes), so a save after the first costs one memcpy per tensor, not fresh memory the kernel must fault in. At
most one save is in flight (the state manager waits or skips otherwise), so a buffer is never overwritten
while it is being written. CUDA tensors go into pinned buffers with non-blocking copies queued on the current
stream, and an event recorded after the last one: the writer waits for that event, the training stream never
does, and whatever the next step does to the originals is queued after the copies. Containers are rebuilt, so
later changes to the trainer's dicts and lists (learning rates, history) do not reach the copy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class HostStaging:
    """Copies states into host memory; owns the pinned buffers CUDA tensors are copied into."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}  # place in the state -> host buffer (pinned for CUDA tensors)

    def copy(self, state: Any) -> tuple[Any, Callable[[], None]]:
        """(the copy, a function that returns once every queued device-to-host copy has landed)."""
        streams: dict[torch.device, None] = {}

        def visit(value: Any, path: str) -> Any:
            if isinstance(value, torch.Tensor):
                value = value.detach()
                cuda = value.device.type == "cuda"
                if cuda:
                    streams[value.device] = None
                buffer = self._buffer(path, value, pinned=cuda)
                buffer.copy_(value, non_blocking=cuda)
                return buffer
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

    def _buffer(self, path: str, tensor: torch.Tensor, pinned: bool) -> torch.Tensor:
        buffer = self._buffers.get(path)
        if (
            buffer is None
            or buffer.shape != tensor.shape
            or buffer.dtype != tensor.dtype
            or buffer.is_pinned() != pinned
        ):
            buffer = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu", pin_memory=pinned)
            self._buffers[path] = buffer
        return buffer

    def release(self) -> None:
        """Give the host memory back (at the end of a run)."""
        self._buffers.clear()
