"""What a sweep costs per trial beyond the training itself, against the same trials as separate `zae run` commands.

    python -m benchmarks.sweep_overhead [--trials 8] [--epochs 2] [--quick]

One spec (the toy task), N learning rates. Contender 1: `zae sweep SPEC --trials N --jobs 1 --sampler grid` over a
`choice` of those rates. Contender 2: `zae run SPEC --set optimizer.init_args.lr=X` once per rate, one after the
other. Every trial and every run leaves a run record whose start and end bracket its training (`run()` from its
first hook to its last), so:

- per-trial fixed cost of the sweep = the gap from one trial's training end to the next one's training start
  (record the result, ask Optuna for the next trial, fork it from the zygote, build model and data, open the
  record), median over the trials; plus, once, the sweep's start-up (validating the spec, starting the zygote);
- per-run fixed cost of `zae run` = a command's wall time minus its training, median over the runs (a fresh
  interpreter, `import torch`, validating and building the spec, then exiting).

The ratio of the two is printed; the last line is one JSON object for programs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

SPEC = """\
trainer: {class_path: zae_engine.demo.toy.ToyTrainer, init_args: {log_bar: false}}
device: cpu
model: {class_path: zae_engine.demo.toy.TinyNet, init_args: {hidden: 32}}
optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.1, momentum: 0.9}}
data:
  train: {dataset: {class_path: zae_engine.demo.toy.RandomDataset, init_args: {size: 1000}}, batch_size: 50, shuffle: true}
  valid: {dataset: {class_path: zae_engine.demo.toy.RandomDataset, init_args: {size: 400, seed: 1}}, batch_size: 200}
run: {n_epoch: EPOCHS, seed: 0}
sweep:
  metric: valid/acc
  direction: maximize
  params:
    optimizer.init_args.lr: {choice: RATES}
"""


def zae_command() -> list[str]:
    script = Path(sys.executable).with_name("zae")
    return [str(script)] if script.exists() else [sys.executable, "-m", "zae_engine.cli"]


def records(folder: Path) -> list[dict]:
    found = [json.loads(p.read_text()) for p in (folder / "runs").glob("*/run.json")]
    return sorted(found, key=lambda r: r["started"])


def seconds(record: dict, key: str) -> float:
    return datetime.fromisoformat(record[key]).timestamp()


def training(record: dict) -> float:
    return seconds(record, "ended") - seconds(record, "started")


def run(command: list[str], folder: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=folder, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def measure_sweep(folder: Path, trials: int) -> dict:
    command = [*zae_command(), "sweep", "spec.yaml", "--trials", str(trials), "--jobs", "1", "--sampler", "grid"]
    command += ["--pruner", "none"]
    launched = time.time()
    wall = run(command, folder)
    done = [r for r in records(folder) if r.get("tags", {}).get("study")]
    assert len(done) == trials, f"expected {trials} trial records, found {len(done)}"
    gaps = [seconds(b, "started") - seconds(a, "ended") for a, b in zip(done, done[1:])]
    return {
        "wall_s": wall,
        "startup_s": seconds(done[0], "started") - launched,
        "training_s": [training(r) for r in done],
        "fixed_per_trial_s": statistics.median(gaps) if gaps else float("nan"),
        "amortized_per_trial_s": (wall - sum(training(r) for r in done)) / trials,
    }


def measure_runs(folder: Path, rates: list[float]) -> dict:
    walls, fixed = [], []
    for rate in rates:
        before = {r["id"] for r in records(folder)}
        wall = run([*zae_command(), "run", "spec.yaml", "--set", f"optimizer.init_args.lr={rate!r}"], folder)
        (record,) = [r for r in records(folder) if r["id"] not in before]
        walls.append(wall)
        fixed.append(wall - training(record))
    return {"wall_s": sum(walls), "fixed_per_run_s": statistics.median(fixed), "fixed_s": fixed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="trials (and zae run commands)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial")
    parser.add_argument("--quick", action="store_true", help="2 trials of 1 epoch: checks that it runs")
    args = parser.parse_args()
    trials, epochs = (2, 1) if args.quick else (args.trials, args.epochs)
    rates = [round(0.01 * (i + 1), 4) for i in range(trials)]
    with tempfile.TemporaryDirectory(prefix="zae-sweep-bench-") as tmp:
        folder = Path(tmp)
        (folder / "spec.yaml").write_text(SPEC.replace("EPOCHS", str(epochs)).replace("RATES", json.dumps(rates)))
        sweep = measure_sweep(folder, trials)
        runs = measure_runs(folder, rates)
    ratio = sweep["fixed_per_trial_s"] / runs["fixed_per_run_s"]
    train = statistics.median(sweep["training_s"])
    print(f"{trials} trials of {epochs} epoch(s) on the toy task; training takes {train:.2f} s per trial (median)")
    print(f"{'':<44}{'sweep':>10}{'zae run':>10}")
    print(f"{'wall time, all trials (s)':<44}{sweep['wall_s']:>10.2f}{runs['wall_s']:>10.2f}")
    print(
        f"{'fixed cost per trial beyond training (s)':<44}{sweep['fixed_per_trial_s']:>10.3f}{runs['fixed_per_run_s']:>10.3f}"
    )
    print(f"{'  once per sweep: start-up to first trial (s)':<44}{sweep['startup_s']:>10.2f}{'':>10}")
    print(f"{'  per trial, start-up spread over all (s)':<44}{sweep['amortized_per_trial_s']:>10.3f}{'':>10}")
    print(f"fixed cost per trial, sweep / zae run: {ratio:.3f}")
    print(
        json.dumps(
            {
                "trials": trials,
                "epochs": epochs,
                "training_s_median": train,
                "sweep": sweep,
                "zae_run": runs,
                "ratio_fixed_per_trial": ratio,
            }
        )
    )


if __name__ == "__main__":
    main()
