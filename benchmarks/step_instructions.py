"""Machine instructions per training step, counted by valgrind: the overhead figure that does not move with the load.

    python -m benchmarks.step_instructions              # premade batches, 2000 steps per epoch (~3 min)
    python -m benchmarks.step_instructions --steps 500
    python -m benchmarks.step_instructions --quick      # 20 steps: checks that it runs

Wall-clock ratios on a shared 2-core machine move by ±2% from one run to the next, more than the per-step costs
worth chasing. Instructions do not: each contender runs under `valgrind --tool=callgrind` with counting switched
on only around its timed epochs, once for one epoch and once for two, and the difference divided by the steps
is what one steady-state step costs (epoch end included, start-up and teardown cancelled out). Repeated runs
agree within about 0.3%. Instructions are not time (Python's interpreter retires fewer per cycle than torch's
kernels, so a wall-clock ratio comes out larger than the instruction ratio), but a change that removes
instructions from the step removes time, and this sees changes of a few hundred instructions.

Needs valgrind (`apt install valgrind`); without it the script says so and exits with 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CONTENDERS = ("raw loop", "Trainer log_bar=False", "Trainer +run_log")


def child(name: str, steps: int, epochs: int) -> None:
    """Inside valgrind: build the contender, warm up, wait for counting to start, train `epochs` epochs, leave."""
    import torch

    from benchmarks.overhead import WORKLOADS, BenchTrainer, make_optimizer, raw_loop

    torch.set_num_threads(1)
    workload = WORKLOADS["premade"]
    loader = workload.loader(steps)
    model = workload.model()
    if name == "raw loop":
        run = raw_loop(model, make_optimizer(model))
        run(1, loader)  # warm-up
        train = lambda: run(epochs, loader)  # noqa: E731
    else:
        addons = []
        if name == "Trainer +run_log":
            from zae_engine.trainer.addons import RunLogAddon

            addons = [RunLogAddon(dir=tempfile.mkdtemp(prefix="zae-bench-"))]
        trainer = BenchTrainer(model, "cpu", "train", make_optimizer(model), log_bar=False, addons=addons)
        trainer.run(1, loader)  # warm-up: a run of its own, so the counted run's start is the same in both counts
        # the run's start and end are in both counts (one epoch, two epochs) and cancel out
        train = lambda: trainer.run(epochs, loader)  # noqa: E731
    print("ready", flush=True)
    sys.stdin.readline()  # the parent switches counting on, then writes a line
    train()
    sys.stdout.flush()
    os._exit(0)  # no interpreter teardown inside the count


def count(name: str, steps: int, epochs: int) -> int:
    """Instructions executed while `epochs` epochs of `name` ran."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "callgrind.out"
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "benchmarks.step_instructions",
            "--child",
            name,
            "--steps",
            str(steps),
            "--epochs",
            str(epochs),
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict and set layouts in every count
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        assert process.stdin is not None and process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            process.kill()
            raise RuntimeError(f"{name}: the child did not start:\n{process.communicate()[1][-2000:]}")
        subprocess.run(["callgrind_control", "--instr=on", str(process.pid)], check=True, capture_output=True)
        process.stdin.write("go\n")
        process.stdin.flush()
        _, err = process.communicate(timeout=3600)
        if process.returncode != 0:
            raise RuntimeError(f"{name}: valgrind exited with {process.returncode}:\n{err[-2000:]}")
        found = re.search(r"^(?:summary|totals):\s+(\d+)", out.read_text(), re.MULTILINE)
        if found is None:
            raise RuntimeError(f"{name}: no instruction total in callgrind's output")
        return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="batches per epoch (default 2000)")
    parser.add_argument("--quick", action="store_true", help="20 steps: checks that it runs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    steps = 20 if args.quick else args.steps
    if args.child:
        child(args.child, steps, args.epochs)
        return 0
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed: apt install valgrind (this benchmark counts instructions with it)")
        return 2
    started = time.perf_counter()
    jobs = [(name, epochs) for name in CONTENDERS for epochs in (1, 2)]
    with ThreadPoolExecutor(max_workers=2) as pool:  # separate processes; counts do not depend on the neighbour
        totals = dict(zip(jobs, pool.map(lambda job: count(job[0], steps, job[1]), jobs)))
    per_step = {name: (totals[name, 2] - totals[name, 1]) / steps for name in CONTENDERS}
    raw = per_step["raw loop"]
    _print_table(per_step, raw, steps)
    report = {
        "benchmark": "step_instructions",
        "workload": "premade",
        "steps_per_epoch": steps,
        "seconds": round(time.perf_counter() - started, 1),
        "contenders": {
            name: {"instructions_per_step": round(value), "ratio": value / raw, "extra_per_step": round(value - raw)}
            for name, value in per_step.items()
        },
    }
    print(json.dumps(report))
    return 0


def _print_table(per_step: dict[str, float], raw: float, steps: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"premade: Linear(10, 2), batch 32, {steps} steps per epoch; instructions per step")
    for column in ("contender", "instructions/step", "ratio to raw", "extra/step"):
        table.add_column(column, justify="left" if column == "contender" else "right")
    for name, value in per_step.items():
        table.add_row(name, f"{value:,.0f}", f"{value / raw:.3f}x", f"{value - raw:+,.0f}")
    Console().print(table)


if __name__ == "__main__":
    sys.exit(main())
