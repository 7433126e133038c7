"""Is the writer of a `running` record still alive? Answered with a file lock, not a process id.

The writer holds an exclusive `flock` on `writer.lock` in its run folder for as long as it lives. The kernel
drops that lock when the process ends, however it ends (SIGKILL and out-of-memory kills included), so a
reader that can take a shared lock on the file knows the writer is gone. Unlike a PID check this cannot be
fooled by the PID being reused, and it works for a writer on another machine when the file system shares
locks (NFSv4 does; Linux maps `flock` to NFS byte-range locks).

On a file system without locks (an NFS mount with `nolock`), the writer records anyway and readers cannot
tell: such a run shows as `running` until its record says otherwise.

Caveat: a child forked by the writer (e.g. a DataLoader worker with the `fork` start method) shares the
lock until it exits too; such workers end when their parent dies.
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: liveness cannot be told; records are taken at their word
    fcntl = None  # type: ignore[assignment]


class WriterLock:
    """The writer's claim on its run folder, held until `release()` or process exit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.release()
                raise RuntimeError(f"{path} is locked by another writer") from None
            except OSError:  # a file system without locks: the run still records, readers cannot tell liveness
                pass

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor drops the flock


def writer_alive(path: Path) -> bool | None:
    """True while a writer holds `path`, False when none does, None when it cannot be told."""
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return False  # the writer makes the lock before it writes run.json; no lock, no live writer
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)
    return False
