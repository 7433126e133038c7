"""Looking at checkpoints without loading them: what a save_path holds, and whether every file is intact.

Nothing here unpickles or loads a tensor. A checkpoint folder is judged against its `checkpoint.json`: every
file it must hold is a regular file (not a symbolic link) of the recorded size and SHA-256; once the hashes
agree, the structure is checked too: safetensors headers parse and cover their file exactly, `state.json`
is JSON whose tensor references all exist, and a `state.ckpt` is the uncompressed zip torch.save writes,
every member passing its CRC check. Time and memory stay proportional to the files' size.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zae_engine.checkpoint.formats import FILES, META_NAME, read_meta
from zae_engine.checkpoint.integrity import safetensors_keys
from zae_engine.checkpoint.manifest import MANIFEST_NAME, CheckpointEntry, read_manifest
from zae_engine.checkpoint.store import TMP_PREFIX
from zae_engine.checkpoint.tree import join_tensors
from zae_engine.errors import CheckpointError

MAX_META_BYTES = 16 << 20  # a checkpoint.json names a handful of files; one this large was not written by us
NOT_CHECKED = "not checked"


@dataclass
class FolderCheck:
    """The verdict on one checkpoint folder: `problems` is empty when every file is intact."""

    name: str
    folder: Path
    save_format: str | None = None
    problems: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "folder": str(self.folder),
            "format": self.save_format,
            "ok": self.ok,
            "files": self.files,
            "bytes": self.bytes,
            "problems": self.problems,
        }


# ---------------------------------------------------------------------------------------------- one folder
def check_folder(folder: Path, entry: CheckpointEntry | None = None) -> FolderCheck:
    """Verify one checkpoint folder; `entry` (its manifest line) is compared with what the folder says."""
    check = FolderCheck(folder.name, folder)
    problem = check.problems.append
    if folder.is_symlink():
        problem(f"{folder.name} is a symbolic link; a checkpoint folder is a plain folder inside its save_path")
        return check
    if not folder.is_dir():
        problem(f"the folder {folder.name} is missing")
        return check
    check.bytes = folder_size(folder)
    meta_path = folder / META_NAME
    if meta_path.is_symlink() or not meta_path.is_file():
        problem(f"{META_NAME} is missing or not a regular file: the folder is not a complete checkpoint")
        return check
    if meta_path.stat().st_size > MAX_META_BYTES:
        problem(f"{META_NAME} is {meta_path.stat().st_size} bytes, far too large to be a checkpoint's")
        return check
    try:
        meta = read_meta(folder)
    except (CheckpointError, RecursionError) as exc:
        problem(str(exc) if isinstance(exc, CheckpointError) else f"{META_NAME} is nested too deeply to be ours")
        return check
    save_format = meta["save_format"]
    check.save_format = save_format
    listed = meta["files"]
    if save_format == "sharded":  # one file per rank: checkpoint.json names them (zae_engine.checkpoint.sharded)
        from zae_engine.checkpoint.sharded import expected_files, unlisted_files

        try:
            expected = tuple(expected_files(meta, folder))
        except CheckpointError as exc:
            problem(str(exc))
            return check
        check.problems += unlisted_files(folder, meta)
    else:
        expected = FILES[save_format]
    check.files = [META_NAME, *expected]
    strays = sorted(str(name) for name in listed if name not in expected)
    if strays:
        problem(f"{META_NAME} lists files a {save_format} checkpoint never holds: {', '.join(strays)}")
    if entry is not None:
        _compare_with_manifest(entry, meta, problem)
    for name in expected:
        why = file_problem(folder / name, listed.get(name))
        if why:
            problem(f"{name} {why}")
    if check.ok:  # the bytes are the ones that were saved; now make sure they are what a checkpoint holds
        for why in _structure_problems(folder, save_format):
            problem(why)
    return check


def _compare_with_manifest(entry: CheckpointEntry, meta: dict[str, Any], problem: Any) -> None:
    if entry.save_format != meta["save_format"]:
        problem(
            f"{MANIFEST_NAME} says {entry.save_format} but {META_NAME} says {meta['save_format']}: "
            "the folder was replaced after it was listed"
        )
    for key in ("epoch", "step"):
        if isinstance(meta.get(key), int) and meta[key] != getattr(entry, key):
            problem(
                f"{MANIFEST_NAME} records {key} {getattr(entry, key)} but {META_NAME} says {meta[key]}: "
                "the folder was replaced after it was listed"
            )


def file_problem(path: Path, record: Any) -> str | None:
    """Why `path` is not the file `record` ({"bytes", "sha256"}) describes ("is missing", ...), or None."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return "is missing: the checkpoint is incomplete"
    if stat.S_ISLNK(info.st_mode):
        return "is a symbolic link; checkpoint files are regular files inside their folder"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        return f"has no size and SHA-256 recorded in {META_NAME}"
    if info.st_size != record.get("bytes"):
        return f"has {info.st_size} bytes but {record.get('bytes')} were saved: it is truncated or was replaced"
    if sha256_of(path) != record["sha256"]:
        return "does not match the SHA-256 recorded when it was saved: it was changed or corrupted"
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _structure_problems(folder: Path, save_format: str) -> list[str]:
    if save_format == "sharded":
        from zae_engine.checkpoint.sharded import structure_problems

        return structure_problems(folder, read_meta(folder))
    if save_format == "ckpt":
        why = _torch_zip_problem(folder / "state.ckpt")
        return [f"state.ckpt {why}"] if why else []
    problems = []
    for name in ("model.safetensors", "state.safetensors"):
        keys = safetensors_keys(folder / name)
        if isinstance(keys, str):
            problems.append(f"{name} {keys}")
        elif name == "state.safetensors":
            why = _state_json_problem(folder / "state.json", keys)
            if why:
                problems.append(f"state.json {why}")
    return problems


def _state_json_problem(path: Path, tensor_keys: set[str]) -> str | None:
    try:
        skeleton = json.loads(path.read_bytes().decode("utf-8"))
        state = join_tensors(skeleton, dict.fromkeys(tensor_keys), repr(str(path)))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"is not valid JSON ({exc})"
    except RecursionError:
        return "is nested too deeply to be a checkpoint state"
    except CheckpointError as exc:
        return f"does not fit state.safetensors ({exc})"
    progress = state.get("progress") if isinstance(state, dict) else None
    if not isinstance(progress, dict) or not all(isinstance(progress.get(k), int) for k in ("epoch", "step")):
        return "holds no training progress (whole numbers 'epoch' and 'step'): it is not a checkpoint state"
    return None


def _torch_zip_problem(path: Path) -> str | None:
    """A torch.save file is an uncompressed zip with one `<name>/data.pkl`; check that, and every CRC."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if any(m.compress_type != zipfile.ZIP_STORED for m in members):
                return "holds compressed members, which torch.save never writes: it is not a torch checkpoint"
            if sum(m.filename.endswith("/data.pkl") for m in members) != 1:
                return "has no single data.pkl: it is not a torch.save file"
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        return f"is not a readable torch.save archive ({exc})"
    return f"has a member, {bad}, that fails its CRC check: the file is corrupted" if bad else None


def folder_size(folder: Path) -> int:
    """Bytes of the regular files directly in `folder` (symbolic links are not followed)."""
    total = 0
    with os.scandir(folder) as entries:
        for item in entries:
            if item.is_file(follow_symlinks=False):
                total += item.stat(follow_symlinks=False).st_size
    return total


# ---------------------------------------------------------------------------------------------- a save_path
@dataclass
class Listed:
    """One checkpoint of a save_path, as `zae checkpoint ls` shows it."""

    entry: CheckpointEntry
    best: bool
    latest: bool
    bytes: int | None  # None: the folder is missing
    status: str  # "not checked", "ok", "missing" or "damaged"
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        entry = self.entry
        return {
            "name": entry.name,
            "kind": entry.kind,
            "epoch": entry.epoch,
            "step": entry.step,
            "monitor": entry.monitor,
            "mode": entry.mode,
            "value": entry.value,
            "best": self.best,
            "latest": self.latest,
            "bytes": self.bytes,
            "format": entry.save_format,
            "created": entry.created,
            "verified": None if self.status == NOT_CHECKED else self.status == "ok",
            "status": self.status,
            "problems": self.problems,
        }


@dataclass
class Unlisted:
    """A complete checkpoint folder the manifest does not name (left alone: zae never deletes it)."""

    name: str
    bytes: int
    meta: dict[str, Any] | None  # None: its checkpoint.json cannot be read
    problem: str | None = None

    def as_json(self) -> dict[str, Any]:
        meta = self.meta or {}
        return {
            "name": self.name,
            "kind": meta.get("kind"),
            "epoch": meta.get("epoch"),
            "step": meta.get("step"),
            "format": meta.get("save_format"),
            "bytes": self.bytes,
            "problem": self.problem,
        }


@dataclass
class SaveListing:
    root: Path
    has_manifest: bool
    checkpoints: list[Listed]
    unlisted: list[Unlisted]
    temporary: list[str]
    best: str | None
    latest: str | None

    @property
    def damaged(self) -> list[Listed]:
        return [row for row in self.checkpoints if row.status in ("missing", "damaged")]

    def as_json(self) -> dict[str, Any]:
        return {
            "save_path": str(self.root),
            "manifest": self.has_manifest,
            "latest": self.latest,
            "best": self.best,
            "checkpoints": [row.as_json() for row in self.checkpoints],
            "unlisted": [row.as_json() for row in self.unlisted],
            "temporary": self.temporary,
        }


def open_save_path(path: str | os.PathLike) -> Path:
    """`path` as a save_path, or a CheckpointError saying what it is instead."""
    root = Path(path)
    if not root.exists():
        raise CheckpointError(f"no save_path at {str(root)!r}: the path does not exist")
    if not root.is_dir():
        raise CheckpointError(f"{str(root)!r} is a file, not a save_path (the folder that holds manifest.json)")
    if (root / META_NAME).is_file():
        raise CheckpointError(
            f"{str(root)!r} is one checkpoint folder, not a save_path; `zae checkpoint verify {root}` checks it, "
            f"and `zae checkpoint ls {root.parent}` lists its neighbours"
        )
    return root


def list_save_path(path: str | os.PathLike, verify: bool = False) -> SaveListing:
    """Every checkpoint the manifest of `path` lists (hashed when `verify`), and the folders it does not list."""
    root = open_save_path(path)
    has_manifest = (root / MANIFEST_NAME).is_file()
    manifest = read_manifest(root)
    latest = manifest.latest or (manifest.checkpoints[-1].name if manifest.checkpoints else None)
    rows = []
    for entry in manifest.checkpoints:
        folder = root / entry.name
        present = folder.is_dir() and not folder.is_symlink()
        if verify or not present:
            check = check_folder(folder, entry)
            status = "ok" if check.ok else ("missing" if not os.path.lexists(folder) else "damaged")
            problems = check.problems
        else:
            status, problems = NOT_CHECKED, []
        size = folder_size(folder) if present else None
        rows.append(Listed(entry, entry.name == manifest.best, entry.name == latest, size, status, problems))
    unlisted, temporary = _unlisted(root, manifest.names())
    if not has_manifest and not unlisted:
        raise CheckpointError(
            f"{str(root)!r} is not a save_path: it holds no {MANIFEST_NAME} and no checkpoint folder; "
            "pass the save_path given to StateManagerAddon"
        )
    return SaveListing(root, has_manifest, rows, unlisted, temporary, manifest.best, latest)


def _unlisted(root: Path, listed: set[str]) -> tuple[list[Unlisted], list[str]]:
    unlisted, temporary = [], []
    for child in sorted(root.iterdir(), key=lambda p: p.name):
        if child.is_symlink() or not child.is_dir() or child.name in listed:
            continue
        if child.name.startswith(TMP_PREFIX):
            temporary.append(child.name)
            continue
        if not (child / META_NAME).is_file():
            continue
        try:
            meta, problem = read_meta(child), None
        except CheckpointError as exc:
            meta, problem = None, str(exc)
        unlisted.append(Unlisted(child.name, folder_size(child), meta, problem))
    return unlisted, temporary


def verify_path(path: str | os.PathLike) -> tuple[Path, list[FolderCheck]]:
    """Verify a checkpoint folder, or every checkpoint a save_path's manifest lists."""
    target = Path(path)
    if not target.exists():
        raise CheckpointError(f"nothing to verify at {str(target)!r}: the path does not exist")
    if target.is_symlink():
        target = target.resolve()  # the path the user named; links *inside* a checkpoint are refused
    if target.is_file():
        if (target.parent / META_NAME).is_file():
            target = target.parent  # a file of a checkpoint: verify the whole folder it belongs to
        else:
            raise CheckpointError(
                f"{str(target)!r} is a file, not a checkpoint folder or a save_path; for a bare weights file "
                "there is nothing recorded to verify against"
            )
    if (target / META_NAME).is_file():
        return target, [check_folder(target)]
    if not (target / MANIFEST_NAME).is_file():
        raise CheckpointError(
            f"{str(target)!r} is neither a checkpoint folder (no {META_NAME}) nor a save_path (no {MANIFEST_NAME})"
        )
    manifest = read_manifest(target)
    if not manifest.checkpoints:
        raise CheckpointError(f"{str(target / MANIFEST_NAME)!r} lists no checkpoint yet: nothing to verify")
    return target, [check_folder(target / entry.name, entry) for entry in manifest.checkpoints]
