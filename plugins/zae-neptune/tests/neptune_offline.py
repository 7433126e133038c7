"""Read neptune 1.x offline runs back, and keep Neptune away from the user's own settings while testing.

neptune 1.x in mode="offline" writes each run to `.neptune/offline/run__<uuid>__<pid>__<random>/` in the
working directory: `metadata.json` (container id, created-at) and `data-<n>.log`, one JSON operation per line
({"obj": {"type": "LogFloats" | "AssignInt" | "UploadFile" | ..., "path": [...], ...}, "version": n}), with
uploaded file copies under `upload_path/`. That is what `neptune sync` replays, and what these tests read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# keep neptune's own background monitoring out of the tests' way; the add-on passes these through unchanged
QUIET = {"capture_hardware_metrics": False, "capture_stdout": False, "capture_stderr": False, "git_ref": False}


@dataclass
class OfflineRun:
    """One offline neptune container, decoded from its operation log."""

    folder: Path
    metadata: dict[str, Any]
    fields: dict[str, Any] = field(default_factory=dict)
    series: dict[str, list[tuple[Any, Any]]] = field(default_factory=dict)
    uploads: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: every Log* operation in order: (field, step, value)
    points: list[tuple[str, Any, Any]] = field(default_factory=list)

    def steps(self, key: str) -> list[Any]:
        return [step for step, _ in self.series.get(key, [])]

    def values(self, key: str) -> list[Any]:
        return [value for _, value in self.series.get(key, [])]


def read_offline_run(folder: Path) -> OfflineRun:
    run = OfflineRun(folder=folder, metadata=json.loads((folder / "metadata.json").read_text()))
    operations = []
    for log in sorted(folder.glob("data-*.log"), key=lambda p: int(p.stem.split("-")[1])):
        operations += [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    for entry in sorted(operations, key=lambda e: e["version"]):
        op = entry["obj"]
        key = "/".join(op["path"])
        if op["type"].startswith("Assign"):
            run.fields[key] = op["value"]
        elif op["type"].startswith("Log"):
            points = [(v["step"], v["value"]) for v in op["values"]]
            run.series.setdefault(key, []).extend(points)
            run.points.extend((key, step, value) for step, value in points)
        elif op["type"] == "UploadFile":
            run.uploads[key] = op
    return run


def read_offline_runs(workdir: Path) -> list[OfflineRun]:
    """Every offline container under `workdir/.neptune`, oldest first."""
    runs = [read_offline_run(p) for p in (workdir / ".neptune" / "offline").glob("run__*")]
    return sorted(runs, key=lambda r: r.metadata["createdAt"])


def isolate_neptune(monkeypatch: Any, workdir: Path) -> None:
    """No token and no project from the environment; offline runs land in `workdir/.neptune`."""
    for var in ("NEPTUNE_API_TOKEN", "NEPTUNE_MODE", "NEPTUNE_PROJECT", "NEPTUNE_CUSTOM_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(workdir)  # neptune 1.x writes under ./.neptune; there is no setting for another folder
