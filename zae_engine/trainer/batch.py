"""Moving a batch of nested containers onto the trainer's device."""

from __future__ import annotations

from typing import Any

import torch


def move_to_device(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Tensors anywhere in tuples, lists and dicts go to `device`; everything else passes through.

    `non_blocking` only helps with pinned host memory and a CUDA target; it is harmless elsewhere.
    """
    kind = type(batch)
    if kind is torch.Tensor:
        return batch if batch.device == device else batch.to(device, non_blocking=non_blocking)
    if kind is list or kind is tuple:  # the common (x, y): when every item is a tensor already there, no copy at all
        for item in batch:
            if type(item) is not torch.Tensor or item.device != device:
                break
        else:
            return batch
        return kind(
            [
                (item if item.device == device else item.to(device, non_blocking=non_blocking))
                if type(item) is torch.Tensor
                else move_to_device(item, device, non_blocking)
                for item in batch
            ]
        )
    if kind is dict:
        return {key: move_to_device(value, device, non_blocking) for key, value in batch.items()}
    if isinstance(batch, torch.Tensor):  # tensor subclasses (e.g. nn.Parameter)
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return kind(*(move_to_device(item, device, non_blocking) for item in batch))
    if isinstance(batch, (list, tuple)):
        return kind(move_to_device(item, device, non_blocking) for item in batch)
    if isinstance(batch, dict):
        return kind({key: move_to_device(value, device, non_blocking) for key, value in batch.items()})
    return batch
