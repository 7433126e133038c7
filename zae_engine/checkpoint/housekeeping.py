"""What killed writers leave in a save_path, cleaned up by the next writer once it holds the lock.

A writer killed mid-save leaves a temporary folder (`.tmp-<pid>-<hex>-<name>`) or a temporary manifest
(`.manifest.json.<random>.tmp`). Holding the save_path's lock proves no other writer is using them, so they
are removed then — whatever pid their name carries (pids repeat across containers and hosts). Only those
names, only directly in the save_path, and never through a link.

A writer killed between renaming a finished folder into place and listing it leaves a complete checkpoint
that no manifest lists. That may be the only copy of some work: it is reported, never deleted.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

from zae_engine.checkpoint.formats import META_NAME

TMP_PREFIX = ".tmp-"
_TEMP_FOLDER = re.compile(r"\.tmp-\d+-[0-9a-f]{8}-.+")
_TEMP_MANIFEST = re.compile(r"\.manifest\.json\.[A-Za-z0-9_]+\.tmp")


def sweep_temps(root: Path) -> list[str]:
    """Remove the temporary folders and manifests of dead writers from `root`; returns their names."""
    swept = []
    for entry in _entries(root):
        try:
            if _TEMP_FOLDER.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            elif _TEMP_MANIFEST.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
            else:
                continue
        except OSError:
            continue  # left for the next writer; never a reason to stop this one
        swept.append(entry.name)
    return swept


def unlisted_checkpoints(root: Path, listed: set[str]) -> list[str]:
    """Complete checkpoint folders in `root` (real folders holding checkpoint.json) that the manifest omits."""
    found = []
    for entry in _entries(root):
        if entry.name.startswith(".") or entry.name in listed or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            if stat.S_ISREG(os.lstat(os.path.join(entry.path, META_NAME)).st_mode):
                found.append(entry.name)
        except OSError:
            continue
    return sorted(found)


def _entries(root: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(root) as listing:
            return list(listing)
    except OSError:
        return []
