"""`zae run --nproc-per-node N ...`: start the run under torchrun (`python -m torch.distributed.run`).

Each worker runs `python -m zae_engine.cli run SPEC ...` without the launcher flags; torchrun gives it RANK,
WORLD_SIZE, MASTER_ADDR/PORT, and a launcher add-on (mpu) joins that process group.

Signals belong to `zae`, not to torchrun: torchrun runs in a session of its own with SIGINT/SIGTERM ignored (it
would answer them by killing the workers and printing pages of tracebacks), and `zae` passes the first SIGINT
or SIGTERM to every worker, whose trainers stop together at the same step, write their interrupted checkpoint
and exit quietly; `zae` then says in one line what stopped and exits 130 or 143. A second signal ends everything
at once. If `zae` itself dies, even by SIGKILL, torchrun and the workers die with it (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

STATUS_ENV = "ZAE_LAUNCH_STATUS"  # a folder the launcher and its workers share: worker pids, how the run stopped
_EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


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
    """Run torchrun; its exit code, or 130/143 when a signal stopped the run (after its checkpoint)."""
    with tempfile.TemporaryDirectory(prefix="zae-launch-") as status:
        env = {**os.environ, STATUS_ENV: status, "TORCHELASTIC_SIGNALS_TO_HANDLE": "SIGUSR2"}
        command = torchrun_command(options, spec, overrides, debug)
        process = subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=_torchrun_child)
        with _forwarding(Path(status), process) as forwarded:
            code = process.wait()
        stopped = forwarded[0] if forwarded else _read(Path(status) / "interrupted")
        if stopped is not None:
            print(f"stopped by {stopped}: every rank ended after the same step", file=sys.stderr)
            return _EXIT_CODES.get(stopped, 130)
        return code


def _torchrun_child() -> None:
    """In torchrun's process, before it starts: die with `zae`, and leave SIGINT/SIGTERM to it."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@contextmanager
def _forwarding(status: Path, process: subprocess.Popen) -> Iterator[list[str]]:
    """The first SIGINT/SIGTERM goes on to every worker; the second kills torchrun's whole session at once."""
    got: list[str] = []

    def on_signal(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if got:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            for pid in _worker_pids(status):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return
        got.append(name)
        for pid in _worker_pids(status):
            with suppress(ProcessLookupError):
                os.kill(pid, signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield got
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _worker_pids(status: Path) -> list[int]:
    return [int(text) for path in status.glob("pid-*") if (text := _read(path) or "").isdigit()]


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


# ---------------------------------------------------------------------- the worker's side
def join_launcher() -> Path | None:
    """In a worker `zae run` started by `launch`: die with torchrun, let the launcher find us; the status folder."""
    folder = os.environ.get(STATUS_ENV)
    if not folder or "RANK" not in os.environ:
        return None
    die_with_parent()
    status = Path(folder)
    with suppress(OSError):
        (status / f"pid-{os.environ['RANK']}").write_text(str(os.getpid()), encoding="utf-8")
    return status


def report_stop(status: Path, signal_name: str) -> None:
    """Tell the launcher the run stopped on `signal_name` (rank 0 does; the others stopped at the same step)."""
    if os.environ.get("RANK", "0") == "0":
        with suppress(OSError):
            (status / "interrupted").write_text(signal_name, encoding="utf-8")


def die_with_parent() -> None:
    """PR_SET_PDEATHSIG: the kernel sends us SIGKILL when our parent process dies, however it dies."""
    if sys.platform.startswith("linux"):
        with suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
