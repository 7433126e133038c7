"""Why a checkpoint could not be written or read, in one `CheckpointError` that says what to do.

torch, safetensors and the OS report the same trouble in different shapes: a full disk is `OSError(ENOSPC)`
from Python, a `RuntimeError` from torch's zip writer (with the `OSError` as its context when torch wrote
through a Python file), a `SafetensorError` whose text ends in "(os error 28)". The advice depends on the
cause — "free space" only when the disk really is full — so the errno is dug out of all of these.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path

from zae_engine.errors import CheckpointError

_OS_ERROR_TEXT = re.compile(r"os error (\d+)")

_ADVICE = {
    errno.ENOSPC: "the disk is full. Free space or choose another save_path",
    errno.EDQUOT: "the disk quota is used up. Free space or choose another save_path",
    errno.EROFS: "the file system is read-only. Choose a save_path on a writable disk",
    errno.EACCES: "permission denied. Choose a save_path you may write to",
    errno.EPERM: "the operation is not permitted there. Choose a save_path you may write to",
    errno.ENAMETOOLONG: "a file name is too long for this file system. Choose a shorter save_path",
    errno.ENOTDIR: "a part of the path is a file, not a folder. Choose another save_path",
    errno.EFBIG: "the file is larger than this system allows (see `ulimit -f`)",
    errno.EIO: "the disk reported an input/output error. Check the disk, or choose another save_path",
}


def os_errno(exc: BaseException) -> int | None:
    """The errno behind `exc`, looking through causes, contexts and safetensors' '(os error N)' text."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno:
            return current.errno
        found = _OS_ERROR_TEXT.search(str(current))
        if found:
            return int(found.group(1))
        current = current.__cause__ or current.__context__
    return None


def shown(path: Path) -> str:
    """`path` quoted for a message; an absurdly long one is shortened in the middle."""
    text = str(path)
    return repr(text if len(text) <= 240 else f"{text[:120]}...{text[-100:]}")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def write_failure(target: Path, exc: BaseException, what: str = "checkpoint") -> CheckpointError:
    """`exc` raised while writing `target`, as an error naming it and the fix (raise it `from exc`)."""
    if isinstance(exc, CheckpointError):
        return exc
    if isinstance(exc, MemoryError):
        advice = "the process ran out of memory while encoding it. Free memory, or save a smaller state"
    else:
        code = os_errno(exc)
        advice = _ADVICE.get(code) if code is not None else None
        if advice is None:
            advice = f"{type(exc).__name__}: {first_line(exc)}. Check that the save_path is a folder you can write to"
    return CheckpointError(f"could not write {what} {shown(target)}: {advice}; earlier checkpoints are untouched")


def read_failure(path: Path, exc: BaseException, what: str = "checkpoint file") -> CheckpointError:
    """`exc` raised while reading `path` (before any parser saw it), as an error naming it and the fix."""
    if isinstance(exc, CheckpointError):
        return exc
    if isinstance(exc, MemoryError):
        return CheckpointError(
            f"{what} {shown(path)} asks for more memory than there is; it is corrupt or not a checkpoint"
        )
    code = os_errno(exc)
    if code == errno.ENAMETOOLONG:
        return CheckpointError(f"cannot read {what} {shown(path)}: the path is too long for this file system")
    if code in (errno.EACCES, errno.EPERM):
        return CheckpointError(f"cannot read {what} {shown(path)}: permission denied; check its permissions")
    return CheckpointError(
        f"cannot read {what} {shown(path)} ({type(exc).__name__}: {first_line(exc)}); check the path and the disk"
    )


def save_path_failure(root: Path, exc: OSError) -> CheckpointError:
    """save_path could not be created (or is a file): say which, never 'free space' unless the disk is full."""
    code = os_errno(exc)
    if code in (errno.EEXIST, errno.ENOTDIR):
        return CheckpointError(
            f"save_path {shown(root)} is a file, not a folder (or a part of it is a file); choose a folder"
        )
    if code in _ADVICE:
        return CheckpointError(f"cannot create save_path {shown(root)}: {_ADVICE[code]}")
    return CheckpointError(
        f"cannot create save_path {shown(root)} ({type(exc).__name__}: {first_line(exc)}); "
        "choose a folder you can create and write to"
    )
