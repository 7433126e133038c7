"""Starting one worker process per device, watching them, and never leaving one behind.

The launching process takes the run's rendezvous first (see `ports`), pickles (trainer, loaders) once and hands
the bytes to each spawned worker; workers send nothing back but files: rank 0 writes the trained state
(safetensors + JSON, see `handback`) and a rank that fails writes its traceback as JSON. The launcher waits on
the workers' sentinels. When one exits with an error, the others usually follow within moments, their
collectives broken by its departure; the launcher gives them a short while to report, so the rank whose own
code raised is the one named (not a peer that lost its connection), then stops the rest (SIGTERM, then SIGKILL).
Each worker also watches a pipe whose only writing end the launcher holds, and exits when it closes, so even
`kill -9` of the launcher leaves no orphan (PR_SET_PDEATHSIG backs this up for spawned workers).
"""

from __future__ import annotations

import ctypes
import functools
import multiprocessing
import os
import pickle
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from multiprocessing.connection import wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.multiprocessing as mp

from zae_engine.errors import ConfigError, TrainingInterrupted
from zae_engine.seeding import seed_everything
from zae_mpu.failures import RankFailedError, has_user_failure, record_failure, run_failed_error
from zae_mpu.handback import TREE, read_state, trainer_parts, write_state
from zae_mpu.ports import hosted_rendezvous
from zae_mpu.rank import RankPlan, run_rank

if TYPE_CHECKING:
    from collections.abc import Iterable

    from zae_engine.trainer.loop import Trainer

_STOP_GRACE_S = 5.0
_REPORT_GRACE_S = 10.0  # after a rank fails: how long the others may take to exit and leave their report


@dataclass(frozen=True)
class SpawnPlan:
    """Everything a spawned worker needs besides the pickled trainer."""

    devices: tuple[str, ...]
    init_method: str
    backend: str
    timeout_s: float
    seed: int
    threads: int
    folder: str
    n_epoch: int
    start_method: str = "forkserver"
    total: bool = False  # n_epoch counts all epochs, a resumed checkpoint's included
    strict_port: bool = False
    hosted_store: bool = False  # set by spawn_run: the launcher serves init_method's store


def spawn_run(trainer: Trainer, plan: SpawnPlan, loader: Iterable, valid_loader: Iterable | None) -> dict[str, Any]:
    """Run every rank in its own process; returns the state rank 0 handed back."""
    payload = _pickled(trainer, loader, valid_loader)
    context = _context(plan.start_method)
    world = len(plan.devices)
    with (
        tempfile.TemporaryDirectory(prefix="zae-mpu-") as folder,
        hosted_rendezvous(plan.init_method, plan.strict_port, plan.timeout_s) as rendezvous,
    ):
        plan = replace(plan, folder=folder, init_method=rendezvous.init_method, hosted_store=rendezvous.hosted)
        lifeline, launcher_end = context.Pipe(duplex=False)  # workers hold only the reading end
        workers = [
            context.Process(target=_worker_main, args=(rank, payload, plan, lifeline), name=f"zae-mpu-rank{rank}")
            for rank in range(world)
        ]
        with _signals_as_interrupts():
            try:
                for worker in workers:
                    worker.start()
                _wait_for_all(workers, Path(folder), world)
            finally:
                _stop(workers)
                lifeline.close()
                launcher_end.close()
        return read_state(folder)


def _pickled(trainer: Trainer, loader: Iterable, valid_loader: Iterable | None) -> bytes:
    try:
        return pickle.dumps((trainer, loader, valid_loader), protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise ConfigError(
            f"MultiGPUAddon: the trainer and the loaders travel to the worker processes by pickle, and this one "
            f"cannot be pickled: {exc}. Define classes and functions (collate_fn, datasets, the trainer) at the top "
            "level of a module or script, not inside a function, and use no lambdas in them"
        ) from None


def _context(start_method: str) -> Any:
    """forkserver: one server imports torch once and forks every worker from it (in this and later runs),
    instead of each spawned worker importing torch again; spawn where forkserver does not exist."""
    if start_method == "forkserver" and "forkserver" in mp.get_all_start_methods():
        context = mp.get_context("forkserver")
        # torch._dynamo: DistributedDataParallel() imports it (~800 modules, seconds): pay that once, here
        context.set_forkserver_preload(["torch", "torch._dynamo", "zae_engine.trainer", "zae_mpu.spawn"])
        return context
    return mp.get_context("spawn")


def _wait_for_all(workers: list, folder: Path, world: int) -> None:
    pending = {worker.sentinel: rank for rank, worker in enumerate(workers)}
    while pending:
        for sentinel in wait(list(pending)):
            rank = pending.pop(sentinel)
            workers[rank].join()
            if workers[rank].exitcode != 0:
                exits = {rank: workers[rank].exitcode}
                exits.update(_reports_of_the_others(workers, pending, folder))
                _stop(workers)
                raise run_failed_error(folder, exits, world)
    if not (folder / TREE).exists():
        raise RankFailedError(f"rank 0 of {world} finished but handed no state back; nothing was loaded", 0)


def _reports_of_the_others(workers: list, pending: dict, folder: Path) -> dict[int, int | None]:
    """Wait (at most `_REPORT_GRACE_S`) until a rank has reported its own error or every rank has exited.

    A rank whose code raised may be slower to report than a peer whose collective broke when it left; waiting
    here names the right one. Returns the exit codes of the ranks that exited meanwhile.
    """
    exits: dict[int, int | None] = {}
    deadline = time.monotonic() + _REPORT_GRACE_S
    while pending and not has_user_failure(folder):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        for sentinel in wait(list(pending), timeout=remaining):
            rank = pending.pop(sentinel)
            workers[rank].join()
            exits[rank] = workers[rank].exitcode
    return exits


def _stop(workers: list) -> None:
    """SIGTERM every live worker, then SIGKILL the ones still there after a grace period; reap them all."""
    alive = [w for w in workers if w.pid is not None and w.is_alive()]
    for worker in alive:
        worker.terminate()
    for worker in alive:
        worker.join(_STOP_GRACE_S)
        if worker.is_alive():
            worker.kill()
            worker.join()


@contextmanager
def _signals_as_interrupts() -> Iterator[None]:
    """SIGTERM to the launcher stops the workers like Ctrl-C does, instead of killing it with them orphaned."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        raise TrainingInterrupted(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except KeyboardInterrupt as exc:
        if isinstance(exc, TrainingInterrupted):
            raise
        raise TrainingInterrupted("SIGINT") from None
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------- inside a worker
def _worker_main(rank: int, payload: bytes, plan: SpawnPlan, lifeline: Any) -> None:
    _die_with_launcher(lifeline)
    # multiprocessing made our start method this process's default; DataLoader workers should start as they would
    # in a fresh interpreter (fork on Linux before 3.14), not re-import torch through a server or a spawn
    multiprocessing.set_start_method(None, force=True)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher owns Ctrl-C and stops us with SIGTERM
    torch.set_num_threads(plan.threads)
    seed_everything(plan.seed + rank)  # reproducible, and different per rank (dropout, augmentation)
    folder = Path(plan.folder)
    try:
        # the launcher pickled these in memory a moment ago and handed them over the process-start pipe, exactly as
        # multiprocessing does with any argument; nothing here is read from disk (results go back as safetensors+JSON)
        trainer, loader, valid_loader = pickle.loads(payload)
        if trainer.scheduler is not None:
            _restore_step_tracking(trainer.optimizer)
        trainer.handle_signals = False
        rank_plan = RankPlan(
            rank=rank,
            world_size=len(plan.devices),
            device=_device_for(plan.devices[rank], rank),
            init_method=plan.init_method,
            backend=plan.backend,
            timeout_s=plan.timeout_s,
            seed=plan.seed,
            hosted_store=plan.hosted_store,
            handed_back=True,
        )
        run_rank(trainer, rank_plan, plan.n_epoch, loader, valid_loader, plan.total)
        if rank == 0:
            write_state(folder, trainer_parts(trainer))
    except BaseException as exc:
        record_failure(folder, rank, exc)
        sys.exit(1)


def _device_for(name: str, rank: int) -> torch.device:
    device = torch.device(name)
    return torch.device("cuda", rank) if device.type == "cuda" and device.index is None else device


def _restore_step_tracking(optimizer: Any) -> None:
    """LR schedulers mark `optimizer.step` to check the call order; pickling drops the mark: put it back."""
    if optimizer is None or hasattr(optimizer.step, "_wrapped_by_lr_sched"):
        return
    step = optimizer.step

    @functools.wraps(step)
    def tracked(*args: Any, **kwargs: Any) -> Any:
        optimizer._opt_called = True
        return step(*args, **kwargs)

    tracked._wrapped_by_lr_sched = True
    optimizer.step = tracked


def _die_with_launcher(lifeline: Any) -> None:
    """Exit at once when the launcher is gone, however it went (even kill -9): nobody would collect our work."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: our parent process
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        try:
            lifeline.recv()  # nothing is ever sent: this returns (EOFError) when the launcher's end closes
        except (EOFError, OSError):
            pass
        os._exit(1)

    threading.Thread(target=watch, name="zae-mpu-lifeline", daemon=True).start()
