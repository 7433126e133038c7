"""Rank helpers every add-on uses for side effects; trivially right without torch.distributed."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import TypeVar

import torch
import torch.distributed as dist

F = TypeVar("F", bound=Callable)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's global rank: the process group's, else torchrun's RANK, else 0."""
    if is_distributed():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_rank_zero() -> bool:
    return get_rank() == 0


def rank_zero_only(fn: F) -> F:
    """Run `fn` on rank 0 only; other ranks get None. Files, trackers and console output go through this."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if is_rank_zero():
            return fn(*args, **kwargs)
        return None

    return wrapper  # type: ignore[return-value]


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _collective_device(device: torch.device) -> torch.device:
    """gloo reduces CPU tensors, nccl CUDA ones: small flags and metrics go where the backend wants them."""
    return device if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_mean(values: Mapping[str, float], device: torch.device) -> dict[str, float]:
    """Average scalar metrics over ranks with one collective; identity in a single process."""
    if not is_distributed() or not values:
        return dict(values)
    keys = sorted(values)
    packed = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_collective_device(device))
    dist.all_reduce(packed)
    packed /= dist.get_world_size()
    return dict(zip(keys, packed.tolist()))


def _agree(flag: bool, device: torch.device, op: dist.ReduceOp) -> bool:
    if not is_distributed():
        return flag
    packed = torch.tensor([int(flag)], dtype=torch.int32, device=_collective_device(device))
    dist.all_reduce(packed, op=op)
    return bool(packed.item())


def max_over_ranks(value: int, device: torch.device) -> int:
    """The largest of every rank's `value`: one all-reduce (MAX); the value itself in one process."""
    if not is_distributed():
        return value
    packed = torch.tensor([int(value)], dtype=torch.int64, device=_collective_device(device))
    dist.all_reduce(packed, op=dist.ReduceOp.MAX)
    return int(packed.item())


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when it is True on at least one: one all-reduce (MAX), no barrier."""
    return _agree(flag, device, dist.ReduceOp.MAX)


def every_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank only when it is True on all of them: one all-reduce (MIN)."""
    return _agree(flag, device, dist.ReduceOp.MIN)


def all_gather_rows(tensor: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    """Every rank's `tensor` (rows may differ in number between ranks), in rank order; [tensor] in one process."""
    if not is_distributed():
        return [tensor]
    where = _collective_device(device)
    local = tensor.detach().to(where)
    rows = torch.tensor([local.shape[0] if local.dim() else 1], dtype=torch.int64, device=where)
    counts = [torch.zeros_like(rows) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, rows)
    longest = int(max(c.item() for c in counts))
    flat = local.reshape(-1, *local.shape[1:]) if local.dim() else local.reshape(1)
    padded = torch.zeros((longest, *flat.shape[1:]), dtype=flat.dtype, device=where)
    padded[: flat.shape[0]] = flat
    gathered = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(gathered, padded)
    return [part[: int(count.item())].to(tensor.device) for part, count in zip(gathered, counts)]


def all_gather_objects(value: object) -> list | None:
    """Every rank's `value` in rank order (pickled in memory between this run's own processes); None in one process."""
    if not is_distributed():
        return None
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def average_gradients(grads: list[torch.Tensor]) -> None:
    """Mean of each gradient over ranks, in place (what DDP does, for backwards it did not sync)."""
    if not is_distributed():
        return
    world = dist.get_world_size()
    for grad in grads:
        dist.all_reduce(grad)
        grad.div_(world)
