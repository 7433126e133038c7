"""The checkpoints a run saved, read from the `manifest.json` of each `save_path` its options name.

The manifest is read as plain JSON (not through `zae_engine.checkpoint`, which imports torch), bounded in
size; nothing in it is executed and no checkpoint file is opened.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from zae_engine.runs.compare import flatten
from zae_engine.runs.files import UnreadableFile, read_json
from zae_engine.runs.store import Run

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "zae-engine checkpoint manifest"


@dataclass
class SavedCheckpoint:
    save_path: str
    name: str
    kind: str
    epoch: int | None
    step: int | None
    monitor: str | None
    value: float | None
    marks: list[str]  # "best", "latest"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def save_paths(run: Run) -> list[Path]:
    """Every `save_path` in the run's spec or options, relative paths taken from the run's working folder."""
    found: list[Path] = []
    for source in (run.record.spec or {}, run.record.options):
        for key, value in flatten(source).items():
            if key.rsplit(".", 1)[-1] == "save_path" and isinstance(value, str) and value:
                path = Path(value)
                path = path if path.is_absolute() or not run.record.cwd else Path(run.record.cwd) / path
                if path not in found:
                    found.append(path)
    return found


def saved_checkpoints(run: Run) -> tuple[list[SavedCheckpoint], list[str]]:
    """The checkpoints listed by each save_path's manifest, and notes on save_paths that could not be read."""
    checkpoints: list[SavedCheckpoint] = []
    notes: list[str] = []
    for root in save_paths(run):
        try:
            manifest = read_json(root / MANIFEST_NAME)
        except UnreadableFile as exc:
            notes.append(f"{root}: no checkpoints listed ({MANIFEST_NAME} {exc})")
            continue
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            notes.append(f"{root / MANIFEST_NAME}: not a zae-engine checkpoint manifest")
            continue
        entries = manifest.get("checkpoints")
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                continue
            name = entry["name"]
            marks = [mark for mark in ("best", "latest") if manifest.get(mark) == name]
            checkpoints.append(
                SavedCheckpoint(
                    save_path=str(root),
                    name=name,
                    kind=str(entry.get("kind", "")),
                    epoch=_int(entry.get("epoch")),
                    step=_int(entry.get("step")),
                    monitor=entry.get("monitor") if isinstance(entry.get("monitor"), str) else None,
                    value=_float(entry.get("value")),
                    marks=marks,
                )
            )
    return checkpoints, notes


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
