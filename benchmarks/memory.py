"""Memory over long runs: resident set size after 10k and after 200k tiny training steps.

    python -m benchmarks.memory              # (or python benchmarks/memory.py) one 200k-step epoch, then 2000 epochs of 100 steps
    python -m benchmarks.memory --quick      # 100 / 400 steps: only checks it runs

A trainer may keep per-step results for the epoch (4 bytes per step per scalar key) and one summary per
epoch; anything else growing with the step count is a leak. The budget is 5 MB of growth from 10k to 200k steps.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
from collections.abc import Iterator
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, RandomSampler

try:
    from benchmarks.overhead import WORKLOADS, BenchTrainer, machine, make_optimizer
except ImportError:  # run by path (python benchmarks/memory.py): this folder is on sys.path
    from overhead import WORKLOADS, BenchTrainer, machine, make_optimizer

BUDGET_MB = 5.0


def rss_mb() -> float:
    """Resident set size now (Linux), or the peak where /proc is absent."""
    gc.collect()
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


class CountingLoader:
    """A DataLoader that notes the RSS once `mark` batches have been drawn in total, over all epochs."""

    def __init__(self, loader: DataLoader, mark: int) -> None:
        self.loader, self.mark = loader, mark
        self.drawn = 0
        self.rss_at_mark: float | None = None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            if self.drawn == self.mark:
                self.rss_at_mark = rss_mb()
            self.drawn += 1
            yield batch


def scenario(name: str, steps_per_epoch: int, total: int, mark: int) -> dict[str, Any]:
    workload = WORKLOADS["tiny"]
    data = workload.dataset(min(steps_per_epoch, 1000))  # a small dataset; a long epoch samples it repeatedly
    sampler = RandomSampler(data, replacement=True, num_samples=steps_per_epoch * workload.batch_size)
    loader = CountingLoader(DataLoader(data, batch_size=workload.batch_size, sampler=sampler), mark)
    model = workload.model()
    trainer = BenchTrainer(model, "cpu", "train", make_optimizer(model), log_bar=False)
    before = rss_mb()
    trainer.run(total // steps_per_epoch, loader)
    after = rss_mb()
    growth = after - loader.rss_at_mark
    return {
        "scenario": name,
        "steps_per_epoch": steps_per_epoch,
        "epochs": total // steps_per_epoch,
        "steps": loader.drawn,
        "rss_start_mb": round(before, 2),
        "rss_at_mark_mb": round(loader.rss_at_mark, 2),
        "rss_end_mb": round(after, 2),
        "growth_mb": round(growth, 2),
        "within_budget": growth <= BUDGET_MB,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mark", type=int, default=10_000, help="step at which the first RSS is taken")
    parser.add_argument("--steps", type=int, default=200_000, help="total steps of each scenario")
    parser.add_argument("--short-epoch", type=int, default=100, help="steps per epoch of the many-epochs scenario")
    parser.add_argument("--quick", action="store_true", help="mark 100, 400 steps, epochs of 20: checks it runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.mark, args.steps, args.short_epoch = 100, 400, 20
    if not 0 < args.mark < args.steps or args.short_epoch < 1 or args.mark % args.short_epoch:
        parser.error("need 0 < --mark < --steps, and --mark a multiple of --short-epoch")

    torch.set_num_threads(1)
    console = Console(highlight=False, width=max(Console().width, 100))
    info = machine()
    console.print(
        "machine: {cpu}, {cores} cores; python {python}; torch {torch}; zae-engine {zae_engine}".format(**info)
    )
    rows = [
        scenario("one long epoch", args.steps, args.steps, args.mark),
        scenario(f"epochs of {args.short_epoch} steps", args.short_epoch, args.steps, args.mark),
    ]
    table = Table(title=f"RSS growth from step {args.mark:,} to step {args.steps:,} (budget {BUDGET_MB:g} MB)")
    for column in ("scenario", "epochs", f"RSS at {args.mark:,} (MB)", f"RSS at {args.steps:,} (MB)", "growth (MB)"):
        table.add_column(column, justify="left" if column == "scenario" else "right")
    for row in rows:
        mark = "" if row["within_budget"] else " (over budget)"
        table.add_row(
            row["scenario"],
            str(row["epochs"]),
            f"{row['rss_at_mark_mb']:.1f}",
            f"{row['rss_end_mb']:.1f}",
            f"{row['growth_mb']:+.2f}{mark}",
        )
    console.print(table)
    print(json.dumps({"benchmark": "memory", "machine": info, "budget_mb": BUDGET_MB, "scenarios": rows}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
