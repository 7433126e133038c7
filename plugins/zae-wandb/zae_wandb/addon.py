"""WandBLoggerAddon: the shared tracker behaviour (zae_engine.trainer.addons.tracking) spoken to wandb.

One trainer run() is one `wandb.init` ... `run.finish()`. A later run() on the same trainer, or a resume from a
checkpoint, calls `wandb.init(id=<same id>, resume="allow")`, so the W&B run continues. Offline, each run() leaves
its own `offline-run-*` folder with that id; `wandb sync` uploads them in order into the one run.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from zae_engine.trainer.addons.tracking import TrackerAddonBase, first_line, keyword_names
from zae_wandb.config import WandBLoggerConfig

_LOCAL_MODES = ("offline", "disabled", "dryrun")


class WandBLoggerAddon(TrackerAddonBase):
    """Log epoch summaries, running step metrics, the run configuration and (optionally) checkpoints to W&B."""

    name = "wandb"
    display_name = "W&B"
    Config = WandBLoggerConfig

    def _explicit_run_id(self) -> str | None:
        return self.settings().get("id") or os.environ.get("WANDB_RUN_ID")

    def _client_parameters(self) -> set[str] | None:
        try:
            import wandb
        except Exception:  # a broken client install: run() reports it as a tracker warning
            return None
        names = keyword_names(wandb.init)
        return None if names is None else names | {"api_key"}  # api_key goes into wandb.Settings

    def _client_open(self, settings: dict[str, Any], continuing: bool) -> Any:
        import wandb

        settings.setdefault("id", self.tracker_run_id)
        # "allow": continue the run with this id if it exists (a later run(), a resumed checkpoint, a DDP
        # worker of a later launch), else create it
        settings.setdefault("resume", "allow")
        settings.setdefault("reinit", _separate_runs(wandb.__version__))
        reason = ""
        if not _is_local(settings) and not _has_credentials(settings):
            settings["mode"] = "offline"
            reason = "no API key found (WANDB_API_KEY, `wandb login` or api_key in web_logger['wandb'])"
        api_key = settings.pop("api_key", None)
        if api_key:  # wandb.init takes the key through its Settings, not as a keyword of its own
            extra = settings.get("settings")
            settings["settings"] = wandb.Settings(**(dict(extra) if isinstance(extra, dict) else {}), api_key=api_key)
        try:
            run = wandb.init(**settings)
        except Exception as exc:
            if _is_local(settings):
                raise
            settings["mode"] = "offline"  # e.g. no network: keep the run on disk rather than lose it
            reason = f"W&B could not start an online run ({type(exc).__name__}: {first_line(exc)})"
            if wandb.run is None:
                wandb.teardown()  # the failed attempt still holds the run id in wandb's service
            run = wandb.init(**settings)
        if reason:
            folder = Path(run.dir).parent
            self.notify(
                f"{reason}, so this run is logged offline to {folder}. Upload it later with: wandb sync {folder}"
            )
        run.define_metric("step")
        run.define_metric("*", step_metric="step")  # every chart's x axis is the optimizer step
        return run

    def _client_log(self, values: dict[str, float], step: int) -> None:
        self.run.log({**values, "step": step})

    def _client_log_config(self, config: dict[str, Any]) -> None:
        self.run.config.update(config, allow_val_change=True)

    def _client_upload(self, path: Path) -> None:
        import wandb

        # one artifact per W&B run; each checkpoint is a version, aliased by its name (e.g. 'epoch-0003')
        artifact = wandb.Artifact(f"checkpoints-{self.run.id}", type="model", metadata={"checkpoint": path.name})
        if path.is_dir():
            artifact.add_dir(str(path))
        else:
            artifact.add_file(str(path))
        self.run.log_artifact(artifact, aliases=["latest", path.name])

    def _client_close(self, error: BaseException | None) -> None:
        import wandb

        if error is not None:
            self.run.summary["error"] = f"{type(error).__name__}: {error}"
        self.run.finish(exit_code=_exit_code(error))
        if wandb.run is None:  # nobody else's run is open: stop wandb's service process and threads too
            wandb.teardown()


def _exit_code(error: BaseException | None) -> int:
    if error is None:
        return 0
    return 130 if isinstance(error, KeyboardInterrupt) else 1


def _is_local(settings: dict[str, Any]) -> bool:
    mode = settings.get("mode") or os.environ.get("WANDB_MODE", "")
    return mode in _LOCAL_MODES or os.environ.get("WANDB_DISABLED", "").lower() in ("1", "true")


def _has_credentials(settings: dict[str, Any]) -> bool:
    """An API key from the settings, the environment, or ~/.netrc (where `wandb login` stores it)."""
    if settings.get("api_key") or os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _separate_runs(version: str) -> Any:
    """wandb.init's `reinit` value that gives this trainer its own run even if another one is active."""
    from packaging.version import Version

    return "create_new" if Version(version) >= Version("0.19.10") else True
