"""One rank's share of a run: join the group, shard the data, let the strategy (DDP, FSDP) place the model, train.

The same code serves workers this plugin spawns and processes started by torchrun; only the way the
process group is joined differs (the launcher's store with an explicit rank, or env://).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from zae_mpu.ports import join_hosted_store
from zae_mpu.sharding import shard_loader
from zae_mpu.strategies import make_strategy

if TYPE_CHECKING:
    from collections.abc import Iterable

    from zae_engine.trainer.loop import Trainer

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class RankPlan:
    """Where this rank sits in the run and how it joins it."""

    rank: int
    world_size: int
    device: torch.device
    init_method: str  # "env://" under torchrun
    backend: str
    timeout_s: float
    seed: int | None  # the DistributedSampler seed; None: rank 0's torch seed, shared with all ranks
    hosted_store: bool = False  # init_method is a TCPStore the launcher serves: join it as a client
    handed_back: bool = False  # a spawned worker: rank 0 hands the result back, the other ranks' objects are dropped


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def default_backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def run_rank(
    trainer: Trainer, plan: RankPlan, n_epoch: int, loader: Iterable, valid_loader: Iterable | None, total: bool = False
) -> None:
    """Train on this rank; joins (and afterwards leaves) the process group unless one is already up."""
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group(backend=plan.backend, timeout=timedelta(seconds=plan.timeout_s), **_joining(plan))
    addon = trainer.addon("mpu")
    strategy = make_strategy(addon.config, plan.device)
    completed = False
    try:
        if addon.config.shard_data:
            rank, world = dist.get_rank(), dist.get_world_size()
            seed = plan.seed if plan.seed is not None else _rank_zero_seed(plan)
            loader, train_sampler = shard_loader(loader, rank, world, seed, "training loader")
            valid_loader, valid_sampler = shard_loader(valid_loader, rank, world, seed, "validation loader")
            addon.samplers = tuple(s for s in (train_sampler, valid_sampler) if s is not None)
        strategy.setup(trainer, loader)
        trainer.run_in_process(n_epoch, loader, valid_loader, total=total)
        completed = True
    finally:
        try:
            keep = not plan.handed_back or plan.rank == 0  # whole state only where someone reads it
            strategy.teardown(trainer, completed, keep)  # the user's module again, usable after the group is gone
        finally:
            addon.samplers = ()
            if owns_group and dist.is_initialized():
                dist.destroy_process_group()


def _joining(plan: RankPlan) -> dict[str, Any]:
    """How this rank finds the others: the launcher's store, torchrun's variables, or the user's address."""
    if plan.hosted_store:
        store = join_hosted_store(plan.init_method, plan.timeout_s)
        return {"store": store, "rank": plan.rank, "world_size": plan.world_size}
    if plan.init_method == "env://":
        return {"init_method": plan.init_method}
    return {"init_method": plan.init_method, "rank": plan.rank, "world_size": plan.world_size}


def _rank_zero_seed(plan: RankPlan) -> int:
    """Every rank must shuffle alike: use rank 0's seed (independent processes may not share one)."""
    where = plan.device if plan.backend == "nccl" else torch.device("cpu")
    seed = torch.tensor([torch.initial_seed() % 2**31], dtype=torch.int64, device=where)
    dist.broadcast(seed, src=0)
    return int(seed.item())
