"""How long a checkpoint stops training: synchronous against asynchronous saves, and every_n_steps on against off.

    python -m benchmarks.checkpoint_stall              # a ~270 MB model, 4 checkpoints per mode; then step times
    python -m benchmarks.checkpoint_stall --mb 100     # a smaller model
    python -m benchmarks.checkpoint_stall --quick      # a tiny model, only to see that it runs

Part 1, the stall: an MLP of about `--mb` MB (SGD without momentum, so a checkpoint is the size of the model)
trains with `every_n_steps` saves. The stall of a save is the time the training thread spends in the state
manager's hook that writes it (at the end of the batch whose step made it due): the whole write when synchronous; when asynchronous, the
copy to host memory and the hand-over to the writer thread. The write time is the time the write itself takes
(synchronous: the same; asynchronous: the writer thread's time from start to manifest). Reported: the median
stall, the median write time, and their ratio (target for async: at most 10 %). Also reported: how much slower
the training steps run while a background write is in flight (the writer thread shares the CPU and the GIL).

Part 2, the cost in a normal run: seconds per step of a small model with `every_n_steps` checkpoints (sync and
async) against none, as ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from time import perf_counter

import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import zae_engine
from zae_engine.trainer import Trainer
from zae_engine.trainer.addons import AddOnBase, StateManagerAddon


class Regression(Trainer):
    def train_step(self, batch):
        x, y = batch
        return {"loss": nn.functional.mse_loss(self.model(x), y)}

    def test_step(self, batch):
        return self.train_step(batch)


class TimedStateManager(StateManagerAddon):
    """The state manager, timing what a save costs the training thread and what the write itself takes."""

    def __init__(self, config=None, /, **options) -> None:
        super().__init__(config, **options)
        self.stalls: list[float] = []  # time in on_batch_end at the batches a save fell due
        self.writes: list[float] = []  # time of each write (files, fsync, manifest), in whichever thread
        self.writing: list[bool] = []  # per step: was a background write in flight when it began

    def on_optimizer_step(self) -> None:
        self.writing.append(self._writer.busy)
        super().on_optimizer_step()

    def on_batch_end(self, result) -> None:
        due = self._step_save_due
        started = perf_counter()
        super().on_batch_end(result)
        if due:
            self.stalls.append(perf_counter() - started)

    def _write(self, *args, **kwargs):
        started = perf_counter()
        path = super()._write(*args, **kwargs)
        self.writes.append(perf_counter() - started)
        return path


class StepClock(AddOnBase):
    """When each optimizer step ended (after every other add-on's hook)."""

    name = "step_clock"
    phase = "report"

    def __init__(self) -> None:
        super().__init__()
        self.ends: list[float] = []

    def on_optimizer_step(self) -> None:
        self.ends.append(perf_counter())


def mlp(width: int, layers: int) -> nn.Module:
    return nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)])


def stall_run(mb: float, saves: int, async_save: bool, folder: Path, every: int) -> dict:
    width = 2048 if mb < 200 else 4096
    layers = max(1, round(mb * 2**20 / (4 * (width * width + width))))
    torch.manual_seed(0)
    model = mlp(width, layers)
    size_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    steps = every * saves + 1
    data = TensorDataset(torch.randn(steps * 4, width), torch.randn(steps * 4, width))
    addon = TimedStateManager(
        save_path=str(folder), every_n_steps=every, async_save=async_save, keep_last=1, save_top_k=0
    )
    clock = StepClock()
    trainer = Regression(
        model, "cpu", "train", torch.optim.SGD(model.parameters(), lr=1e-4), log_bar=False, addons=[clock, addon]
    )
    trainer.run(1, DataLoader(data, batch_size=4))
    step_times = [b - a for a, b in zip(clock.ends, clock.ends[1:])]
    due = {i for i in range(1, len(clock.ends)) if i % every == 0}  # step times that hold a save
    idle = [t for i, t in enumerate(step_times, 1) if i not in due and not addon.writing[i]]
    busy = [t for i, t in enumerate(step_times, 1) if i not in due and addon.writing[i]]
    stall, write = statistics.median(addon.stalls), statistics.median(addon.writes[: len(addon.stalls)])
    return {
        "model_mb": round(size_mb, 1),
        "every_n_steps": every,
        "saves": len(addon.stalls),
        "median_stall_s": stall,
        "median_write_s": write,
        "stall_over_write": stall / write,
        "step_s_idle_writer": statistics.median(idle) if idle else None,
        "step_s_while_writing": statistics.median(busy) if busy else None,
    }


def step_cost(steps: int, every: int, rounds: int, folder: Path) -> dict:
    """Seconds per step of a small model: no state manager saves inside epochs, sync every n steps, async."""
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(steps * 32, 256), torch.randn(steps * 32, 256))
    loader = DataLoader(data, batch_size=32)
    modes = {"off": None, "sync": False, "async": True}
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for round_ in range(rounds):
        for mode, async_save in modes.items():
            model = nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 256))
            options = {} if async_save is None else {"every_n_steps": every, "async_save": async_save}
            addon = StateManagerAddon(save_path=str(folder / f"{mode}-{round_}"), keep_last=1, save_top_k=0, **options)
            trainer = Regression(
                model, "cpu", "train", torch.optim.Adam(model.parameters()), log_bar=False, addons=[addon]
            )
            started = perf_counter()
            trainer.run(1, loader)
            times[mode].append((perf_counter() - started) / steps)
    off = statistics.median(times["off"])
    return {
        "steps": steps,
        "every_n_steps": every,
        "checkpoint_mb": round(sum(p.numel() * 12 for p in model.parameters()) / 2**20, 1),  # weights + Adam moments
        "median_s_per_step": {mode: statistics.median(t) for mode, t in times.items()},
        "ratio_to_off": {mode: statistics.median(t) / off for mode, t in times.items()},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=270.0, help="model size for the stall measurement (<= 400)")
    parser.add_argument("--saves", type=int, default=4)
    parser.add_argument("--steps", type=int, default=400, help="steps per run for the step-time comparison")
    parser.add_argument("--every", type=int, default=100, help="every_n_steps for the step-time comparison")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a tiny model and few steps: checks that it runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.mb, args.saves, args.steps, args.every, args.rounds = 4.0, 2, 20, 5, 1
    torch.set_num_threads(1)
    console = Console(stderr=True)
    quiet = contextlib.redirect_stdout(open(os.devnull, "w"))  # the runs' epoch lines: stdout is the report's
    with tempfile.TemporaryDirectory(prefix="zae-stall-") as tmp, quiet:
        folder = Path(tmp)
        sync = stall_run(args.mb, args.saves, False, folder / "sync", every=3)
        # space the async saves so that each write ends before the next falls due (else a save waits for the last)
        step = sync["step_s_idle_writer"] or sync["median_write_s"]
        spacing = max(3, int(1.5 * sync["median_write_s"] / step) + 2)
        stall = {"sync": sync, "async": stall_run(args.mb, args.saves, True, folder / "async", every=spacing)}
        cost = step_cost(args.steps, args.every, args.rounds, folder / "cost")

    table = Table(title=f"checkpoint stall, a {stall['sync']['model_mb']} MB model")
    for column in ("mode", "saves", "stall (median s)", "write (median s)", "stall / write", "step s (idle / writing)"):
        table.add_column(column)
    for mode, row in stall.items():
        idle, busy = row["step_s_idle_writer"], row["step_s_while_writing"]
        table.add_row(
            mode,
            str(row["saves"]),
            f"{row['median_stall_s']:.3f}",
            f"{row['median_write_s']:.3f}",
            f"{row['stall_over_write']:.1%}",
            f"{idle:.3f} / {busy:.3f}" if idle and busy else (f"{idle:.3f} / -" if idle else "-"),
        )
    console.print(table)
    cost_table = Table(title=f"seconds per step, every_n_steps={cost['every_n_steps']} ({cost['checkpoint_mb']} MB)")
    for column in ("checkpoints", "s per step (median)", "ratio to off"):
        cost_table.add_column(column)
    for mode in ("off", "sync", "async"):
        cost_table.add_row(mode, f"{cost['median_s_per_step'][mode]:.5f}", f"{cost['ratio_to_off'][mode]:.3f}")
    console.print(cost_table)
    report = {
        "zae_engine": zae_engine.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average": os.getloadavg(),  # other programs on the machine: the numbers are only as quiet as it was
        "stall": stall,
        "step_cost": cost,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    sys.exit(main())
