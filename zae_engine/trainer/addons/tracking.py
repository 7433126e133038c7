"""What every experiment-tracker add-on shares: lifecycle, key scheme, config logging, and a guard.

The tracker plugins (zae-wandb, zae-neptune, ...) subclass `TrackerAddonBase` (and their Config subclasses
`zae_engine.trainer.addons.configs.TrackerConfig`) and only translate five calls to their client: open, log,
log config, upload a checkpoint, close. Everything else lives here, once, with no tracker client imported.

Key scheme (the same for every tracker):

================  ==========================================================================================
`train/<key>`     epoch means of `train_step` results (`train/loss`, ...) and `metric_on_epoch_end` results
`valid/<key>`     the same for validation; `test/<key>` for an evaluation run (mode='test')
`lr/group<i>`     learning rate of optimizer param group i during that epoch
`epoch`, `step`   epoch number (from 1) and optimizer steps completed when the epoch ended
`running/<key>`   between epochs, every `log_interval` optimizer steps: running means of this epoch's
                  training results so far (`running/train/loss`) and the current rates (`running/lr/group0`)
`config/...`      trainer options, every add-on's options, model/optimizer classes, the `zae run` spec
================  ==========================================================================================

Every value is plotted against the optimizer step (`step`). A tracker failure never stops training: it is
reported once as a `TrackerWarning`, the tracker is switched off for the rest of that `run()`, and the loop goes on.
"""

from __future__ import annotations

import inspect
import re
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from zae_engine.distributed import is_rank_zero
from zae_engine.errors import ConfigError, did_you_mean
from zae_engine.trainer.addons.base import AddOnBase
from zae_engine.trainer.addons.configs import TrackerConfig
from zae_engine.trainer.describe import run_configuration

RUNNING_PREFIX = "running/"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class TrackerWarning(UserWarning):
    """A tracker went offline or failed; training carries on."""


class TrackerAddonBase(AddOnBase):
    """Base of tracker add-ons. Subclasses set `name`, `Config` and implement the `_client_*` methods.

    The tracker run opens in `on_run_start` (rank 0 only) and closes in `on_run_end`, marked failed when
    `run()` raised. A second `run()` (or a resume from a checkpoint, which stores `tracker_run_id`)
    reopens the same tracker run.
    """

    Config: ClassVar[type[TrackerConfig]] = TrackerConfig
    config: TrackerConfig
    #: what `run()`-time messages call this tracker, e.g. "W&B"
    display_name: ClassVar[str] = "tracker"
    #: upstream zae-engine's names for client settings -> the client's names (renamed with a note)
    setting_aliases: ClassVar[dict[str, str]] = {}
    # report: after the add-ons that update and persist state, so what is logged is final for the epoch
    phase = "report"

    def __init__(self, config: TrackerConfig | None = None, /, **options: Any) -> None:
        super().__init__(config, **options)
        #: the client's run object while `run()` is going (e.g. to log extra things yourself), else None
        self.run: Any = None
        #: identity of the tracker run, kept across `run()` calls and in checkpoints
        self.tracker_run_id: str = self._explicit_run_id() or uuid.uuid4().hex[:16]
        self._opened_before = False
        self._failed = False
        self._uploaded: tuple[str, int] | None = None

    # ------------------------------------------------------------------ what subclasses implement
    def _client_open(self, settings: dict[str, Any], continuing: bool) -> Any:
        """Start (or, when `continuing`, reopen) the client run from the user's settings; return it."""
        raise NotImplementedError

    def _client_log(self, values: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def _client_log_config(self, config: dict[str, Any]) -> None:
        raise NotImplementedError

    def _client_upload(self, path: Path) -> None:
        """Upload a checkpoint (a file or a folder); its name (e.g. 'epoch-0003') tells which one it is."""
        raise NotImplementedError

    def _client_close(self, error: BaseException | None) -> None:
        raise NotImplementedError

    def _explicit_run_id(self) -> str | None:
        """The run id the user fixed in their settings, if any."""
        return None

    def _client_parameters(self) -> set[str] | None:
        """Keyword names the client's run constructor takes (None: not checked)."""
        return None

    # ------------------------------------------------------------------ hooks
    def on_attach(self) -> None:
        """Settings that name an add-on this trainer lacks are refused now, not as a warning mid-run."""
        names = set(self.trainer.addons)
        for key, settings in (self.config.web_logger or {}).items():
            if key not in names:
                raise ConfigError(
                    f"{self.label()}: web_logger has an entry '{key}' but no add-on of that name is on this "
                    f"trainer{did_you_mean(key, names)}; add-ons here: {', '.join(sorted(names))}"
                )
            if not isinstance(settings, dict):
                raise ConfigError(f"{self.label()}: web_logger['{key}'] must be a dict of client settings")
        for other in self.trainer.addons.values():  # settings written for another tracker must reach it
            theirs = getattr(other.config, "web_logger", None)
            if (
                other is not self
                and isinstance(other, TrackerAddonBase)
                and (self.config.web_logger or {}).get(other.name)
                and not (theirs or {}).get(other.name)
            ):
                raise ConfigError(
                    f"{self.label()}: web_logger['{other.name}'] is given to this add-on, but the {other.label()} reads "
                    f"only its own web_logger, which has no '{other.name}' entry; move those settings to "
                    f"{type(other).__name__}(web_logger={{'{other.name}': {{...}}}})"
                )
        if self.config.upload_checkpoints and "state_manager" not in names:
            raise ConfigError(
                f"{self.label()}: upload_checkpoints=True uploads what the state_manager add-on saves, but it is "
                "not on this trainer; add StateManagerAddon, or drop upload_checkpoints"
            )
        self._check_own_settings()

    def _check_own_settings(self) -> None:
        """Upstream's key names are renamed with a note; a key the client does not take is an error, now."""
        given = (self.config.web_logger or {}).get(self.name) or {}
        for old, new in self.setting_aliases.items():
            if old in given:
                warnings.warn(
                    f"{self.display_name}: web_logger['{self.name}']['{old}'] is upstream zae-engine's name; "
                    f"write '{new}' (accepted for now)",
                    FutureWarning,
                    stacklevel=2,
                )
        accepted = self._client_parameters()
        if accepted is None:
            return
        for key in self.settings():
            if key not in accepted:
                raise ConfigError(
                    f"{self.label()}: web_logger['{self.name}'] has '{key}', which the {self.display_name} client does "
                    f"not take{did_you_mean(key, accepted)}; its settings: {', '.join(sorted(accepted))}"
                )

    def on_run_start(self) -> None:
        if not is_rank_zero():
            return
        self._failed = False
        self._uploaded = self._checkpoint_stamp()  # one that exists already (e.g. just resumed from) is not new
        self.run = self._guarded("starting the run", self._client_open, self.settings(), self._opened_before)
        if self.run is None:
            return
        self._opened_before = True
        self._guarded("logging the configuration", self._client_log_config, self.run_configuration())

    def on_log(self, metrics: dict[str, float]) -> None:
        if self.run is None or self._failed or not self.config.log_steps:
            return
        values = {RUNNING_PREFIX + key: value for key, value in metrics.items()}
        self._guarded("logging step metrics", self._client_log, values, self.trainer.progress_checker.get_step() - 1)

    def on_epoch_end(self, epoch: int, summary: dict[str, Any]) -> None:
        if self.run is None or self._failed:
            return
        values = {k: v for k, v in summary.items() if isinstance(v, (int, float))}
        self._guarded("logging the epoch summary", self._client_log, values, int(summary.get("step", 0)))
        if self.config.upload_checkpoints:
            self._upload_new_checkpoint()

    def on_run_end(self, error: BaseException | None) -> None:
        if self.run is None:
            return
        try:
            if self.config.upload_checkpoints and not self._failed:
                self._upload_new_checkpoint()  # the state manager's epoch-end hook may have run after ours
            if self._failed:
                _quietly(self._client_close, error)  # already reported once; just release the client
            else:
                self._guarded("finishing the run", self._client_close, error)
        finally:
            self.run = None

    def state_dict(self) -> dict[str, Any]:
        return {"tracker_run_id": self.tracker_run_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        run_id = state.get("tracker_run_id")
        if isinstance(run_id, str) and run_id and self._explicit_run_id() is None:
            self.tracker_run_id = run_id
            self._opened_before = True  # the checkpoint's run exists: continue it

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["run"] = None  # a client run belongs to the process that opened it
        return state

    # ------------------------------------------------------------------ shared pieces
    def settings(self) -> dict[str, Any]:
        """A copy of this tracker's entry in `web_logger` (the client's own keyword arguments), upstream names renamed."""
        given = dict((self.config.web_logger or {}).get(self.name) or {})
        return {self.setting_aliases.get(key, key): value for key, value in given.items()}

    def run_configuration(self) -> dict[str, Any]:
        """Everything that describes this run, JSON-safe, with secrets (api keys, tokens) masked."""
        return {**run_configuration(self.trainer), "tracker_run_id": self.tracker_run_id}

    def notify(self, message: str) -> None:
        """Tell the user something about this tracker (offline fallback, how to sync) as a TrackerWarning."""
        warnings.warn(f"{self.display_name}: {message}", TrackerWarning, stacklevel=2)

    def _guarded(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Call the client; on failure warn once, switch this tracker off for the run, and carry on."""
        if self._failed:
            return None
        try:
            return fn(*args)
        except Exception as exc:
            self._failed = True
            warnings.warn(
                f"{self.display_name}: {what} failed ({type(exc).__name__}: {first_line(exc)}). "
                "Tracking is off for the rest of this run; training continues",
                TrackerWarning,
                stacklevel=2,
            )
            return None

    def _checkpoint_stamp(self) -> tuple[str, int] | None:
        """Which checkpoint the state manager wrote last (path and mtime), or None."""
        path = getattr(self.trainer.addons.get("state_manager"), "last_checkpoint", None)
        if path is None or not Path(path).exists():
            return None
        path = Path(path)
        return str(path.resolve()), path.stat().st_mtime_ns

    def _upload_new_checkpoint(self) -> None:
        stamp = self._checkpoint_stamp()
        if stamp is None or stamp == self._uploaded:
            return
        self._uploaded = stamp
        self._guarded(f"uploading checkpoint {stamp[0]}", self._client_upload, Path(stamp[0]))


def keyword_names(function: Callable[..., Any]) -> set[str] | None:
    """The named keyword parameters of a client's constructor (its **kwargs are not a promise to take anything)."""
    try:
        params = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in params if p.kind in kinds and p.name != "self"}


def first_line(exc: Exception) -> str:
    """The first line of an error that says something (client errors can be whole colourful pages)."""
    for line in _ANSI.sub("", str(exc)).splitlines():
        line = line.strip()
        if line and not line.startswith("-"):
            return line[:300]
    return ""


def _quietly(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:
        pass
