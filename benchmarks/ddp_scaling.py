"""DDP scaling on CPU: samples/s of 1 process vs 2 gloo processes, hand-written torch DDP loop vs MultiGPUAddon.

    python -m benchmarks.ddp_scaling                  # 3 rounds, each: all four configurations in turn
    python -m benchmarks.ddp_scaling --rounds 5 --steps 30
    python -m benchmarks.ddp_scaling --quick          # only to see that it runs

Workload: an MLP 512-1024-1024-10, cross-entropy, SGD, batch 512 per process, one torch thread per process.
Every configuration iterates a DataLoader over an in-memory TensorDataset (a DistributedSampler under DDP), so
each process runs `--steps` steps per epoch. Throughput is `processes x 512 / median step time`, where a step
time is the wall time between two consecutive optimizer steps (data loading, forward, backward, all-reduce,
update, and for the add-on everything the trainer does per batch) in the epochs after the first (warm-up).
The hand-written loop takes its times itself (rank 0); the add-on run takes them with a tiny add-on on rank 0
that returns them in the epoch summary. Medians, not means, because the machine may be shared: a burst of
someone else's work hits a few steps, not the median. Process start-up and epoch ends are outside both.

Reported per round and as the median over rounds: samples/s of each configuration, the scaling ratio
(2 processes / 1 process) of each, and the add-on's scaling relative to the hand-written loop's.
"""

from __future__ import annotations

import argparse
import os
import statistics
from time import perf_counter

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
from zae_mpu import MultiGPUAddon
from zae_mpu.ports import free_port

from zae_engine.trainer import Trainer
from zae_engine.trainer.addons.base import AddOnBase

BATCH = 512
LR = 0.01


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))


def make_dataset(steps: int, world: int) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    n = steps * BATCH * world
    return TensorDataset(torch.randn(n, 512, generator=g), torch.randint(0, 10, (n,), generator=g))


# ---------------------------------------------------------------------- hand-written
def hand_written_epochs(model: nn.Module, loader: DataLoader, sampler, epochs: int) -> list[float]:
    """Seconds between consecutive optimizer steps, epochs after the first (warm-up) only."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    steps = []
    for epoch in range(epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        last = None
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            optimizer.step()
            now = perf_counter()
            if last is not None and epoch > 0:
                steps.append(now - last)
            last = now
    return steps


def hand_written_single(steps: int, epochs: int) -> float:
    loader = DataLoader(make_dataset(steps, 1), batch_size=BATCH, shuffle=True)
    return BATCH / statistics.median(hand_written_epochs(make_model(), loader, None, epochs))


def _hand_written_rank(rank: int, port: int, steps: int, epochs: int, results) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    dataset = make_dataset(steps, 2)
    sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True)
    loader = DataLoader(dataset, batch_size=BATCH, sampler=sampler)
    model = DistributedDataParallel(make_model())
    durations = hand_written_epochs(model, loader, sampler, epochs)
    dist.destroy_process_group()
    results.put((rank, durations))


def hand_written_ddp(steps: int, epochs: int) -> float:
    context = mp.get_context("spawn")
    results = context.Queue()
    port = free_port()
    workers = [context.Process(target=_hand_written_rank, args=(r, port, steps, epochs, results)) for r in (0, 1)]
    for worker in workers:
        worker.start()
    per_rank = dict(results.get() for _ in workers)
    for worker in workers:
        worker.join()
    return 2 * BATCH / statistics.median(per_rank[0])  # DDP's all-reduce keeps the ranks in step


# ---------------------------------------------------------------------- MultiGPUAddon
class StepTimer(AddOnBase):
    """Seconds between consecutive optimizer steps, written into the epoch summary (it comes back in `history`)."""

    name = "step_timer"
    description = "benchmark: step wall times"

    def on_epoch_start(self, epoch: int) -> None:
        self.last, self.steps = None, []

    def on_optimizer_step(self) -> None:
        now = perf_counter()
        if self.last is not None:
            self.steps.append(now - self.last)
        self.last = now

    def on_epoch_end(self, epoch: int, summary: dict) -> None:
        summary["time/steps_s"] = self.steps


class MLPTrainer(Trainer.add_on(MultiGPUAddon, StepTimer)):
    loss_fn = nn.CrossEntropyLoss()

    def train_step(self, batch):
        x, y = batch
        return {"loss": self.loss_fn(self.model(x), y)}

    def test_step(self, batch):
        return self.train_step(batch)


def addon_run(steps: int, epochs: int, world: int) -> float:
    model = make_model()
    devices = ["cpu"] * world
    trainer = MLPTrainer(
        model,
        devices,
        "train",
        torch.optim.SGD(model.parameters(), lr=LR),
        log_bar=False,
        threads_per_worker=1,
        init_method="tcp://127.0.0.1:0",
    )
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the single-process run prints its epoch lines here
        trainer.run(epochs, DataLoader(make_dataset(steps, world), batch_size=BATCH, shuffle=True))
    steps = [t for h in trainer.history[1:] for t in h["time/steps_s"]]
    return world * BATCH / statistics.median(steps)


# ---------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch and process")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run; the first is warm-up")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.epochs, args.rounds = 3, 2, 1
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"MLP 512-1024-1024-10, batch {BATCH}/process, {args.steps} steps/epoch/process, 1 thread/process, gloo")
    rows = []
    for round_ in range(1, args.rounds + 1):
        row = {
            "hand 1p": hand_written_single(args.steps, args.epochs),
            "hand 2p": hand_written_ddp(args.steps, args.epochs),
            "addon 1p": addon_run(args.steps, args.epochs, 1),
            "addon 2p": addon_run(args.steps, args.epochs, 2),
        }
        row["hand x"] = row["hand 2p"] / row["hand 1p"]
        row["addon x"] = row["addon 2p"] / row["addon 1p"]
        row["addon/hand"] = row["addon x"] / row["hand x"]
        rows.append(row)
        print(
            f"round {round_}: "
            + "  ".join(f"{k} {v:,.2f}" if "x" in k or "/" in k else f"{k} {v:,.0f}/s" for k, v in row.items())
        )
    median = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(
        f"\nmedian over {len(rows)} round(s): samples/s hand-written {median['hand 1p']:,.0f} -> "
        f"{median['hand 2p']:,.0f}, MultiGPUAddon {median['addon 1p']:,.0f} -> {median['addon 2p']:,.0f}"
    )
    print(f"scaling 1 -> 2 processes: hand-written DDP {median['hand x']:.3f}x, MultiGPUAddon {median['addon x']:.3f}x")
    print(f"add-on scaling / hand-written scaling: {median['addon/hand']:.3f} (target >= 0.97)")


if __name__ == "__main__":
    main()
