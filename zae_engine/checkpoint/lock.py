"""One writer per save_path: an exclusive `flock` on `save_path/.zae-writer.lock` while a run writes there.

Two runs saving into one folder would interleave their manifest updates and folder names. The lock makes
the second one stop with an error naming the holder before it trains. It is an advisory kernel lock: the
kernel drops it when the holder's file is closed, also when the process is killed with SIGKILL, so it never
goes stale and the file is never deleted (deleting a lock file lets two writers lock two different files).
Readers take no lock: the manifest is replaced atomically, so they only ever see whole states.

A process that forks (DataLoader workers) does not pass the lock on: the child closes its copy at once, so a
killed writer's workers cannot keep its save_path locked.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import time
import warnings
import weakref
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from zae_engine.checkpoint.failures import save_path_failure, write_failure
from zae_engine.checkpoint.untrusted import refuse_link
from zae_engine.errors import CheckpointError

try:
    import fcntl
except ImportError:  # Windows: no flock; the lock is not taken there
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".zae-writer.lock"
_HOLDER_BYTES = 4096
_HOLDER_WAIT_S = 5.0  # only a refused writer waits, and only until the holder has written who it is
_FLAGS = (
    os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
)

_held: weakref.WeakSet[WriterLock] = weakref.WeakSet()


def prepare_save_path(root: Path) -> None:
    """Create `root` (and its parents); a file in the way or a folder that cannot be made is a clear error."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise save_path_failure(root, exc) from exc
    if not root.is_dir():
        raise CheckpointError(f"save_path {str(root)!r} is a file, not a folder; choose a folder")


class WriterLock:
    """The writer's lock on one save_path; `acquire` refuses with the holder's pid and host when it is taken."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.root / LOCK_NAME

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        prepare_save_path(self.root)
        if fcntl is None:
            return
        try:
            fd = os.open(self.path, _FLAGS, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise refuse_link(self.path, "lock file") from None
            raise write_failure(self.path, exc, "lock file") from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise CheckpointError(f"lock file {str(self.path)!r} is not a regular file; remove it and start again")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise CheckpointError(self._taken_message(_wait_for_holder(fd))) from None
            except OSError as exc:  # a file system without locks (some network or FUSE mounts)
                warnings.warn(
                    f"cannot lock save_path {str(self.root)!r} ({exc.strerror}); make sure no other run writes into "
                    "it at the same time",
                    stacklevel=3,
                )
                os.close(fd)
                return
            holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": _now()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        _held.add(self)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        _held.discard(self)
        if fd is not None:
            os.close(fd)  # closing drops the flock; the file stays for the next writer

    def __del__(self) -> None:
        try:
            self.release()  # a store dropped while writing must not keep its save_path locked until exit
        except Exception:  # at interpreter exit the modules it needs may be gone; the kernel releases it then
            pass

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "_fd": None}  # a copy in another process holds nothing

    def _taken_message(self, holder: dict[str, Any]) -> str:
        pid, host, since = holder.get("pid"), holder.get("host"), holder.get("since")
        if pid == os.getpid() and host == socket.gethostname():
            who = f"another trainer in this process (pid {pid})"
        elif pid is not None:
            who = f"process {pid} on host {host or '?'}" + (f", since {since}" if since else "")
        else:
            who = "another process (it has not recorded its pid yet)"
        return (
            f"save_path {str(self.root)!r} is being written by {who}: two runs saving into one folder would corrupt "
            "its checkpoints. Wait until that run ends, or give this run another save_path"
        )


def _wait_for_holder(fd: int) -> dict[str, Any]:
    """The holder's pid/host. A holder that locked a moment ago writes them right after (until then the file is
    empty, or still names a dead predecessor), so a refused writer waits a little for them."""
    deadline = time.monotonic() + _HOLDER_WAIT_S
    while True:
        holder = _read_holder(fd)
        if _plausible(holder) or time.monotonic() > deadline:
            return holder
        time.sleep(0.01)


def _plausible(holder: dict[str, Any]) -> bool:
    """Names a pid that, if it is on this host, is alive."""
    pid = holder.get("pid")
    if pid is None:
        return False
    if holder.get("host") != socket.gethostname():
        return True  # another machine's pid: nothing to check it against
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _read_holder(fd: int) -> dict[str, Any]:
    """pid/host/since as the holder wrote them; anything odd in the file is dropped, never echoed."""
    try:
        raw = json.loads(os.pread(fd, _HOLDER_BYTES, 0).decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(raw, dict):
        return {}
    pid, host, since = raw.get("pid"), raw.get("host"), raw.get("since")
    return {
        "pid": pid if type(pid) is int and pid > 0 else None,
        "host": host if isinstance(host, str) and host.isprintable() and len(host) <= 255 else None,
        "since": since if isinstance(since, str) and since.isprintable() and len(since) <= 40 else None,
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _close_in_child() -> None:
    """After fork: the child's copy of a held lock file is closed (flock is shared by both copies until then)."""
    for lock in list(_held):
        fd, lock._fd = lock._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)
