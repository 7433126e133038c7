"""The files of a run folder: `run.json` replaced atomically, metrics appended line by line, bounded reads.

Why plain files and not a database: a run folder often sits on a network file system (a cluster's shared
home), where SQLite's locking is unreliable and a database can be corrupted by two hosts at once. An
append-only JSON Lines file needs no locking to stay readable: a writer killed mid-line leaves at most one
incomplete last line, which readers skip. `run.json` is replaced by rename, which NFS performs atomically.

This module is torch-free on purpose (`zae runs` must start fast), so it carries its own few-line atomic
write instead of importing `zae_engine.checkpoint.atomic`, whose package imports torch.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from zae_engine.checkpoint.atomic import write_text_atomic

MAX_RECORD_BYTES = 8 * 1024 * 1024  # run.json: specs are small; anything this large is not ours
MAX_LINE_BYTES = 1024 * 1024  # one metrics line
MAX_JSON_DEPTH = 64


class UnreadableFile(Exception):
    """A run file that is missing, a symlink, too large, not UTF-8 or not JSON (the reason is the message)."""


def json_ready(value: Any, depth: int = 0) -> Any:
    """A copy that `json.dumps(allow_nan=False)` accepts: non-finite floats become None, odd objects their str."""
    if depth > MAX_JSON_DEPTH:
        return "..."
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_ready(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_ready(v, depth + 1) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def dumps(value: Any, *, indent: int | None = None) -> str:
    return json.dumps(json_ready(value), allow_nan=False, indent=indent, separators=None if indent else (",", ":"))


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text`: a temp file beside it, fsync, rename. Readers see the old or the new file."""
    write_text_atomic(path, text)


def open_no_follow(path: Path) -> int:
    """A read-only descriptor of a regular file; a symlink is refused, so a record never points elsewhere."""
    try:
        # O_NONBLOCK: a FIFO planted under a run file's name must not hang the reader in open()
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise UnreadableFile("missing") from None
    except OSError as exc:
        if path.is_symlink():
            raise UnreadableFile("is a symlink (not followed)") from None
        raise UnreadableFile(exc.strerror or str(exc)) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnreadableFile("not a regular file")
    return fd


def read_json(path: Path, limit: int = MAX_RECORD_BYTES) -> Any:
    """Parse a small JSON file, bounded in size and depth."""
    fd = open_no_follow(path)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise UnreadableFile(f"larger than {limit // (1024 * 1024)} MiB")
    return _parse(data)


def _parse(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise UnreadableFile("not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise UnreadableFile(f"not JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise UnreadableFile("nested too deeply") from None


class LineAppender:
    """Append one JSON object per line; each line is a single write() so a kill leaves whole lines before it.

    No fsync per line (the OS keeps what was written when the process dies); `sync()` at epoch ends makes
    lines durable and visible to readers on other NFS clients.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def append(self, obj: dict[str, Any]) -> None:
        self.write_line(dumps(obj))

    def write_line(self, text: str) -> None:
        """`text` (one line of JSON, no newline) as a single write."""
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        data = (text + "\n").encode("utf-8")
        written = os.write(self._fd, data)
        while written < len(data):  # short writes are rare (signals, full disks) but possible
            written += os.write(self._fd, data[written:])

    def sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def read_lines(path: Path) -> tuple[list[Any], int]:
    """Every complete JSON line of `path`, and how many lines were skipped (incomplete, damaged, oversized)."""
    try:
        fd = open_no_follow(path)
    except UnreadableFile as exc:
        if str(exc) == "missing":
            return [], 0
        raise
    rows: list[Any] = []
    skipped = 0
    with os.fdopen(fd, "rb") as handle:
        for line, complete in _bounded_lines(handle):
            if not line.strip():
                continue
            try:
                if not complete:
                    raise UnreadableFile("incomplete")
                rows.append(_parse(line))
            except UnreadableFile:
                skipped += 1
    return rows, skipped


def _bounded_lines(handle: Any) -> Iterator[tuple[bytes, bool]]:
    """Lines of at most MAX_LINE_BYTES (longer ones are drained and reported as incomplete)."""
    while True:
        line = handle.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if line.endswith(b"\n"):
            yield line, True
            continue
        if len(line) <= MAX_LINE_BYTES:  # end of file without a newline: the writer stopped mid-line
            yield line, False
            return
        while line and not line.endswith(b"\n"):
            line = handle.readline(MAX_LINE_BYTES)
        yield b"x", False
