"""NeptuneLoggerAddon: the shared tracker behaviour (zae_engine.trainer.addons.tracking) spoken to neptune 1.x.

One trainer run() is one `neptune.init_run` ... `run.stop()`. Every run() of a trainer passes the same
`custom_run_id` (also stored in checkpoints), which is how a Neptune server puts several processes or sessions
into one run. Offline containers are synced as separate runs by `neptune sync` (the 1.x client does not carry
the custom id through offline sync); `config/tracker_run_id` shows which containers belong together.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from zae_engine.trainer.addons.tracking import TrackerAddonBase, first_line, keyword_names
from zae_neptune.config import NeptuneLoggerConfig

_SERVER_MODES = ("async", "sync")


class NeptuneLoggerAddon(TrackerAddonBase):
    """Log epoch summaries, running step metrics, the run configuration and (optionally) checkpoints to Neptune."""

    name = "neptune"
    setting_aliases = {"project_name": "project", "api_tkn": "api_token"}  # upstream zae-engine's keys
    display_name = "Neptune"
    Config = NeptuneLoggerConfig

    def _explicit_run_id(self) -> str | None:
        settings = self.settings()
        return settings.get("custom_run_id") or settings.get("with_id") or os.environ.get("NEPTUNE_CUSTOM_RUN_ID")

    def _client_parameters(self) -> set[str] | None:
        try:
            import neptune
        except Exception:  # a broken client install: run() reports it as a tracker warning
            return None
        return keyword_names(neptune.init_run)

    def _client_open(self, settings: dict[str, Any], continuing: bool) -> Any:
        import neptune

        if "with_id" not in settings:  # neptune refuses both at once
            settings.setdefault("custom_run_id", self.tracker_run_id)
        reason = ""
        if _wants_server(settings) and not (settings.get("api_token") or os.environ.get("NEPTUNE_API_TOKEN")):
            settings["mode"] = "offline"
            reason = "no API token found (NEPTUNE_API_TOKEN or api_token in web_logger['neptune'])"
        try:
            run = neptune.init_run(**settings)
        except Exception as exc:
            if not _wants_server(settings):
                raise
            settings["mode"] = "offline"  # e.g. no server: keep the run on disk rather than lose it
            reason = f"Neptune could not start an online run ({type(exc).__name__}: {first_line(exc)})"
            run = neptune.init_run(**settings)
        if reason:
            self.notify(
                f"{reason}, so this run is logged offline to {Path.cwd() / '.neptune'}. Upload it later with: "
                f"neptune sync --path {Path.cwd()} --project WORKSPACE/PROJECT (needs a Neptune server; the hosted "
                "neptune.ai service has shut down)"
            )
        self._last_step: dict[str, int] = {}
        return run

    def _client_log(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            # a series needs rising steps; in mode='test' epochs share a step, so let Neptune count instead
            rising = step > self._last_step.get(key, -1)
            self.run[key].append(value, step=step if rising else None)
            if rising:
                self._last_step[key] = step

    def _client_log_config(self, config: dict[str, Any]) -> None:
        from neptune.utils import stringify_unsupported

        self.run["config"] = stringify_unsupported(config)

    def _client_upload(self, path: Path) -> None:
        from neptune.types import File

        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        base = path if path.is_dir() else path.parent
        for file in files:
            field = f"checkpoints/files/{path.name}/" + file.relative_to(base).as_posix()
            with file.open("rb") as stream:  # from_stream copies the bytes into the run: later rotation is safe
                self.run[field].upload(File.from_stream(stream, extension=file.suffix.lstrip(".") or "bin"))
        self.run["checkpoints/latest"] = path.name

    def _client_close(self, error: BaseException | None) -> None:
        if error is not None:
            self.run["sys/failed"] = True
            self.run["error"] = f"{type(error).__name__}: {error}"
        self.run.stop()


def _wants_server(settings: dict[str, Any]) -> bool:
    return (settings.get("mode") or os.environ.get("NEPTUNE_MODE") or "async") in _SERVER_MODES
