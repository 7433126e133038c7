"""What the loop asks about where the model's state lives, so it never checks for DDP or FSDP itself.

`trainer.strategy` is this base outside distributed runs: one process, every tensor whole. A launcher add-on
(zae-mpu) puts its own strategy in place for the length of a run (and this base back afterwards); the loop and
the core add-ons call only the methods below, at the few points where the layout matters:

- `no_sync(model)`: around the early micro-batches of an accumulation group (gradients stay local);
- `rank_zero_copy(tensors)`: whole CPU tensors for rank 0 (best weights, `save_model`); a collective when sharded;
- `laid_out_like(value, reference)`: a whole tensor placed as this rank holds `reference` (EMA's average);
- `sharded`: model and optimizer state are split across ranks, so checkpoints are written by every rank;
- `read_checkpoint(path, trainer)`: a checkpoint's state laid out as this rank holds the trainer's.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from zae_engine.distributed import is_distributed, is_rank_zero

_NO_CONTEXT = nullcontext()


class Strategy:
    """One process, or a model the user wrapped in DistributedDataParallel themselves: nothing is sharded."""

    name: ClassVar[str] = "single"
    #: model/optimizer state is split across ranks: reading it whole is a collective every rank must join
    sharded: ClassVar[bool] = False

    def no_sync(self, model: nn.Module) -> AbstractContextManager:
        """The context for a micro-batch that is not the last of its accumulation group."""
        if getattr(model, "no_sync", None) is not None and is_distributed():
            return model.no_sync()  # a DDP model wrapped by the user: skip its all-reduce
        return _NO_CONTEXT

    def rank_zero_copy(self, tensors: Mapping[str, torch.Tensor], copy: bool = True) -> dict[str, torch.Tensor] | None:
        """Whole, detached CPU tensors on rank 0 (None on the others); every rank calls it.

        `copy=False` lets tensors already whole on the CPU through as they are (for a write that follows at once).
        """
        if not is_rank_zero():
            return None
        return {key: value.detach().to("cpu", copy=copy) for key, value in tensors.items()}

    def laid_out_like(self, value: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """`value` (whole, e.g. an average of the weights) on `reference`'s device, in its dtype, and under a
        sharding strategy cut to this rank's piece of it, like `reference`."""
        return value.to(reference.device, reference.dtype)

    def read_checkpoint(self, path: Path, trainer: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """(state, meta) of the checkpoint `path` names (a folder or a `.ckpt` file), as this rank holds the
        trainer's state: here whole on the CPU (a sharded checkpoint is assembled). Every rank calls it."""
        from zae_engine.checkpoint.store import read_any

        return read_any(path)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
