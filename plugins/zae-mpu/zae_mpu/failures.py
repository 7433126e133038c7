"""What a failed rank leaves behind, and the one error the launching process raises from it."""

from __future__ import annotations

import json
import signal
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from zae_engine.errors import ZaeError

_FRAMES_SHOWN = 4


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


def record_failure(folder: Path, rank: int, exc: BaseException) -> None:
    """Leave this rank's error where the launcher looks for it (JSON: never unpickled)."""
    frames = traceback.extract_tb(exc.__traceback__)
    summary = "".join(traceback.format_list(frames[-_FRAMES_SHOWN:]))
    failure = Failure(
        rank=rank,
        kind=type(exc).__name__,
        message=str(exc),
        traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        summary=summary,
        time=time.time(),
    )
    path = folder / f"failure-rank{rank}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(failure)), encoding="utf-8")
    tmp.replace(path)


def first_failure(folder: Path) -> Failure | None:
    """The failure recorded earliest: the cause; later ones are usually peers losing their connection to it."""
    failures = [Failure(**json.loads(p.read_text(encoding="utf-8"))) for p in folder.glob("failure-rank*.json")]
    return min(failures, key=lambda f: f.time, default=None)


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
