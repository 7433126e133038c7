"""What the zae-mpu tests add to `zae_engine.testing`, in a module spawned workers and scripts import by name.

The task, its data and the single-process trainer come from the kit (`SeparableTrainer`, `make_dataset`); here
are only the DDP trainers (workers unpickle them by module and name) and a model with a hidden layer, so that
gradient averaging has more than one layer to get right.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from zae_mpu import MultiGPUAddon

from zae_engine.distributed import get_rank, get_world_size
from zae_engine.testing import SeparableTrainer
from zae_engine.trainer.addons.base import AddOnBase, AddOnConfig


def make_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 2))


def make_uneven_mlp(seed: int = 0) -> nn.Module:
    """Layer sizes two ranks cannot split evenly (17 and 3 rows): FSDP's shards differ in length."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 17), nn.Tanh(), nn.Linear(17, 3), nn.Tanh(), nn.Linear(3, 2))


class DDPTrainer(SeparableTrainer.add_on(MultiGPUAddon)):
    """The kit's trainer under MultiGPUAddon."""


class NaNOnThirdBatchTrainer(SeparableTrainer):
    """The last rank's third batch has a NaN loss (in one process: the third batch), as bad data would give."""

    def train_step(self, batch):
        result = super().train_step(batch)
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == 3 and get_rank() == get_world_size() - 1:
            result["loss"] = result["loss"] * float("nan")
        return result


class NaNOnThirdBatchDDPTrainer(NaNOnThirdBatchTrainer.add_on(MultiGPUAddon)):
    """The same under MultiGPUAddon: only rank 1 sees the NaN."""


class FailingDDPTrainer(DDPTrainer):
    """Rank 1 raises at its third optimizer step, while rank 0 waits for it in a collective."""

    def train_step(self, batch):
        if get_rank() == 1 and self.progress_checker.get_step() == 3:
            raise ValueError("boom on rank 1 at step 3")
        return super().train_step(batch)


class LateReportingDDPTrainer(DDPTrainer):
    """Rank 1 fails at its third step in the order that used to hide its error, every time: it leaves the process
    group first (dropping the DDP wrapper and the group closes its gloo connections), so rank 0's gradient
    all-reduce breaks with "Connection closed by peer" and rank 0 exits reporting that; only once rank 0 is gone
    does rank 1 raise its own error."""

    def train_step(self, batch):
        if not hasattr(self, "peer_pids"):  # first step, on both ranks: learn each other's process id
            self.peer_pids = [None] * dist.get_world_size()
            dist.all_gather_object(self.peer_pids, os.getpid())
        if get_rank() == 1 and self.progress_checker.get_step() == 3:
            self.model = self.model.module
            dist.destroy_process_group()
            gc.collect()
            wait_until_exited(self.peer_pids[0])
            raise ValueError("boom on rank 1 at step 3")
        return super().train_step(batch)


class MeetingDDPTrainer(DDPTrainer):
    """Two runs of this trainer overlap for sure: at its first step, rank 0 of each says it is training (a file in
    `meeting_folder`) and waits, at most two minutes, until the other run says so too."""

    meeting_folder: str = ""
    meeting_runs = 2

    def train_step(self, batch):
        if get_rank() == 0 and not hasattr(self, "met"):
            folder = Path(self.meeting_folder)
            (folder / str(os.getpid())).touch()
            deadline = time.monotonic() + 120
            while len(list(folder.iterdir())) < self.meeting_runs and time.monotonic() < deadline:
                time.sleep(0.01)
            self.met = True
        return super().train_step(batch)


def wait_until_exited(pid: int) -> None:
    """Block until process `pid` has exited (gone, or a zombie nobody has reaped yet)."""
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.01)


class ProbedLinear(nn.Linear):
    """Notes the bit width of the weight its forward computes with (under FSDP: the gathered, cast weight)."""

    bits = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.bits = self.weight.element_size() * 8
        return super().forward(x)


class ProbedMLP(nn.Module):
    """An MLP whose first block reports the width of the weights it computed with."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.blocks = nn.ModuleList([ProbedLinear(10, 16), nn.Linear(16, 2)])

    @property
    def weight_bits(self) -> int:
        return self.blocks[0].bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks[1](torch.tanh(self.blocks[0](x)))


class ProbingTrainer(SeparableTrainer):
    """Reports the width of the weights the forward computed with as the step value 'weight_bits'."""

    def train_step(self, batch):
        result = super().train_step(batch)
        result["weight_bits"] = torch.tensor(float(self.unwrapped_model.weight_bits))
        return result


class ProbingDDPTrainer(ProbingTrainer.add_on(MultiGPUAddon)):
    """ProbingTrainer under MultiGPUAddon."""


class _InfiniteRowGradients(torch.autograd.Function):
    """Identity in forward; in backward rows 2 and 3 get an inf gradient while the loss scale is above 4096."""

    @staticmethod
    def forward(ctx, weight, scale):
        ctx.save_for_backward(scale)
        return weight.view_as(weight)

    @staticmethod
    def backward(ctx, grad):
        (scale,) = ctx.saved_tensors
        grad = grad.clone()
        if scale.item() > 4096.0:
            grad[2:4] = float("inf")
        return grad, None


class OverflowingLinear(nn.Linear):
    """A layer whose rows 2-3 (rank 1's shard of 4 rows on two ranks) overflow under a large loss scale."""

    loss_scale = 1.0  # set by the trainer before each step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = _InfiniteRowGradients.apply(self.weight, torch.tensor(self.loss_scale))
        return nn.functional.linear(x, weight, self.bias)


class OverflowingRows(nn.Module):
    """Only rank 1's shard holds the inf of an overflow: the step must be skipped on every rank all the same."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.blocks = nn.ModuleList([OverflowingLinear(10, 4), nn.Linear(4, 2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks[1](torch.tanh(self.blocks[0](x)))


class ScaleAwareTrainer(SeparableTrainer):
    """Tells an OverflowingRows model the current loss scale, so its rows overflow for the first steps only."""

    def train_step(self, batch):
        scale = float(self.scaler.get_scale()) if self.scaler.is_enabled() else 1.0
        self.unwrapped_model.blocks[0].loss_scale = scale
        return super().train_step(batch)


class ScaleAwareDDPTrainer(ScaleAwareTrainer.add_on(MultiGPUAddon)):
    """ScaleAwareTrainer under MultiGPUAddon."""


def make_wide_mlp(seed: int = 0) -> nn.Module:
    """About 4 M parameters (16 MB, 50 MB with Adam's moments): a sharded save takes a while to write."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(10, 512), nn.Tanh()]
    for _ in range(14):
        layers += [nn.Linear(512, 512), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(512, 2))


class KillDuringSaveConfig(AddOnConfig):
    """Test add-on: one rank kills itself (SIGKILL) while the sharded checkpoint of a given epoch is written."""

    save_path: str
    rank: int = 1
    epoch: int = 2


class KillDuringSave(AddOnBase):
    """From the start of `epoch`, a thread of rank `rank` watches `save_path`; when rank 0's temp folder for that
    epoch's checkpoint appears (the save has begun on every rank), the process SIGKILLs itself."""

    name = "kill_during_save"
    Config = KillDuringSaveConfig
    config: KillDuringSaveConfig

    def on_epoch_start(self, epoch: int) -> None:
        if epoch == self.config.epoch and get_rank() == self.config.rank:
            threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        folder = Path(self.config.save_path)
        while not any(p.name.startswith(".tmp-") and p.is_dir() for p in folder.iterdir()):
            time.sleep(0.0005)
        os.kill(os.getpid(), signal.SIGKILL)


class SaveModelConfig(AddOnConfig):
    """Test add-on: every rank calls trainer.save_model at each epoch's end (rank 0 writes the file)."""

    folder: str


class SaveModelEachEpoch(AddOnBase):
    name = "save_model_each_epoch"
    Config = SaveModelConfig
    config: SaveModelConfig

    def on_epoch_end(self, epoch: int, summary: dict) -> None:
        self.trainer.save_model(str(Path(self.config.folder) / f"epoch-{epoch}.safetensors"))


class SignalParentConfig(AddOnConfig):
    """Test add-on: rank 0 sends SIGTERM to process `pid` (the one that launched the workers) after a given step."""

    step: int
    pid: int


class SignalParentAtStep(AddOnBase):
    """Stands in for a scheduler preempting the job: the launching process gets SIGTERM and passes it on."""

    name = "signal_parent_at_step"
    Config = SignalParentConfig
    config: SignalParentConfig

    def on_batch_end(self, result: dict) -> None:
        if get_rank() == 0 and self.trainer.progress_checker.get_step() - 1 == self.config.step:
            os.kill(self.config.pid, signal.SIGTERM)  # workers' parent is a forkserver
