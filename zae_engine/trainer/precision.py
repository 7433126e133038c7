"""Where a training step meets its precision, decided once per device and option.

A step meets precision in three places: its forward runs under autocast (bf16, fp16), its loss is scaled before
backward (fp16), and the optimizer steps through the gradient scaler (fp16). `Precision` hands the loop one
plain callable for each, chosen when the trainer is placed, so the step itself has no precision branches and fp32
gets the step's own functions (`train_step`, `Tensor.backward`, `optimizer.step`): no call is added per step.
Every trainer has a `GradScaler`, enabled only for fp16, so checkpoints hold its state the same way whatever the
precision. It is the shape of Lightning Fabric's precision plugins, cut down to those three places.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

_AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_NO_CONTEXT = nullcontext()


class Precision:
    """One precision on one device: its autocast context, its gradient scaler, and the step functions they imply."""

    def __init__(self, name: str, device: torch.device, scaler_state: dict[str, Any] | None = None) -> None:
        dtype = _AMP_DTYPES[name]
        self.name = name
        self.autocast: torch.autocast | None = None if dtype is None else torch.autocast(device.type, dtype=dtype)
        self.scaler = torch.amp.GradScaler(device.type, enabled=name == "fp16")
        if scaler_state:
            self.scaler.load_state_dict(scaler_state)

    def context(self) -> AbstractContextManager:
        """Autocast, or nothing: for code that runs a step outside the loop (inference)."""
        return _NO_CONTEXT if self.autocast is None else self.autocast

    def forward(self, step: Callable[..., Any]) -> Callable[..., Any]:
        """`step` itself, or `step` under autocast (called with the same arguments)."""
        if self.autocast is None:
            return step
        return functools.partial(_under, self.autocast, step)

    def backward(self) -> Callable[[torch.Tensor], None]:
        """The loss's backward: `Tensor.backward` itself, or on the loss scaled by the gradient scaler."""
        if not self.scaler.is_enabled():
            return torch.Tensor.backward
        return functools.partial(_scaled_backward, self.scaler)

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> Callable[[], Any]:
        """The optimizer's own `step`, or the scaler's step (skipped on overflowing gradients) and its update."""
        if not self.scaler.is_enabled():
            return optimizer.step
        return functools.partial(_scaled_step, self.scaler, optimizer)

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Before clipping: clip the true gradients, not the scaled ones (nothing to do unless fp16)."""
        self.scaler.unscale_(optimizer)


def _under(autocast: torch.autocast, step: Callable[..., Any], *args: Any) -> Any:
    with autocast:
        return step(*args)


def _scaled_backward(scaler: torch.amp.GradScaler, loss: torch.Tensor) -> None:
    scaler.scale(loss).backward()


def _scaled_step(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> None:
    scaler.step(optimizer)
    scaler.update()
