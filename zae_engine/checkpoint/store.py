"""A save_path full of checkpoint folders: atomic saves, the manifest, pruning, and finding what to load.

Saving: the folder is written under a temporary name in the save_path (every file fsynced), renamed into
place, then the manifest is replaced atomically to list it, and only then are pruned folders deleted.
A process killed at any instant therefore leaves the manifest naming only whole checkpoints; at worst an
unlisted folder or a `.tmp-*` folder remains (the latter is removed on the next save once its writer is dead).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zae_engine.checkpoint.atomic import fsync_dir
from zae_engine.checkpoint.formats import (
    FILES,
    is_checkpoint_folder,
    read_checkpoint,
    read_torch_file,
    write_checkpoint,
)
from zae_engine.checkpoint.manifest import MANIFEST_NAME, CheckpointEntry, read_manifest, write_manifest
from zae_engine.errors import CheckpointError

TMP_PREFIX = ".tmp-"

Selector = Callable[[list[CheckpointEntry]], list[CheckpointEntry]]


def write_folder(target: Path, state: dict[str, Any], meta: dict[str, Any], save_format: str) -> Path:
    """Write a checkpoint folder at `target` atomically: a temp folder beside it, fsync, rename."""
    parent = target.parent
    tmp = parent / f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{target.name}"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        write_checkpoint(tmp, state, meta, save_format)
        fsync_dir(tmp)
        old = None
        if target.exists():
            if not is_checkpoint_folder(target):
                raise CheckpointError(
                    f"{str(target)!r} exists and is not a checkpoint folder; choose another path (nothing was replaced)"
                )
            old = parent / f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-old-{target.name}"
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except OSError:
            if old is not None:
                os.replace(old, target)  # put the previous checkpoint back
            raise
        fsync_dir(parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:  # disk full, permissions, ...: the checkpoints already there are untouched
        raise CheckpointError(
            f"could not write checkpoint {str(target)!r} ({type(exc).__name__}: {exc}); "
            "earlier checkpoints are untouched. Free space or choose another save_path"
        ) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


class CheckpointStore:
    """The checkpoints of one save_path, as listed by its manifest."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._swept = False

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    def entries(self) -> list[CheckpointEntry]:
        return read_manifest(self.root).checkpoints

    def save(
        self, state: dict[str, Any], entry: CheckpointEntry, meta: dict[str, Any], select: Selector | None = None
    ) -> Path:
        """Write a new checkpoint, list it in the manifest, then delete what `select` no longer keeps."""
        if not self._swept and self.root.is_dir():
            self._sweep_stale_temps()
            self._swept = True
        manifest = read_manifest(self.root)
        entry.name = self._free_name(entry.name, manifest.names())
        folder = write_folder(self.root / entry.name, state, dict(meta, name=entry.name), entry.save_format)
        entries = [*manifest.checkpoints, entry]
        kept = select(entries) if select is not None else entries
        if entry not in kept:
            kept.append(entry)  # the checkpoint just written is always kept: it is the latest
        kept = [e for e in entries if e in kept]  # manifest order: oldest first
        manifest.checkpoints = kept
        manifest.best = _best_name(kept, entry)
        try:
            write_manifest(self.root, manifest)
        except OSError as exc:
            raise CheckpointError(
                f"checkpoint {str(folder)!r} was written but {str(self.manifest_path)!r} could not be updated "
                f"({type(exc).__name__}: {exc}); load it by its path, or free space and save again"
            ) from None
        for dropped in entries:
            if dropped not in kept and is_checkpoint_folder(self.root / dropped.name):
                shutil.rmtree(self.root / dropped.name, ignore_errors=True)
        return folder

    def latest(self) -> Path | None:
        entries = self.entries()
        return self.root / entries[-1].name if entries else None

    def best(self) -> Path | None:
        name = read_manifest(self.root).best
        return self.root / name if name else None

    def _free_name(self, name: str, taken: set[str]) -> str:
        candidate, n = name, 1
        while candidate in taken or (self.root / candidate).exists():
            n += 1
            candidate = f"{name}-{n}"
        return candidate

    def _sweep_stale_temps(self) -> None:
        """Remove temp folders left by writers that were killed (their pid is gone)."""
        for path in self.root.glob(f"{TMP_PREFIX}*"):
            pid = _writer_pid(path.name)
            if pid is not None and pid != os.getpid() and not _alive(pid) and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)


def _best_name(entries: list[CheckpointEntry], newest: CheckpointEntry) -> str | None:
    scored = [e for e in entries if e.value is not None and e.monitor == newest.monitor and e.mode == newest.mode]
    if not scored:
        return None
    sign = 1.0 if newest.mode == "min" else -1.0
    return min(enumerate(scored), key=lambda pair: (sign * pair[1].value, pair[0]))[1].name


def _writer_pid(name: str) -> int | None:
    """Temp folders are named '.tmp-<pid>-<random>-<name>'."""
    part = name[len(TMP_PREFIX) :].split("-", 1)[0]
    return int(part) if part.isdigit() else None


def _alive(pid: int) -> bool:
    if os.name == "nt":
        return True  # os.kill(pid, 0) would terminate the process on Windows: never sweep there
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def locate(path: str | os.PathLike) -> Path:
    """What `path` names: a save_path (its latest checkpoint), a checkpoint folder, or a bare `.ckpt` file."""
    target = Path(path)
    if not target.exists():
        raise CheckpointError(f"no checkpoint at {str(target)!r}: the path does not exist")
    if target.is_dir():
        if is_checkpoint_folder(target):
            return target
        if (target / MANIFEST_NAME).is_file():
            latest = CheckpointStore(target).latest()
            if latest is None:
                raise CheckpointError(f"{str(target)!r} has a manifest but no complete checkpoint yet")
            if not is_checkpoint_folder(latest):
                raise CheckpointError(
                    f"the latest checkpoint listed in {str(target / MANIFEST_NAME)!r}, {latest.name!r}, is missing; "
                    "pass the path of another checkpoint folder"
                )
            return latest
        raise CheckpointError(
            f"{str(target)!r} is neither a checkpoint folder (no checkpoint.json) nor a save_path (no {MANIFEST_NAME})"
        )
    if is_checkpoint_folder(target.parent) and target.name in {n for names in FILES.values() for n in names}:
        return target.parent
    return target


def read_any(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, meta) from what `locate` returned."""
    if path.is_dir():
        return read_checkpoint(path)
    if path.suffix == ".safetensors":
        raise CheckpointError(
            f"{str(path)!r} holds bare weights, not a training state; use trainer.apply_weights(path) for weights, "
            "or load_state() on its checkpoint folder"
        )
    return read_torch_file(path), {}
