"""Opening the files of a checkpoint as untrusted input: no symlink followed, no special file, bounded sizes.

A checkpoint folder may come from someone else (a download, a shared disk). A file in it that is a symbolic
link could make us read something outside it — and an error message quoting its size or content would leak
it — so links are refused before anything is read (O_NOFOLLOW; the folder the user named may itself be a
link). JSON side files are capped in size before they are read and in nesting depth while they are parsed,
so a hostile file costs milliseconds, not memory or minutes.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import IO, Any

from zae_engine.checkpoint.failures import read_failure
from zae_engine.errors import CheckpointError

#: the largest JSON side file (checkpoint.json, state.json, manifest.json, the skeleton of a `.ckpt` file)
MAX_JSON_BYTES = 64 * 2**20

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_OPEN_FLAGS = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)


def open_regular(path: Path, what: str = "checkpoint file", follow: bool = False) -> IO[bytes]:
    """Open `path` for reading if it is a regular file and (unless `follow`) not a symbolic link.

    Only the last part of the path is checked: the folder holding it may be a link (a save_path may be one).
    `follow=True` is for a path the user named directly, outside any checkpoint folder.
    """
    try:
        # O_NONBLOCK: a FIFO planted as a file must not hang the open
        fd = os.open(path, _OPEN_FLAGS & ~_NOFOLLOW if follow else _OPEN_FLAGS)
    except FileNotFoundError:
        raise CheckpointError(f"{what} {str(path)!r} is missing; the checkpoint is incomplete") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise refuse_link(path, what) from None
        raise read_failure(path, exc, what) from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CheckpointError(f"{what} {str(path)!r} is not a regular file; the checkpoint is damaged or foreign")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def refuse_link(path: Path, what: str = "checkpoint file") -> CheckpointError:
    """The error for a symbolic link inside a checkpoint: says nothing about where it points."""
    return CheckpointError(
        f"{what} {str(path)!r} is a symbolic link; files and folders inside a checkpoint must be real ones. "
        "It was refused without reading what it points to. Copy the real files in, or load another checkpoint"
    )


def is_link(path: Path) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False


def check_size(handle: IO[bytes], path: Path, limit: int, what: str) -> int:
    """The size of an open file, refused above `limit` before a byte of it is read."""
    size = os.fstat(handle.fileno()).st_size
    if size > limit:
        raise _too_big(path, f"{size} bytes", limit, what)
    return size


def _too_big(path: Path, size: str, limit: int, what: str) -> CheckpointError:
    return CheckpointError(
        f"{what} {str(path)!r} is {size}, more than the {limit >> 20} MiB such a file may have; "
        "zae-engine did not write it. Load another checkpoint"
    )


def read_json(path: Path, what: str, limit: int = MAX_JSON_BYTES) -> Any:
    """Parse a JSON side file of a checkpoint: a link, an oversized file or absurd nesting is a CheckpointError."""
    with open_regular(path, what) as handle:
        check_size(handle, path, limit, what)
        try:
            data = handle.read(limit + 1)
        except OSError as exc:
            raise read_failure(path, exc, what) from exc
    if len(data) > limit:  # it grew while we read it
        raise _too_big(path, "larger", limit, what)
    return parse_json(data, repr(str(path)), what)


def parse_json(data: bytes | str, source: str, what: str) -> Any:
    """json.loads for untrusted text: its errors become CheckpointError naming `source` (a quoted path)."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text)
    except MemoryError as exc:
        raise CheckpointError(f"{source} is too large to parse as a {what}; it is not one zae-engine wrote") from exc
    except RecursionError as exc:
        raise CheckpointError(
            f"{source} is not a {what}: its JSON nests too deeply (damaged or hostile). Nothing from it was used"
        ) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{source} is not a {what} (not valid JSON: {exc}); it is damaged or foreign. Nothing from it was executed"
        ) from exc


def dump_json(value: Any, target: str, limit: int = MAX_JSON_BYTES, indent: int | None = None) -> str:
    """json.dumps that writes strict JSON (no NaN) within `limit`, so what is saved can always be read back."""
    try:
        text = json.dumps(value, allow_nan=False, indent=indent)
    except ValueError as exc:  # NaN or inf slipped through
        raise CheckpointError(f"cannot write {target}: {exc}") from exc
    if len(text) > limit:
        raise CheckpointError(
            f"cannot write {target}: its JSON part would be {len(text) >> 20} MiB, more than the {limit >> 20} MiB "
            "a checkpoint reads back. Keep large data in tensors, not in lists or strings"
        )
    return text
