"""A synchronous TensorBoard event-file writer: scalars, hyper-parameters, session start/end.

Built from tensorboardX's parts (the event and summary protos, the hparams plugin's protos and the TFRecord
framing with its CRCs), not from its `SummaryWriter`: that one hands every event to a multiprocessing queue (a
pickle and a pipe per event) and its `flush()` does not wait for that queue, so "flushed at epoch end" would not
mean the events are in the file. Here an event is serialised into the file's buffer by the caller, and `flush()`
writes and fsyncs it; nothing runs in the background.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo, SessionStartInfo
from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata

# the tags and plugin name TensorBoard's hparams dashboard reads (tensorboard/plugins/hparams/metadata.py)
HPARAMS_PLUGIN = "hparams"
SESSION_START_TAG = "_hparams_/session_start_info"
SESSION_END_TAG = "_hparams_/session_end_info"
# hparams' api.proto Status values
STATUS_SUCCESS, STATUS_FAILURE = 1, 2
#: longest string hyper-parameter kept whole (TensorBoard shows them in table cells)
MAX_TEXT = 1000

_file_numbers = itertools.count()


class EventFile:
    """One event file in `folder`; a later run() or a resume writes a new file into the same folder."""

    def __init__(self, folder: Path, purge_from: int | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        # tensorboardX names files by the second and host only: two writers in one second would share (and
        # truncate) a file, so the process id and a counter make each name unique
        suffix = f".{os.getpid()}.{next(_file_numbers):04d}.zae"
        self._writer = EventsWriter(str(folder / "events"), filename_suffix=suffix)
        self.path = Path(self._writer._file_name)
        if purge_from is not None:
            # "resumed at this step": TensorBoard hides what an earlier attempt logged from this step on
            self._write(Event(step=purge_from, session_log=SessionLog(status=SessionLog.START)))

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        """All values of one log call as one event."""
        summary = Summary(value=[Summary.Value(tag=key, simple_value=float(v)) for key, v in values.items()])
        self._write(Event(step=step, summary=summary))

    def hparams(self, hparams: Mapping[str, Any], group: str = "") -> None:
        """The run's settings for TensorBoard's HPARAMS dashboard (it finds the metrics among the run's scalars)."""
        start = SessionStartInfo(group_name=group, start_time_secs=time.time())
        for key, value in hparams.items():
            if isinstance(value, bool):
                start.hparams[key].bool_value = value
            elif isinstance(value, (int, float)):
                start.hparams[key].number_value = float(value)
            elif isinstance(value, str):
                start.hparams[key].string_value = _clip(value)
        self._plugin_event(SESSION_START_TAG, HParamsPluginData(session_start_info=start, version=0))

    def session_end(self, succeeded: bool) -> None:
        """The HPARAMS dashboard's status column (it reads the first session end in a folder)."""
        end = SessionEndInfo(status=STATUS_SUCCESS if succeeded else STATUS_FAILURE, end_time_secs=time.time())
        self._plugin_event(SESSION_END_TAG, HParamsPluginData(session_end_info=end, version=0))

    def flush(self) -> None:
        """Into the file and onto the disk: a process killed after this leaves everything so far readable."""
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

    def _plugin_event(self, tag: str, data: HParamsPluginData) -> None:
        plugin = SummaryMetadata.PluginData(plugin_name=HPARAMS_PLUGIN, content=data.SerializeToString())
        value = Summary.Value(tag=tag, metadata=SummaryMetadata(plugin_data=plugin))
        self._write(Event(summary=Summary(value=[value])))

    def _write(self, event: Event) -> None:
        event.wall_time = time.time()
        self._writer.write_event(event)


def flat_hparams(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as 'trainer/gradient_clip' -> value; lists and other values as JSON text, None left out."""
    return {key: value for key, value in _leaves(config, prefix) if value is not None}


def _leaves(config: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, name + "/")
        elif value is None or isinstance(value, (bool, int, float, str)):
            yield name, value
        else:
            yield name, json.dumps(value, default=repr)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def default_folder_name(run_id: str) -> str:
    """'20261201-020358-3f2a9c1d': sorts by start time in TensorBoard's run list, unique by the run id."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{run_id[:8]}"


__all__ = ["EventFile", "default_folder_name", "flat_hparams"]
