"""MultiGPUAddon: data-parallel training on torch.distributed (DDP or FSDP2), spawned here, by torchrun or by srun.

`trainer.run()` with several devices starts one worker per device, trains there, and loads what rank 0
trained back into this process, so the user's own model, optimizer and scheduler objects hold the result
(plus `history`, `best` and the best weights). Under torchrun, or in a task srun started among several, the
process joins the others instead. How each rank holds the model is the strategy's business (`strategies`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from zae_engine.errors import ConfigError, TrainingInterrupted
from zae_engine.trainer.addons.base import LauncherAddon
from zae_mpu.config import MultiGPUConfig
from zae_mpu.handback import take_back
from zae_mpu.ports import store_address
from zae_mpu.rank import RankPlan, default_backend, launched_by_torchrun, run_rank
from zae_mpu.slurm import slurm_task
from zae_mpu.spawn import SpawnPlan, spawn_run
from zae_mpu.strategies import check_fsdp, check_fsdp_run, fsdp_available

if TYPE_CHECKING:
    from collections.abc import Iterable

    from torch.utils.data import DistributedSampler


class MultiGPUAddon(LauncherAddon):
    """A launcher: `run()` with several devices trains in one process per device (or in torchrun's processes)."""

    name = "mpu"
    Config = MultiGPUConfig
    config: MultiGPUConfig

    def __init__(self, config: MultiGPUConfig | None = None, /, **options: Any) -> None:
        super().__init__(config, **options)
        self.samplers: tuple[DistributedSampler, ...] = ()  # this rank's samplers, re-seeded every epoch

    def on_attach(self) -> None:
        """Refuse now what could not run: FSDP2 missing from this torch, host offload without CUDA, blocks or
        optimized tensors FSDP cannot shard."""
        if self.config.strategy != "fsdp":
            return
        if not fsdp_available():
            raise ConfigError(
                f"MultiGPUAddon: strategy='fsdp' needs torch>=2.6 (torch.distributed.fsdp.fully_shard); this is torch "
                f"{torch.__version__}. Upgrade torch, or use strategy='ddp'"
            )
        if self.config.cpu_offload and any(d.type != "cuda" for d in self.trainer.devices):
            raise ConfigError(
                "MultiGPUAddon: cpu_offload=True moves FSDP's shards from CUDA devices to host memory, but this run "
                "trains on the CPU, where they already are; drop cpu_offload"
            )
        check_fsdp(self.trainer)

    def on_epoch_start(self, epoch: int) -> None:
        for sampler in self.samplers:
            sampler.set_epoch(epoch)  # a different shuffle every epoch, the same on every rank

    def launch(self, n_epoch: int, loader: Iterable, valid_loader: Iterable | None = None, total: bool = False) -> None:
        """Where the run happens: in the group torchrun or srun started, in this process (one device), or in workers."""
        trainer = self.trainer
        if launched_by_torchrun() or dist.is_initialized():
            return run_rank(trainer, self._joined_plan(), n_epoch, loader, valid_loader, total)
        task = slurm_task(os.environ, self._fallback_port()) if self.config.slurm == "auto" else None
        if task is not None:
            # as torchrun would: rank-0-only output after run() (the group is gone by then) is decided by RANK
            for name, value in (("RANK", task.rank), ("WORLD_SIZE", task.world_size), ("LOCAL_RANK", task.local_rank)):
                os.environ.setdefault(name, str(value))
            plan = self._plan(task.rank, task.world_size, task.local_rank, task.init_method)
            return run_rank(trainer, plan, n_epoch, loader, valid_loader, total)
        if len(trainer.devices) == 1:
            return trainer.run_in_process(n_epoch, loader, valid_loader, total=total)
        if self.config.strategy == "fsdp":  # before any worker starts (a loader to shard gets a length there)
            check_fsdp_run(trainer, None if self.config.shard_data else loader)
        devices = tuple(str(d) for d in trainer.devices)
        world = len(devices)
        plan = SpawnPlan(
            devices=devices,
            init_method=self.config.init_method,
            backend=self._backend(trainer.devices[0]),
            timeout_s=self.config.timeout,
            seed=torch.initial_seed() % 2**31,
            threads=self.config.threads_per_worker or max(1, (os.cpu_count() or 1) // world),
            folder="",
            n_epoch=n_epoch,
            total=total,
            start_method=self.config.start_method,
            strict_port=self.config.strict_port,
        )
        state, stopped = spawn_run(trainer, plan, loader, valid_loader)
        take_back(trainer, state)
        if stopped is not None:
            raise TrainingInterrupted(stopped)  # the workers stopped on a signal, after their interrupted checkpoint

    def _joined_plan(self) -> RankPlan:
        """Rank and device when torchrun (or the user) started the process group."""
        rank = dist.get_rank() if dist.is_initialized() else int(os.environ["RANK"])
        world = dist.get_world_size() if dist.is_initialized() else int(os.environ["WORLD_SIZE"])
        return self._plan(rank, world, int(os.environ.get("LOCAL_RANK", rank)), "env://")

    def _plan(self, rank: int, world: int, local_rank: int, init_method: str) -> RankPlan:
        """This process's place in a group others started too: its device is the `local_rank`-th."""
        devices = self.trainer.devices
        if len(devices) > 1:
            if local_rank >= len(devices):
                raise ConfigError(
                    f"MultiGPUAddon: the local rank is {local_rank} but only {len(devices)} devices were given; start "
                    f"at most {len(devices)} processes per node (--nproc-per-node, --ntasks-per-node) or list more "
                    "devices"
                )
            device = devices[local_rank]
        elif devices[0].type == "cuda":
            device = torch.device("cuda", local_rank)
        else:
            device = devices[0]
        return RankPlan(
            rank=rank,
            world_size=world,
            device=device,
            init_method=init_method,
            backend=self._backend(device),
            timeout_s=self.config.timeout,
            seed=None,
        )

    def _fallback_port(self) -> int:
        try:
            return store_address(self.config.init_method)[1]
        except ConfigError:
            return 12355

    def _backend(self, device: torch.device) -> str:
        return default_backend(device) if self.config.backend == "auto" else self.config.backend
