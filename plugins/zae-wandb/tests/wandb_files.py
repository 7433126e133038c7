"""Read W&B's offline `.wandb` run files back, and keep W&B away from the user's own settings while testing.

wandb ships no Python reader for its run files, so `read_wandb_run` decodes them: LevelDB-log framing (32 KiB
blocks; each chunk has a 7-byte header: crc32c u32, length u16, type u8 with FULL=1 FIRST=2 MIDDLE=3 LAST=4)
after a 7-byte file header (b":W&B", magic 0xBEE1, version 0), every record a
`wandb.proto.wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_BLOCK = 32 * 1024
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


@dataclass
class WandbRunFile:
    """What one `.wandb` file holds, decoded."""

    path: Path
    run_id: str = ""
    project: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    artifacts: list[Any] = field(default_factory=list)

    def rows_with(self, key: str) -> list[dict[str, Any]]:
        return [row for row in self.history if key in row]


def _chunks(data: bytes):
    """Yield whole records from LevelDB-log framed bytes (the file header counts toward the first block)."""
    assert data[:4] == b":W&B", f"not a .wandb file: starts with {data[:7]!r}"
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # a block's tail too small for a header is zero padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        pos += _HEADER
        chunk = data[pos : pos + length]
        pos += length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""
        elif kind == 0 and length == 0:  # zero padding at a block's end
            pos += _BLOCK - pos % _BLOCK if pos % _BLOCK else 0


def _item_key(item: Any) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def read_wandb_run(path: Path) -> WandbRunFile:
    from wandb.proto import wandb_internal_pb2 as pb

    run = WandbRunFile(path=path)
    for raw in _chunks(path.read_bytes()):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id, run.project = record.run.run_id, record.run.project
            run.config.update({_item_key(i): json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            run.config.update({_item_key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            run.history.append({_item_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            run.summary.update({_item_key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
        elif kind == "artifact":
            run.artifacts.append(record.artifact)
    return run


def read_wandb_dir(root: Path) -> list[WandbRunFile]:
    """Every offline run under `root`, oldest first."""
    return [read_wandb_run(p) for p in sorted(root.glob("wandb/offline-run-*/run-*.wandb"))]


def isolate_wandb(monkeypatch: Any, root: Path) -> None:
    """No credentials, and every folder wandb writes to under `root`."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_RUN_ID", "WANDB_PROJECT", "WANDB_DISABLED"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(root / "no-netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var, sub in (("WANDB_DIR", ""), ("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache")):
        monkeypatch.setenv(var, str(root / sub))
    monkeypatch.setenv("WANDB_DATA_DIR", str(root / "data"))
