"""How long the `zae` CLI takes to start, next to bare Python and `import torch`.

    python benchmarks/cli_startup.py [--rounds 15]

Every command runs once per round, in turn (so background load hits them alike); medians are printed with
their ratio to `python -c pass` and to `python -c "import torch"`. `zae --help`, `zae addons list`, `zae addons
show` and `zae schema` import neither torch nor any add-on (only the add-ons' torch-free Config modules), so they
should sit far closer to bare Python than to torch. Targets: `zae addons list` <= 0.25 x `import torch`;
`zae addons show state_manager` <= `zae --help` + 0.2 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path


def zae_command() -> list[str]:
    script = Path(sys.executable).with_name("zae")
    return [str(script)] if script.exists() else [sys.executable, "-m", "zae_engine.cli"]


def commands() -> dict[str, list[str]]:
    zae = zae_command()
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
        "zae --version": [*zae, "--version"],
        "zae --help": [*zae, "--help"],
        "zae addons list": [*zae, "addons", "list"],
        "zae addons show state_manager": [*zae, "addons", "show", "state_manager"],
        "zae schema": [*zae, "schema"],
    }


def time_once(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="runs of each command (median reported)")
    args = parser.parse_args()
    todo = commands()
    for command in todo.values():  # warm the file cache once
        time_once(command)
    samples: dict[str, list[float]] = {name: [] for name in todo}
    for _ in range(args.rounds):
        for name, command in todo.items():
            samples[name].append(time_once(command))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    bare, torch_import = medians["python -c pass"], medians['python -c "import torch"']
    print(f"{'command':<32}{'median ms':>11}{'x python':>10}{'x import torch':>16}")
    for name, value in medians.items():
        print(f"{name:<32}{value * 1000:>11.0f}{value / bare:>10.2f}{value / torch_import:>16.2f}")
    print(f"({args.rounds} rounds, {sys.executable})")
    listing = medians["zae addons list"] / torch_import
    show = medians["zae addons show state_manager"] - medians["zae --help"]
    print(f"zae addons list / import torch: {listing:.2f} (target <= 0.25)")
    print(f"zae addons show state_manager - zae --help: {show * 1000:+.0f} ms (target <= +200 ms)")


if __name__ == "__main__":
    main()
