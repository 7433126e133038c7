"""Moving a batch of nested containers onto the trainer's device."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

_CPU = torch.device("cpu")


def batch_mover(device: torch.device) -> Callable[[Any], Any]:
    """The function the loop moves each batch with, chosen once per device.

    On the CPU the usual batch is already there, and `tensor.is_cpu` says so without making a device object per
    tensor. A CUDA target copies with `non_blocking=True`: from pinned host memory that overlaps with compute.
    Both are plain functions (a `partial` of one), so a trainer holding one still pickles for spawned workers.
    """
    if device.type == "cpu":
        return move_to_cpu
    return functools.partial(move_to_device, device=device, non_blocking=device.type == "cuda")


def move_to_cpu(batch: Any) -> Any:
    """`move_to_device(batch, cpu)`, returning at once when a tensor or a tuple/list of tensors is there already."""
    kind = type(batch)
    if kind is tuple or kind is list:
        for item in batch:
            if type(item) is not torch.Tensor or not item.is_cpu:
                return move_to_device(batch, _CPU)
        return batch
    if kind is torch.Tensor and batch.is_cpu:
        return batch
    return move_to_device(batch, _CPU)


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
