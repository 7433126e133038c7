"""DDP scaling on CPU: samples/s of 1 process vs 2 gloo processes, hand-written torch DDP loop vs MultiGPUAddon;
and the step time of MultiGPUAddon's fsdp strategy against its ddp one.

    python -m benchmarks.ddp_scaling                  # 4 alternating turns of 3 epochs per configuration
    python -m benchmarks.ddp_scaling --rounds 8 --steps 30
    python -m benchmarks.ddp_scaling --separate       # the add-on also spawns its own workers (noisier, slower)
    python -m benchmarks.ddp_scaling --quick          # only to see that it runs

Workload: an MLP 512-1024-1024-10, cross-entropy, SGD, batch 512 per process, one torch thread per process,
a DataLoader over an in-memory TensorDataset (with a DistributedSampler under DDP), `--steps` steps per epoch
and process. Throughput = processes x 512 / median step time; a step time is the wall time between two
consecutive optimizer steps (data loading, forward, backward, all-reduce, update, and for the add-on all the
trainer does per batch). Process start-up, first (warm-up) epochs and epoch ends are outside the timing.

How it measures (default): for each configuration (1 process, 2 gloo processes) the processes are started once,
and then take turns of `--turn` epochs between the hand-written loop and the trainer with `MultiGPUAddon`
(one `run(turn)` call, which joins the running process group exactly as under torchrun: same DDP wrapping,
sharding and loop as in its spawned workers), and a third trainer with `strategy="fsdp"` (FSDP2: every step
gathers each block's parameters and reduce-scatters its gradients). A busy machine thus slows all alike, and the
ratios stay meaningful even when the absolute numbers move. With one process there is nothing to shard: the
fsdp trainer then trains exactly like the ddp one. (Turns of one epoch would put a freshly built
DDP under the add-on every epoch: its first iterations rebuild buckets and log, which a real run pays once.) `--separate` instead runs each contender in its own processes, one after
the other, with the add-on spawning its own workers as `trainer.run()` does.
"""

from __future__ import annotations

import argparse
import contextlib
import io
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


# ---------------------------------------------------------------------- the hand-written loop
class HandWritten:
    """Plain PyTorch: DDP (when distributed), DistributedSampler with set_epoch, zero_grad/forward/backward/step."""

    def __init__(self, dataset: TensorDataset) -> None:
        distributed = dist.is_initialized()
        model = make_model()
        self.model = DistributedDataParallel(model) if distributed else model
        self.sampler = DistributedSampler(dataset) if distributed else None
        self.loader = DataLoader(dataset, batch_size=BATCH, sampler=self.sampler, shuffle=self.sampler is None)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR)
        self.loss_fn = nn.CrossEntropyLoss()
        self.epoch = 0

    def epoch_step_times(self) -> list[float]:
        self.epoch += 1
        if self.sampler is not None:
            self.sampler.set_epoch(self.epoch)
        times, last = [], None
        for x, y in self.loader:
            self.optimizer.zero_grad(set_to_none=True)
            self.loss_fn(self.model(x), y).backward()
            self.optimizer.step()
            now = perf_counter()
            if last is not None:
                times.append(now - last)
            last = now
        return times


# ---------------------------------------------------------------------- the trainer with MultiGPUAddon
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


def make_trainer(devices: list[str], strategy: str = "ddp") -> MLPTrainer:
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    return MLPTrainer(
        model,
        devices,
        "train",
        optimizer,
        log_bar=False,
        threads_per_worker=1,
        init_method="tcp://127.0.0.1:0",
        strategy=strategy,
    )


# ---------------------------------------------------------------------- interleaved (default)
def _interleaved_rank(rank: int, world: int, port: int, steps: int, rounds: int, turn: int, results) -> None:
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    dataset = make_dataset(steps, world)
    hand = HandWritten(dataset)
    trainers = {"addon": make_trainer(["cpu"]), "fsdp": make_trainer(["cpu"], "fsdp")}
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True)  # the add-on shards it
    times: dict[str, list[float]] = {"hand": [], "addon": [], "fsdp": []}
    with contextlib.redirect_stdout(io.StringIO()):  # the trainer's epoch lines
        for round_ in range(rounds + 1):  # round 0 warms every contender up
            hand_times = [t for _ in range(turn) for t in hand.epoch_step_times()]
            for trainer in trainers.values():
                trainer.run(turn, loader)
            if round_:
                times["hand"] += hand_times
                for name, trainer in trainers.items():
                    times[name] += [t for epoch in trainer.history[-turn:] for t in epoch["time/steps_s"]]
    if world > 1:
        dist.destroy_process_group()
    if rank == 0:
        results.put(times)


def interleaved(world: int, steps: int, rounds: int, turn: int) -> dict[str, float]:
    context = mp.get_context("spawn")
    results = context.Queue()
    port = free_port()
    workers = [
        context.Process(target=_interleaved_rank, args=(r, world, port, steps, rounds, turn, results))
        for r in range(world)
    ]
    for worker in workers:
        worker.start()
    times = results.get()
    for worker in workers:
        worker.join()
    return {name: world * BATCH / statistics.median(values) for name, values in times.items()}


# ---------------------------------------------------------------------- separate (--separate)
def _hand_rank(rank: int, world: int, port: int, steps: int, rounds: int, results) -> None:
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    hand = HandWritten(make_dataset(steps, world))
    hand.epoch_step_times()  # warm-up
    times = [t for _ in range(rounds) for t in hand.epoch_step_times()]
    if world > 1:
        dist.destroy_process_group()
    if rank == 0:
        results.put(times)


def separate(world: int, steps: int, rounds: int, turn: int) -> dict[str, float]:
    context = mp.get_context("spawn")
    results = context.Queue()
    port = free_port()
    epochs = rounds * turn
    workers = [context.Process(target=_hand_rank, args=(r, world, port, steps, epochs, results)) for r in range(world)]
    for worker in workers:
        worker.start()
    hand = results.get()
    for worker in workers:
        worker.join()
    result = {"hand": world * BATCH / statistics.median(hand)}
    for name, strategy in (("addon", "ddp"), ("fsdp", "fsdp")):
        trainer = make_trainer(["cpu"] * world, strategy)  # world 2: trainer.run() spawns its two workers
        with contextlib.redirect_stdout(io.StringIO()):
            trainer.run(epochs + 1, DataLoader(make_dataset(steps, world), batch_size=BATCH, shuffle=True))
        steps_s = [t for h in trainer.history[1:] for t in h["time/steps_s"]]
        result[name] = world * BATCH / statistics.median(steps_s)
    return result


# ---------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch and process")
    parser.add_argument("--rounds", type=int, default=4, help="timed turns per contender and configuration")
    parser.add_argument("--turn", type=int, default=3, help="epochs per turn")
    parser.add_argument("--separate", action="store_true", help="run the contenders one after the other")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds, args.turn = 4, 1, 1
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    measure = separate if args.separate else interleaved
    print(
        f"MLP 512-1024-1024-10, batch {BATCH}/process, {args.steps} steps/epoch/process, "
        f"{args.rounds} timed turns of {args.turn} epochs, "
        f"1 thread/process, gloo, {'separate' if args.separate else 'interleaved'} runs"
    )
    one, two = (measure(world, args.steps, args.rounds, args.turn) for world in (1, 2))
    hand_x, addon_x = two["hand"] / one["hand"], two["addon"] / one["addon"]
    print(f"samples/s  hand-written DDP: 1 process {one['hand']:,.0f}, 2 processes {two['hand']:,.0f}")
    print(f"samples/s  MultiGPUAddon:    1 process {one['addon']:,.0f}, 2 processes {two['addon']:,.0f}")
    print(f"scaling 1 -> 2 processes: hand-written DDP {hand_x:.3f}x, MultiGPUAddon {addon_x:.3f}x")
    print(f"add-on scaling / hand-written scaling: {addon_x / hand_x:.3f} (target >= 0.97)")
    ddp_ms, fsdp_ms = (1000 * 2 * BATCH / two[name] for name in ("addon", "fsdp"))
    print(
        f"step time, 2 processes: MultiGPUAddon ddp {ddp_ms:.1f} ms, fsdp {fsdp_ms:.1f} ms "
        f"(fsdp / ddp {fsdp_ms / ddp_ms:.2f}; no target: sharding trades time for memory)"
    )


if __name__ == "__main__":
    main()
