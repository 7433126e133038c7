"""The `mpu` add-on's options (torch-free: `zae addons show mpu` reads them without importing torch)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from zae_engine.trainer.addons.base import AddOnConfig

#: options that mean something only under one strategy, with their do-nothing value
_FSDP_ONLY = {"reshard_after_forward": True, "cpu_offload": False, "reduce_in_fp32": True}
_DDP_ONLY = {"find_unused_parameters": False, "ddp_options": {}}


class MultiGPUConfig(AddOnConfig):
    """Data-parallel training on several devices: torch DDP, or FSDP2 sharding (spawned, torchrun or SLURM)."""

    init_method: str = Field(
        "tcp://localhost:12355",
        description="where spawned workers meet (tcp://HOST:PORT, file://PATH or env://); ignored under torchrun; "
        "under SLURM its port is used when neither MASTER_PORT nor SLURM_JOB_ID gives one",
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
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="ddp: every rank holds the whole model and averages gradients; fsdp: parameters, gradients and "
        "optimizer state are sharded across ranks (FSDP2, torch>=2.6)",
    )
    block_classes: list[str] | None = Field(
        None,
        description="class names of the model's blocks, which fsdp shards one by one and activation checkpointing "
        "recomputes; default: every child with parameters of the model's ModuleLists and Sequentials",
    )
    activation_checkpointing: bool = Field(
        False, description="recompute each block's activations in backward instead of keeping them (ddp and fsdp)"
    )
    reshard_after_forward: bool = Field(
        True, description="fsdp: free gathered parameters after forward (less memory, one more all-gather)"
    )
    cpu_offload: bool = Field(
        False, description="fsdp: keep sharded parameters, gradients and optimizer state in host memory (CUDA only)"
    )
    reduce_in_fp32: bool = Field(
        True, description="fsdp with precision bf16/fp16: reduce gradients in fp32 (False: in the half type)"
    )
    slurm: Literal["auto", "off"] = Field(
        "auto", description="auto: a process srun started among several tasks joins the others; off: ignore SLURM"
    )
    find_unused_parameters: bool = Field(False, description="DDP option for models that skip parameters in forward")
    ddp_options: dict[str, Any] = Field(default_factory=dict, description="extra DistributedDataParallel keywords")

    @model_validator(mode="after")
    def _options_of_the_strategy(self) -> MultiGPUConfig:
        other = _DDP_ONLY if self.strategy == "fsdp" else _FSDP_ONLY
        chosen = [name for name, idle in other.items() if getattr(self, name) != idle]
        if chosen:
            owner = "ddp" if self.strategy == "fsdp" else "fsdp"
            raise ValueError(
                f"{', '.join(chosen)} applies only to strategy='{owner}', but strategy is '{self.strategy}'; "
                f"remove it or set strategy='{owner}'"
            )
        if self.block_classes is not None and not self.block_classes:
            raise ValueError("block_classes is empty; name at least one class, or leave it out for the default")
        return self
