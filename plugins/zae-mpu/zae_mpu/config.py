"""The `mpu` add-on's options (torch-free: `zae addons show mpu` reads them without importing torch)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from zae_engine.trainer.addons.base import AddOnConfig


class MultiGPUConfig(AddOnConfig):
    """Data-parallel training on several devices with torch DDP (spawned workers or torchrun)."""

    init_method: str = Field(
        "tcp://localhost:12355",
        description="where spawned workers meet (tcp://HOST:PORT, file://PATH or env://); ignored under torchrun",
    )
    strict_port: bool = Field(False, description="refuse a busy init_method port instead of switching to a free one")
    backend: Literal["auto", "gloo", "nccl", "mpi", "ucc"] = Field(
        "auto", description="process-group backend; auto: nccl for CUDA devices, gloo for CPU"
    )
    timeout: float = Field(1800.0, gt=0, description="seconds a collective may wait for the other ranks")
    threads_per_worker: int | None = Field(
        None, ge=1, description="torch threads per spawned worker; default: CPU cores / workers"
    )
    start_method: Literal["forkserver", "spawn"] = Field(
        "forkserver", description="how workers start; forkserver imports torch once for all workers and runs"
    )
    shard_data: bool = Field(True, description="re-make DataLoaders over a DistributedSampler (off: shard yourself)")
    find_unused_parameters: bool = Field(False, description="DDP option for models that skip parameters in forward")
    ddp_options: dict[str, Any] = Field(default_factory=dict, description="extra DistributedDataParallel keywords")
