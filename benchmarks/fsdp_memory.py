"""Memory per rank, DDP vs FSDP: the bytes of parameters, gradients and optimizer state each rank holds.

    python -m benchmarks.fsdp_memory              # 268 MB of parameters (16 x Linear(2048, 2048)), Adam, 2 gloo ranks
    python -m benchmarks.fsdp_memory --width 1024 --depth 8
    python -m benchmarks.fsdp_memory --quick      # a tiny model: only checks that it runs

Each configuration trains 3 steps through `MultiGPUAddon` (spawned workers, as `trainer.run()` does). Right after
the optimizer's step — gradients still there, Adam's two moments made — the optimizer adds up the storage of the
tensors this rank holds: its parameters (its shards under FSDP), their gradients, and the optimizer's state. The
largest sum over the steps is the peak. Also shown: the worker's resident set size after its last step and at
its peak, which on top of that hold the Python interpreter and torch, the batch and activations, DDP's gradient
buckets or FSDP's gathered blocks, and the worker's copy of the user's model (unpickled on the CPU; FSDP trains a
sharded copy and hands the result back to it); the peak also holds the pickled trainer the worker was sent.
Workers run with MALLOC_MMAP_THRESHOLD_=1 MiB: glibc's adaptive threshold would otherwise keep freed 16 MB
buffers (FSDP gathers a block into one) in the heap and show them as resident.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import sys
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from zae_mpu import MultiGPUAddon

from zae_engine.trainer import Trainer

MB = 2**20
BATCH = 4


class CountingAdam(torch.optim.Adam):
    """Adam that notes, after each step, the bytes of parameters, gradients and its own state this rank holds."""

    peak: dict[str, float] = {"params": 0.0, "grads": 0.0, "optimizer": 0.0}  # per instance once set (pickling
    # an optimizer keeps only its state and groups: the worker's copy starts from this)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        result = super().step(closure)
        params = [p for group in self.param_groups for p in group["params"]]
        seen: set[int] = set()  # FSDP keeps a group's gradient shards in one buffer: count each storage once
        counted = {
            "params": _bytes(params, seen),
            "grads": _bytes([p.grad for p in params], seen),
            "optimizer": _bytes([v for state in self.state.values() for v in state.values()], seen),
        }
        if sum(counted.values()) / MB > sum(self.peak.values()):
            self.peak = {key: value / MB for key, value in counted.items()}
        return result


def _bytes(tensors: list[Any], seen: set[int]) -> int:
    total = 0
    for tensor in tensors:
        if not isinstance(tensor, torch.Tensor):
            continue
        storage = getattr(tensor, "_local_tensor", tensor).untyped_storage()  # a DTensor: its own shard
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


class MemoryTrainer(Trainer.add_on(MultiGPUAddon)):
    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        (x,) = batch
        return {"loss": self.model(x).pow(2).mean()}

    def test_step(self, batch: Any) -> dict[str, torch.Tensor]:
        return self.train_step(batch)

    def metric_on_epoch_end(self) -> dict[str, float]:
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with open("/proc/self/statm") as statm:
            resident = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB
        state = {f"mb/{k}": v for k, v in self.optimizer.peak.items()}
        return {**state, "mb/rss_end": resident, "mb/rss_peak": peak_kb / 1024}


def make_model(width: int, depth: int) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.Tanh()]
    return nn.Sequential(*layers)


def measure(width: int, depth: int, world: int, strategy: str, steps: int) -> dict[str, float]:
    model = make_model(width, depth)
    optimizer = CountingAdam(model.parameters(), lr=1e-4)
    devices = ["cpu"] * world
    options = {"strategy": strategy, "threads_per_worker": 1, "init_method": "tcp://127.0.0.1:0"} if world > 1 else {}
    trainer = MemoryTrainer(model, devices, "train", optimizer, log_bar=False, **options)
    data = TensorDataset(torch.randn(steps * BATCH * world, width))
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.run(1, DataLoader(data, batch_size=BATCH))
    summary = trainer.history[-1]
    row = {key.removeprefix("train/mb/"): value for key, value in summary.items() if key.startswith("train/mb/")}
    row["state"] = row["params"] + row["grads"] + row["optimizer"]
    del trainer, model, optimizer
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--depth", type=int, default=16, help="Linear(width, width) blocks")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.width, args.depth, args.steps = 64, 2, 2
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(MB))  # read by each worker's malloc when it starts
    torch.set_num_threads(1)
    n_params = args.depth * (args.width * args.width + args.width)
    console = Console(width=max(Console().width, 110))
    console.print(
        f"{args.depth} x Linear({args.width}, {args.width}): {n_params / 1e6:.1f} M parameters, "
        f"{n_params * 4 / MB:.0f} MB in fp32; Adam; batch {BATCH}/rank; gloo on the CPU; {args.steps} steps"
    )
    configurations = [("1 process", 1, "ddp"), ("ddp, 2 ranks", 2, "ddp"), ("fsdp, 2 ranks", 2, "fsdp")]
    rows = {
        name: measure(args.width, args.depth, world, strategy, args.steps) for name, world, strategy in configurations
    }
    ddp = rows["ddp, 2 ranks"]["state"]
    table = Table(title="per rank, MB (peak after an optimizer step)", title_justify="left")
    for column in ("", "params", "grads", "optimizer", "params+grads+optimizer", "/ ddp", "RSS end", "RSS peak"):
        table.add_column(column, justify="left" if not column else "right")
    for name, row in rows.items():
        table.add_row(
            name,
            f"{row['params']:,.0f}",
            f"{row['grads']:,.0f}",
            f"{row['optimizer']:,.0f}",
            f"{row['state']:,.0f}",
            f"{row['state'] / ddp:.2f}",
            f"{row['rss_end']:,.0f}",
            f"{row['rss_peak']:,.0f}",
        )
    console.print(table)
    ratio = rows["fsdp, 2 ranks"]["state"] / ddp
    console.print(f"fsdp / ddp (params+grads+optimizer per rank): {ratio:.3f}  (1 / world = 0.500)")
    print(json.dumps({"parameters": n_params, "rows": rows, "fsdp_over_ddp": ratio}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
