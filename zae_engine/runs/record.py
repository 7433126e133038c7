"""`run.json`: what one run was (identity, setup, versions) and how it ended.

The writer rewrites it at start, after every epoch and at the end; readers only ever parse it. The model is
tolerant in what it reads (unknown keys from a newer writer are ignored, missing optional keys default) and
strict in types, so a damaged or foreign file is reported, never trusted.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

RECORD_NAME = "run.json"
METRICS_NAME = "metrics.jsonl"
LOCK_NAME = "writer.lock"
RECORD_FORMAT = "zae-engine run record"

Status = Literal["running", "done", "failed", "interrupted", "stopped_early"]
FINAL_STATUSES: tuple[str, ...] = ("done", "failed", "interrupted", "stopped_early")
CRASHED = "crashed"  # never written: a reader's verdict on a `running` record whose writer is gone
SHOWN_STATUSES: tuple[str, ...] = ("running", *FINAL_STATUSES, CRASHED)


class Best(BaseModel):
    """The best value of the monitored metric, and the epoch it was reached."""

    model_config = ConfigDict(extra="ignore")

    metric: str
    value: float | None = None
    epoch: int | None = None
    mode: Literal["min", "max"] = "min"

    def better(self, value: float) -> bool:
        if self.value is None:
            return True
        return value < self.value if self.mode == "min" else value > self.value


class GitState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    commit: str
    dirty: bool


class RunRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    format: Literal["zae-engine run record"] = RECORD_FORMAT
    version: int = 1
    id: str
    name: str
    status: Status = "running"
    error: str | None = Field(None, description="one-line summary of the error of a failed run")
    started: datetime
    updated: datetime | None = Field(None, description="last time the writer rewrote this file")
    ended: datetime | None = None
    epochs: int = Field(0, description="number of the last epoch recorded (0: none yet)")
    step: int | None = Field(None, description="optimizer steps done at the last record")
    best: Best | None = None
    final: dict[str, float | None] = Field(default_factory=dict, description="the last epoch's metrics")
    host: str = ""
    pid: int | None = None
    cwd: str = ""
    argv: list[str] = Field(default_factory=list)
    world_size: int = 1
    devices: list[str] = Field(default_factory=list)
    versions: dict[str, Any] = Field(default_factory=dict)
    git: GitState | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    spec: dict[str, Any] | None = Field(None, description="the resolved run spec, for runs made by `zae run`")
    options: dict[str, Any] = Field(default_factory=dict, description="trainer and add-on options")

    @field_validator("started", "updated", "ended")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value

    @field_serializer("started", "updated", "ended")
    def _iso(self, value: datetime | None) -> str | None:
        """`2026-12-01T10:15:30.123456+00:00`: what `datetime.fromisoformat` reads on every Python we support."""
        return None if value is None else value.isoformat()

    def config(self) -> dict[str, Any]:
        """What set this run up: the spec when there is one (its keys match `--set`), else the options."""
        return self.spec if self.spec else self.options

    def duration_s(self, status: str, now: datetime | None = None) -> float:
        """Seconds from start to end; a live run counts to now, a crashed one to the writer's last update."""
        if self.ended is not None:
            end = self.ended
        elif status == CRASHED:
            end = self.updated or self.started
        else:
            end = now or datetime.now(timezone.utc)
        return max(0.0, (end - self.started).total_seconds())
