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
from contextlib import contextmanager, suppress
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
_INTERRUPTED = "interrupted"  # rank 0 writes the signal's name here when the run stopped on one
_STOPPED_BY_SIGNAL = (-signal.SIGINT, -signal.SIGTERM)
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


def spawn_run(
    trainer: Trainer, plan: SpawnPlan, loader: Iterable, valid_loader: Iterable | None
) -> tuple[dict[str, Any], str | None]:
    """Run every rank in its own process; returns the state rank 0 handed back, and the signal that stopped the
    run early (None when it ran to its end)."""
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
        with _forwarded_signals(workers) as forwarded:
            try:
                for worker in workers:
                    worker.start()
                _wait_for_all(workers, Path(folder), world, forwarded)
            finally:
                _stop(workers)
                lifeline.close()
                launcher_end.close()
        stopped = forwarded.name or _marker(Path(folder))
        if stopped is not None and not (Path(folder) / TREE).exists():
            raise TrainingInterrupted(stopped)  # stopped before rank 0 could hand anything back
        return read_state(folder), stopped


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


def _wait_for_all(workers: list, folder: Path, world: int, forwarded: _Forwarded) -> None:
    pending = {worker.sentinel: rank for rank, worker in enumerate(workers)}
    while pending:
        for sentinel in wait(list(pending)):
            rank = pending.pop(sentinel)
            workers[rank].join()
            if forwarded.name is not None and workers[rank].exitcode in _STOPPED_BY_SIGNAL:
                continue  # a rank the forwarded signal ended before its trainer could catch it
            if workers[rank].exitcode != 0:
                exits = {rank: workers[rank].exitcode}
                exits.update(_reports_of_the_others(workers, pending, folder))
                _stop(workers)
                raise run_failed_error(folder, exits, world)
    if not (folder / TREE).exists() and forwarded.name is None and _marker(folder) is None:
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


@dataclass
class _Forwarded:
    name: str | None = None  # the signal passed on to every rank


@contextmanager
def _forwarded_signals(workers: list) -> Iterator[_Forwarded]:
    """SIGINT/SIGTERM to the launcher go on to every rank, whose trainers stop together at the same step and write
    their interrupted checkpoint; a second signal ends them at once. Workers run in sessions of their own, so a
    terminal's Ctrl-C reaches them only this way, once."""
    forwarded = _Forwarded()
    if threading.current_thread() is not threading.main_thread():
        yield forwarded
        return

    def on_signal(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if forwarded.name is not None:
            for worker in workers:
                if worker.pid is not None and worker.is_alive():
                    worker.kill()
            raise KeyboardInterrupt(f"second {name}: every rank was stopped at once")
        forwarded.name = name
        with suppress(OSError):
            os.write(
                2, f"\n{name} received: every rank stops after the same step (send it again to abort now)\n".encode()
            )
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                with suppress(ProcessLookupError):
                    os.kill(worker.pid, signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield forwarded
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _marker(folder: Path) -> str | None:
    """The signal a rank's trainer stopped on, as rank 0 left it (a signal that reached the workers directly)."""
    path = folder / _INTERRUPTED
    return path.read_text(encoding="utf-8").strip() or None if path.is_file() else None


# ---------------------------------------------------------------------- inside a worker
def _worker_main(rank: int, payload: bytes, plan: SpawnPlan, lifeline: Any) -> None:
    _die_with_launcher(lifeline)
    # multiprocessing made our start method this process's default; DataLoader workers should start as they would
    # in a fresh interpreter (fork on Linux before 3.14), not re-import torch through a server or a spawn
    multiprocessing.set_start_method(None, force=True)
    os.setsid()  # out of the terminal's process group: its Ctrl-C reaches us once, forwarded by the launcher
    torch.set_num_threads(plan.threads)
    seed_everything(plan.seed + rank)  # reproducible, and different per rank (dropout, augmentation)
    folder = Path(plan.folder)
    try:
        # the launcher pickled these in memory a moment ago and handed them over the process-start pipe, exactly as
        # multiprocessing does with any argument; nothing here is read from disk (results go back as safetensors+JSON)
        trainer, loader, valid_loader = pickle.loads(payload)
        if trainer.scheduler is not None:
            _restore_step_tracking(trainer.optimizer)
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
        try:
            run_rank(trainer, rank_plan, plan.n_epoch, loader, valid_loader, plan.total)
        except TrainingInterrupted as stopped:  # every rank stopped at the same step; the checkpoint is written
            if rank == 0:
                (folder / _INTERRUPTED).write_text(stopped.signal_name, encoding="utf-8")
                write_state(folder, trainer_parts(trainer))
            return
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
