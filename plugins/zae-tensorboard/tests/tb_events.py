"""Read event files back with TensorBoard's own reader (EventAccumulator) and its hparams plugin's parsers.

Every folder that holds event files is one TensorBoard run, as `tensorboard --logdir ROOT` would list it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, metadata


@dataclass
class TBRun:
    folder: Path
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # tag -> [(step, value)] in order
    hparams: dict[str, Any] = field(default_factory=dict)
    status: str | None = None  # 'STATUS_SUCCESS', 'STATUS_FAILURE', or None without a session end

    def steps(self, tag: str) -> list[int]:
        return [step for step, _ in self.scalars.get(tag, [])]

    def values(self, tag: str) -> list[float]:
        return [value for _, value in self.scalars.get(tag, [])]


def read_run(folder: Path) -> TBRun:
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})  # 0: keep every point
    accumulator.Reload()
    run = TBRun(folder=folder)
    for tag in accumulator.Tags()["scalars"]:
        run.scalars[tag] = [(event.step, event.value) for event in accumulator.Scalars(tag)]
    content = accumulator.PluginTagToContent(metadata.PLUGIN_NAME)
    if metadata.SESSION_START_INFO_TAG in content:
        start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
        run.hparams = {key: _value(value) for key, value in start.hparams.items()}
    if metadata.SESSION_END_INFO_TAG in content:
        end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
        run.status = api_pb2.Status.Name(end.status)
    return run


def read_runs(root: Path) -> list[TBRun]:
    """Every run folder under `root`, in the order TensorBoard sorts them (by name: ours start with the time)."""
    folders = sorted({path.parent for path in root.rglob("events.out.tfevents.*")})
    return [read_run(folder) for folder in folders]


def _value(value: Any) -> Any:
    kind = value.WhichOneof("kind")
    return {"number_value": value.number_value, "string_value": value.string_value, "bool_value": value.bool_value}[
        kind
    ]
