"""TensorBoardLoggerAddon: the shared tracker behaviour (zae_engine.trainer.addons.tracking) written to event files.

One folder of event files per run: `tensorboard/` inside the run's record when the `run_log` add-on keeps one (as
`zae run` does), else `<log_dir>/<date>-<time>-<id>/`, kept across `run()` calls and in checkpoints so a resumed
run writes into the same folder. Each `run()` adds one event file; a resumed one starts with a "restarted at this
step" marker, so TensorBoard drops what a crashed attempt had logged past the checkpoint.

The folder is chosen when the first epoch starts, not in `on_run_start`: `zae run` attaches `run_log` last, and
its record folder exists only once every add-on's `on_run_start` has run.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zae_engine.errors import ConfigError
from zae_engine.trainer.addons.tracking import TrackerAddonBase
from zae_tensorboard.config import TensorBoardLoggerConfig
from zae_tensorboard.events import EventFile, default_folder_name, flat_hparams

#: at a log point, write the buffer out if this long has passed, so a live TensorBoard shows long epochs too
FLUSH_SECONDS = 10.0
_FOLDER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass
class _OpenRun:
    """What one `run()` writes: the event file is made lazily (see the module docstring)."""

    purge_from: int | None
    hparams: dict[str, Any] = field(default_factory=dict)
    file: EventFile | None = None
    flushed_at: float = field(default_factory=time.monotonic)


class TensorBoardLoggerAddon(TrackerAddonBase):
    """Log epoch summaries, running step metrics and the run's settings (as hparams) to TensorBoard event files."""

    name = "tensorboard"
    display_name = "TensorBoard"
    Config = TensorBoardLoggerConfig
    config: TensorBoardLoggerConfig

    def __init__(self, config: TensorBoardLoggerConfig | None = None, /, **options: Any) -> None:
        super().__init__(config, **options)
        #: the event-file folder of the run going on (or of the last one); None before the first epoch
        self.path: Path | None = None
        self._folder_name: str | None = None  # under log_dir; kept in checkpoints

    # ------------------------------------------------------------------ the tracker base's calls
    def _check_own_settings(self) -> None:
        if (self.config.web_logger or {}).get(self.name):
            raise ConfigError(
                f"{self.label()}: web_logger['tensorboard'] is not used; this add-on's options are its own keywords "
                "(log_dir=..., log_steps=...)"
            )

    def _client_open(self, settings: dict[str, Any], continuing: bool) -> _OpenRun:
        done = self.trainer.progress_checker.get_step() - 1
        return _OpenRun(purge_from=done + 1 if continuing else None)

    def _client_log_config(self, config: dict[str, Any]) -> None:
        self.run.hparams = flat_hparams(config)

    def _client_log(self, values: dict[str, float], step: int) -> None:
        self._event_file().scalars(values, step)
        if time.monotonic() - self.run.flushed_at >= FLUSH_SECONDS:
            self._flush()

    def _client_upload(self, path: Path) -> None:
        """Nothing to do: TensorBoard stores event files only (the option is accepted for one flat keyword)."""

    def _client_close(self, error: BaseException | None) -> None:
        event_file = self._event_file()
        if error is None:
            # TensorBoard keeps the first session end a folder holds: a failed or interrupted run() writes none,
            # so its folder says "unknown" until a run() in it (e.g. the resumed one) completes
            event_file.session_end(succeeded=True)
        event_file.close()

    # ------------------------------------------------------------------ hooks
    def on_epoch_start(self, epoch: int) -> None:
        if self.run is not None and not self._failed:
            self._guarded("creating the event file", self._event_file)

    def on_epoch_end(self, epoch: int, summary: dict[str, Any]) -> None:
        super().on_epoch_end(epoch, summary)
        if self.run is not None and not self._failed:
            self._guarded("writing the event file", self._flush)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self._folder_name is not None:
            state["tensorboard_folder"] = self._folder_name
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        name = state.get("tensorboard_folder")
        if isinstance(name, str) and _FOLDER_NAME.match(name):  # a plain name: a checkpoint cannot point elsewhere
            self._folder_name = name

    # ------------------------------------------------------------------ pieces
    def _event_file(self) -> EventFile:
        run: _OpenRun = self.run
        if run.file is None:
            self.path = self._folder()
            run.file = EventFile(self.path, purge_from=run.purge_from)
            run.file.hparams(run.hparams)
        return run.file

    def _folder(self) -> Path:
        """The run record's folder while `run_log` records this run, else this tracker run's folder in log_dir."""
        record = self.trainer.addons.get("run_log")
        if record is not None and getattr(record, "recorder", None) is not None:
            return Path(record.path) / "tensorboard"
        if self._folder_name is None:
            self._folder_name = default_folder_name(self.tracker_run_id)
        return Path(self.config.log_dir) / self._folder_name

    def _flush(self) -> None:
        self._event_file().flush()
        self.run.flushed_at = time.monotonic()
