"""What a failed rank leaves behind, and the one error the launching process raises from it.

When one rank's code raises, every other rank soon fails too, inside a collective whose peer has gone
("Connection closed by peer", a collective timeout). Those are symptoms: each report says whether it is one,
and the launcher names the rank whose own error caused the rest.
"""

from __future__ import annotations

import json
import re
import signal
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import torch.distributed as dist

from zae_engine.errors import ZaeError

_FRAMES_SHOWN = 4
# how gloo, NCCL and c10d word a collective that failed because another rank went away or stalled
_TRANSPORT_WORDS = re.compile(
    r"connection (closed|reset) by peer|broken pipe|gloo/transport|timed out waiting|socket timeout|"
    r"ProcessGroup(Gloo|NCCL)|NCCL (error|communicator)|collective operation timeout",
    re.IGNORECASE,
)


class RankFailedError(ZaeError, RuntimeError):
    """A worker rank raised or died; the whole run was stopped. `worker_traceback` holds that rank's traceback."""

    def __init__(self, message: str, rank: int, worker_traceback: str = "") -> None:
        super().__init__(message)
        self.rank = rank
        self.worker_traceback = worker_traceback


@dataclass
class Failure:
    rank: int
    kind: str
    message: str
    traceback: str
    summary: str
    time: float
    transport: bool = False  # a broken collective: most likely a consequence of another rank's failure


def is_transport_error(exc: BaseException) -> bool:
    """True for errors of the process group's transport (c10d's DistError, gloo/NCCL connection and timeouts),
    and for errors raised `from` one (a sharded save that says which checkpoint the broken collective cost)."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    if exc.__suppress_context__ and exc.__cause__ is not None and is_transport_error(exc.__cause__):
        return True
    return isinstance(exc, RuntimeError) and bool(_TRANSPORT_WORDS.search(str(exc)))


def _cause(exc: BaseException) -> BaseException:
    """The user's error behind a transport error raised while handling it (e.g. a barrier in cleanup)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if not is_transport_error(current):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return exc


def record_failure(folder: Path, rank: int, exc: BaseException) -> None:
    """Leave this rank's error where the launcher looks for it (JSON: never unpickled)."""
    exc = _cause(exc)
    frames = traceback.extract_tb(exc.__traceback__)
    summary = "".join(traceback.format_list(frames[-_FRAMES_SHOWN:]))
    failure = Failure(
        rank=rank,
        kind=type(exc).__name__,
        message=str(exc),
        traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        summary=summary,
        time=time.time(),
        transport=is_transport_error(exc),
    )
    path = folder / f"failure-rank{rank}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(failure)), encoding="utf-8")
    tmp.replace(path)


def read_failures(folder: Path) -> list[Failure]:
    return [Failure(**json.loads(p.read_text(encoding="utf-8"))) for p in folder.glob("failure-rank*.json")]


def has_user_failure(folder: Path) -> bool:
    """Has some rank reported an error of its own (not a broken collective)?"""
    return any(not failure.transport for failure in read_failures(folder))


def run_failed_error(folder: Path, exits: dict[int, int | None], world_size: int) -> RankFailedError:
    """The error that names the cause: the earliest error a rank's own code raised; else a rank that died
    without a word (killed, out of memory), whose peers then lost it; else the earliest transport error."""
    failures = read_failures(folder)
    own = [failure for failure in failures if not failure.transport]
    if own:
        return rank_failed_error(min(own, key=lambda f: f.time), world_size)
    reported = {failure.rank for failure in failures}
    silent = sorted(rank for rank, code in exits.items() if code != 0 and rank not in reported)
    if silent:
        return rank_died_error(silent[0], exits[silent[0]], world_size)
    if failures:
        return rank_failed_error(min(failures, key=lambda f: f.time), world_size)
    rank = min(exits)
    return rank_died_error(rank, exits[rank], world_size)


def rank_failed_error(failure: Failure, world_size: int) -> RankFailedError:
    text = (
        f"rank {failure.rank} of {world_size} failed, so every rank was stopped:\n"
        f"{failure.kind}: {failure.message}\n"
        f"where (innermost last):\n{failure.summary.rstrip()}"
    )
    if failure.kind == "AttributeError" and "Can't get attribute" in failure.message:
        text += (
            "\nhint: workers import your classes by name; define the trainer (and datasets, collate functions) in a "
            "module or at the top level of the script, not in a notebook cell or inside a function"
        )
    return RankFailedError(text, failure.rank, failure.traceback)


def rank_died_error(rank: int, exitcode: int | None, world_size: int) -> RankFailedError:
    if exitcode is not None and exitcode < 0:
        how = f"was killed by {signal.Signals(-exitcode).name}"
        hint = " (SIGKILL often means the machine ran out of memory)" if -exitcode == signal.SIGKILL else ""
    else:
        how, hint = f"exited with code {exitcode}", ""
    return RankFailedError(
        f"rank {rank} of {world_size} {how} without a Python error{hint}, so every rank was stopped", rank
    )
