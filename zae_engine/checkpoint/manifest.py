"""`manifest.json`: the list of complete checkpoints in a save_path, oldest first.

A checkpoint is added only after its folder is whole and renamed into place, and the manifest itself is
replaced atomically, so whoever reads it only ever sees complete checkpoints. It is plain JSON, read with
pydantic: a damaged or foreign file is a clear error, never code. It is written as strict JSON; a value that
is not a finite number (a `NaN` some other writer left) reads as "not scored", so it can be written again.
"""

from __future__ import annotations

import math
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from zae_engine.checkpoint.atomic import atomic_path
from zae_engine.checkpoint.untrusted import dump_json, read_json
from zae_engine.errors import CheckpointError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "zae-engine checkpoint manifest"

Kind = Literal["epoch", "step", "interrupted", "manual"]


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+=-]*(\.[A-Za-z0-9_+=-]+)*")


def check_folder_name(name: str) -> str:
    """A checkpoint name is one plain folder name: a manifest can never point (or prune) outside its save_path."""
    if not _SAFE_NAME.fullmatch(name) or name.startswith(".tmp-"):
        raise ValueError(f"{name!r} is not a plain checkpoint folder name")
    return name


class CheckpointEntry(BaseModel):
    """One complete checkpoint folder in the save_path."""

    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    name: str = Field(description="folder name inside the save_path")
    kind: Kind = Field(
        description="'epoch' (end of an epoch), 'step' (inside an epoch: every_n_steps/every_n_minutes), "
        "'interrupted' (SIGINT/SIGTERM) or 'manual' (save_state)"
    )
    epoch: int = Field(description="epochs completed when it was saved")
    step: int = Field(description="optimizer steps completed when it was saved")
    save_format: Literal["ckpt", "safetensors", "sharded"]
    monitor: str | None = None
    mode: Literal["min", "max"] = "min"
    value: float | None = Field(None, description="the monitored metric at save time (None: not scored)")
    created: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return check_folder_name(value)

    @field_validator("value")
    @classmethod
    def _finite_or_unscored(cls, value: float | None) -> float | None:
        return value if value is None or math.isfinite(value) else None


class Manifest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    format: Literal["zae-engine checkpoint manifest"] = MANIFEST_FORMAT
    version: int = 1
    checkpoints: list[CheckpointEntry] = []
    latest: str | None = None
    best: str | None = None

    @field_validator("latest", "best")
    @classmethod
    def _check_names(cls, value: str | None) -> str | None:
        return None if value is None else check_folder_name(value)

    def names(self) -> set[str]:
        return {entry.name for entry in self.checkpoints}


def read_manifest(root: str | os.PathLike) -> Manifest:
    """The manifest in `root`, or an empty one when there is none yet."""
    path = Path(root) / MANIFEST_NAME
    if not os.path.lexists(path):
        return Manifest()
    raw = read_json(path, "checkpoint manifest")
    if not isinstance(raw, dict) or raw.get("format") != MANIFEST_FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is not a zae-engine checkpoint manifest; delete it, or load a checkpoint folder by its path"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise CheckpointError(f"{str(path)!r} is a damaged checkpoint manifest: {exc.errors()[0]['msg']}") from None


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Replace the manifest atomically (temp file, fsync, rename); strict JSON, so any reader accepts it."""
    manifest.latest = manifest.checkpoints[-1].name if manifest.checkpoints else None
    text = dump_json(manifest.model_dump(mode="json"), str(root / MANIFEST_NAME), indent=2)
    with atomic_path(root / MANIFEST_NAME) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
            handle.flush()
            os.fsync(handle.fileno())
