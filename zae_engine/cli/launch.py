"""`zae run --nproc-per-node N ...`: start the run under torchrun (`python -m torch.distributed.run`).

Each worker runs `python -m zae_engine.cli run SPEC ...` without the launcher flags; torchrun gives it RANK,
WORLD_SIZE, MASTER_ADDR/PORT, and a launcher add-on (mpu) joins that process group.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class LaunchOptions:
    nproc_per_node: int | None = None
    nnodes: str | None = None
    node_rank: int | None = None
    master_addr: str | None = None
    master_port: int | None = None

    @property
    def wanted(self) -> bool:
        return any(
            v is not None
            for v in (self.nproc_per_node, self.nnodes, self.node_rank, self.master_addr, self.master_port)
        )


def torchrun_command(options: LaunchOptions, spec: str, overrides: list[str], debug: bool = False) -> list[str]:
    """The command line that starts the workers."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(options.nproc_per_node or 1)]
    single_node = options.nnodes in (None, "1")
    if single_node and options.master_addr is None and options.master_port is None and options.node_rank in (None, 0):
        command.append("--standalone")  # one machine: torchrun picks a free port itself
    else:
        for flag, value in (
            ("--nnodes", options.nnodes),
            ("--node-rank", options.node_rank),
            ("--master-addr", options.master_addr),
            ("--master-port", options.master_port),
        ):
            if value is not None:
                command += [flag, str(value)]
    command += ["-m", "zae_engine.cli"]
    if debug:
        command.append("--debug")
    command += ["run", spec]
    for assignment in overrides:
        command += ["--set", assignment]
    return command


def launch(options: LaunchOptions, spec: str, overrides: list[str], debug: bool = False) -> int:
    """Run torchrun and return its exit code (130 if interrupted)."""
    process = subprocess.Popen(torchrun_command(options, spec, overrides, debug))
    try:
        return process.wait()
    except KeyboardInterrupt:  # the workers got the same Ctrl-C from the terminal; let them stop cleanly
        process.wait()
        return 130
