"""Whether a folder can hold checkpoints, found out before the first epoch rather than after it."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


def writable_folder_problem(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be a folder we write into (a file, not creatable, read-only), or None.

    Creates what is missing to find out, then removes what it created: nothing outlives the check.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        return f"{str(target)!r} is a file, not a folder; choose a folder for the checkpoints"
    created: list[Path] = []
    missing = [p for p in [target, *target.parents] if not p.exists()]
    try:
        for folder in reversed(missing):
            folder.mkdir()
            created.append(folder)
        with tempfile.NamedTemporaryFile(dir=target, prefix=".zae-write-check-"):
            pass
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"{str(target)!r} is on a full disk; free space or choose another save_path"
        where = "cannot be created" if created != missing else "is not writable"
        return f"{str(target)!r} {where} ({exc.strerror or exc}); choose a folder you can write to"
    finally:
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:
                pass
    return None
