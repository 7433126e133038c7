"""How long `zae runs list` takes over many recorded runs (target: under 1 s for 1,000).

    python benchmarks/runs_list.py [--runs 1000] [--rounds 7]
    python benchmarks/runs_list.py --quick       # 20 runs, 1 round: checks that it runs

Nineteen runs are recorded with `RunRecorder` (ten epochs each, every final status) and one more is kept
`running` by a child process, so the liveness check is paid too; the rest are copies of them under fresh ids,
which is the same work for a reader and spares a minute of fsyncs. Then `zae runs list` (table and --json) runs as a
subprocess, medians printed next to `python -c pass` and `zae --help`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from zae_engine.runs import RunRecorder
from zae_engine.runs.names import new_run_id
from zae_engine.runs.record import RECORD_NAME

STATUSES = ("done", "failed", "interrupted", "stopped_early")
HOLDER = """
import sys, time
from zae_engine.runs import RunRecorder
recorder = RunRecorder(sys.argv[1]).start(name="still-going", options={"lr": 0.1})
recorder.log({"train/loss": 1.0}, step=1, epoch=1)
print("ready", flush=True)
sys.stdin.read()
recorder.finish("done")
"""


def zae_command() -> list[str]:
    script = Path(sys.executable).with_name("zae")
    return [str(script)] if script.exists() else [sys.executable, "-m", "zae_engine.cli"]


def record_seed_runs(root: Path, count: int) -> None:
    for i in range(count):
        recorder = RunRecorder(root).start(options={"optimizer": {"lr": 10 ** -(i % 4)}, "seed": i}, devices=["cpu"])
        for epoch in range(1, 11):
            recorder.log({"train/loss": 1 / epoch + i / 100, "valid/loss": 1.1 / epoch + i / 100}, epoch * 10, epoch)
        status = STATUSES[i % len(STATUSES)]
        recorder.finish(status, error_summary="ValueError: example" if status == "failed" else None)


def clone_until(root: Path, total: int) -> None:
    seeds = sorted(p for p in root.iterdir() if p.is_dir())
    existing = len(seeds)
    while existing < total:
        source = seeds[existing % len(seeds)]
        run_id = new_run_id()
        target = root / run_id
        if target.exists():
            continue
        shutil.copytree(source, target)
        record = json.loads((target / RECORD_NAME).read_text())
        record["id"] = run_id
        (target / RECORD_NAME).write_text(json.dumps(record))
        existing += 1


def time_once(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="runs in the folder")
    parser.add_argument("--rounds", type=int, default=7, help="timed runs of each command (median reported)")
    parser.add_argument("--quick", action="store_true", help="20 runs, 1 round: only checks that it runs")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.rounds = 20, 1
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "runs"
        record_seed_runs(root, min(19, args.runs - 1))
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
            clone_until(root, args.runs)
            zae = zae_command()
            listed = json.loads(
                subprocess.run(
                    [*zae, "runs", "list", "--dir", str(root), "--json"], capture_output=True, text=True, check=True
                ).stdout
            )
            assert len(listed) == args.runs, len(listed)
            todo = {
                "python -c pass": [sys.executable, "-c", "pass"],
                "zae --help": [*zae, "--help"],
                f"zae runs list ({args.runs} runs)": [*zae, "runs", "list", "--dir", str(root)],
                f"zae runs list --json ({args.runs} runs)": [*zae, "runs", "list", "--dir", str(root), "--json"],
            }
            for command in todo.values():  # warm the file cache
                time_once(command)
            samples: dict[str, list[float]] = {name: [] for name in todo}
            for _ in range(args.rounds):
                for name, command in todo.items():
                    samples[name].append(time_once(command))
        finally:
            if holder.stdin is not None:
                holder.stdin.close()
            holder.wait(timeout=60)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    bare = medians["python -c pass"]
    print(f"{'command':<34}{'median ms':>11}{'x python':>10}")
    for name, value in medians.items():
        print(f"{name:<34}{value * 1000:>11.0f}{value / bare:>10.2f}")
    table = medians[f"zae runs list ({args.runs} runs)"]
    print(f"zae runs list over {args.runs} runs: {table:.3f} s ({'under' if table < 1 else 'OVER'} the 1 s target)")
    print(json.dumps({"runs": args.runs, "rounds": args.rounds, "median_s": medians}))


if __name__ == "__main__":
    main()
