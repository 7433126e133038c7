"""A save_path full of checkpoint folders: one writer, atomic saves, the manifest, pruning, finding what to load.

Saving: the writer holds the save_path's lock (`zae_engine.checkpoint.lock`) for as long as it writes there.
A folder is written under a temporary name in the save_path (every file fsynced), renamed into place, then
the manifest is replaced atomically to list it, and only then are pruned folders deleted. A process killed
at any instant therefore leaves the manifest naming only whole checkpoints; at worst an unlisted folder
(reported by the next writer) or a temporary one (removed by the next writer) remains.

While it holds the lock, the writer owns the manifest: it reads it once when it takes the lock and keeps it
in memory, so a save parses no JSON. Readers parse it once per operation.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from zae_engine.checkpoint.atomic import fsync_dir
from zae_engine.checkpoint.failures import read_failure, shown, write_failure
from zae_engine.checkpoint.formats import (
    FILES,
    is_checkpoint_folder,
    read_checkpoint,
    read_torch_file,
    write_checkpoint,
)
from zae_engine.checkpoint.housekeeping import TMP_PREFIX, sweep_temps, unlisted_checkpoints
from zae_engine.checkpoint.lock import WriterLock
from zae_engine.checkpoint.manifest import MANIFEST_NAME, CheckpointEntry, Manifest, read_manifest, write_manifest
from zae_engine.checkpoint.untrusted import is_link, refuse_link
from zae_engine.errors import CheckpointError

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
        if os.path.lexists(target):
            if not is_checkpoint_folder(target) or stat.S_ISLNK(os.lstat(target).st_mode):
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
    except CheckpointError:
        raise
    except Exception as exc:  # a full disk, a read-only file system, torch's zip RuntimeError, SafetensorError, ...
        raise write_failure(target, exc) from exc
    finally:
        if os.path.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return target


class CheckpointStore:
    """The checkpoints of one save_path, as listed by its manifest."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._lock = WriterLock(self.root)
        self._writing = False  # between acquire() and release()
        self._owned: Manifest | None = None  # the manifest, kept in memory while writing
        self._reported_unlisted = False

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    # ------------------------------------------------------------------ the writer's lock
    @property
    def writing(self) -> bool:
        """True between acquire() and release(): this store is the save_path's writer."""
        return self._writing

    def acquire(self) -> None:
        """Become the save_path's only writer: take the lock, sweep what dead writers left, read the manifest."""
        if self._writing:
            return
        self._lock.acquire()
        try:
            manifest = read_manifest(self.root)
            sweep_temps(self.root)
            self._report_unlisted(manifest)
        except BaseException:
            self._lock.release()
            raise
        self._owned, self._writing = manifest, True

    def release(self) -> None:
        self._owned, self._writing = None, False
        self._lock.release()

    @contextmanager
    def writer(self) -> Iterator[None]:
        """Hold the lock for the block, unless this store holds it already (then leave it held)."""
        if self._writing:
            yield
            return
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__, _owned=None, _writing=False)  # a copy in another process is not the writer

    # ------------------------------------------------------------------ reading
    def manifest(self) -> Manifest:
        """The manifest: the writer's own copy while writing, else parsed from disk (once per call)."""
        return self._owned if self._writing and self._owned is not None else read_manifest(self.root)

    def entries(self, manifest: Manifest | None = None) -> list[CheckpointEntry]:
        return (manifest or self.manifest()).checkpoints

    def folder(self, name: str) -> Path:
        """A listed checkpoint folder; a symbolic link there is refused (it could point anywhere)."""
        path = self.root / name
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                raise refuse_link(path, "listed checkpoint folder")
        except FileNotFoundError:
            pass
        return path

    def latest(self, manifest: Manifest | None = None) -> Path | None:
        entries = self.entries(manifest)
        return self.folder(entries[-1].name) if entries else None

    def best(self, manifest: Manifest | None = None) -> Path | None:
        name = (manifest or self.manifest()).best
        return self.folder(name) if name else None

    # ------------------------------------------------------------------ writing
    def save(
        self,
        state: dict[str, Any],
        entry: CheckpointEntry,
        meta: dict[str, Any],
        select: Selector | None = None,
        monitor: str | None = None,
        mode: str = "min",
    ) -> Path:
        """Write a new checkpoint, list it in the manifest, then delete what `select` no longer keeps.

        `monitor`/`mode` rank the checkpoints for the manifest's `best`: the writer's own ranking, so an unscored
        save (manual, interrupted) keeps the best it had instead of clearing it.
        """
        with self.writer():
            manifest = self.manifest()
            entry.name = self._free_name(entry.name, manifest.names())
            folder = write_folder(self.root / entry.name, state, dict(meta, name=entry.name), entry.save_format)
            entries = [*manifest.checkpoints, entry]
            kept = select(entries) if select is not None else entries
            if entry not in kept:
                kept.append(entry)  # the checkpoint just written is always kept: it is the latest
            kept = [e for e in entries if e in kept]  # manifest order: oldest first
            updated = Manifest(checkpoints=kept, best=_best_name(kept, manifest.best, monitor, mode))
            try:
                write_manifest(self.root, updated)
            except Exception as exc:
                raise CheckpointError(
                    f"checkpoint {str(folder)!r} was written but not listed in the manifest: "
                    f"{write_failure(self.manifest_path, exc, 'checkpoint manifest')}. Load it by its path"
                ) from exc
            self._owned = updated
            for dropped in entries:
                path = self.root / dropped.name
                if dropped not in kept and not is_link(path) and is_checkpoint_folder(path):
                    shutil.rmtree(path, ignore_errors=True)
        return folder

    def _free_name(self, name: str, taken: set[str]) -> str:
        candidate, n = name, 1
        while candidate in taken or os.path.lexists(self.root / candidate):
            n += 1
            candidate = f"{name}-{n}"
        return candidate

    def _report_unlisted(self, manifest: Manifest) -> None:
        """Warn once per store about complete folders no manifest lists (killed between rename and listing)."""
        if self._reported_unlisted:
            return
        unlisted = unlisted_checkpoints(self.root, manifest.names())
        if unlisted:
            self._reported_unlisted = True
            shown = ", ".join(unlisted[:5]) + (f" and {len(unlisted) - 5} more" if len(unlisted) > 5 else "")
            warnings.warn(
                f"save_path {str(self.root)!r} holds {len(unlisted)} complete checkpoint folder(s) that its manifest "
                f"does not list ({shown}), probably left by a run that was killed while saving. They are left as "
                "they are: load one by its path, or delete them when you no longer need them",
                stacklevel=3,
            )


def _best_name(entries: list[CheckpointEntry], previous: str | None, monitor: str | None, mode: str) -> str | None:
    """The best of `entries` by (`monitor`, `mode`); without a monitor, by the ranking of the previous best.

    Nothing scored that way: the previous best, if it is still kept.
    """
    names = {e.name for e in entries}
    if monitor is None:
        before = next((e for e in entries if e.name == previous), None)
        if before is not None:
            monitor, mode = before.monitor, before.mode
    scored = [e for e in entries if e.value is not None and e.monitor == monitor and e.mode == mode]
    if not scored or monitor is None:
        return previous if previous in names else None
    sign = 1.0 if mode == "min" else -1.0
    return min(enumerate(scored), key=lambda pair: (sign * pair[1].value, pair[0]))[1].name


def locate(path: str | os.PathLike) -> Path:
    """What `path` names: a save_path (its latest checkpoint), a checkpoint folder, or a bare `.ckpt` file."""
    return find_checkpoint(path)[0]


def find_checkpoint(path: str | os.PathLike, manifest: Manifest | None = None) -> tuple[Path, Manifest | None]:
    """`locate`, plus the manifest it used when `path` is a save_path (so a caller need not parse it again).

    `manifest`: that save_path's manifest if the caller has it already.
    """
    target = Path(path)
    try:
        is_dir = stat.S_ISDIR(os.stat(target).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        raise CheckpointError(f"no checkpoint at {shown(target)}: the path does not exist") from None
    except OSError as exc:  # a name too long, a permission denied on the way
        raise read_failure(target, exc, "checkpoint path") from exc
    if is_dir:
        if is_checkpoint_folder(target):
            return target, None
        if os.path.lexists(target / MANIFEST_NAME):
            store = CheckpointStore(target)
            manifest = manifest or store.manifest()
            latest = store.latest(manifest)
            if latest is None:
                raise CheckpointError(f"{str(target)!r} has a manifest but no complete checkpoint yet")
            if not is_checkpoint_folder(latest):
                raise CheckpointError(
                    f"the latest checkpoint listed in {str(target / MANIFEST_NAME)!r}, {latest.name!r}, is missing; "
                    "pass the path of another checkpoint folder"
                )
            return latest, manifest
        raise CheckpointError(
            f"{str(target)!r} is neither a checkpoint folder (no checkpoint.json) nor a save_path (no {MANIFEST_NAME})"
        )
    if is_checkpoint_folder(target.parent) and target.name in {n for names in FILES.values() for n in names}:
        return target.parent, None
    return target, None


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
