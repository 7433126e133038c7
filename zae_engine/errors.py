"""Errors users can act on: each names the thing, the place and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ZaeError(Exception):
    """Base of every error zae-engine raises on purpose; the CLI prints these without a traceback."""


class ConfigError(ZaeError, ValueError):
    """A keyword, a spec field or a value is wrong."""


class MissingMetricError(ConfigError):
    """An add-on or a sweep watches a metric that the epoch summary does not have (a typo, or no validation)."""


class CompositionError(ZaeError, TypeError):
    """Add-ons that cannot live on one trainer."""


class CheckpointError(ZaeError):
    """A checkpoint is missing, corrupt, foreign or does not fit the model."""


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' suffix, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def pydantic_message(owner: str, error: object, fields: Iterable[str] = ()) -> str:
    """Turn a pydantic ValidationError into one line per field, naming the owner; an unknown option among
    `fields` gets a suggestion."""
    lines = []
    known = list(fields)
    for item in error.errors():  # type: ignore[attr-defined]
        field = ".".join(str(p) for p in item.get("loc", ())) or "(arguments)"
        if item.get("type") == "extra_forbidden" and known:
            lines.append(f"{owner}: unknown option '{field}'{did_you_mean(field, known)}; options: {', '.join(known)}")
            continue
        got = item.get("input")
        shown = f" (got {got!r})" if item.get("type") != "missing" and not isinstance(got, dict) else ""
        lines.append(f"{owner}: '{field}': {item['msg']}{shown}")
    return "\n".join(lines)


class AddOnWarning(UserWarning):
    """An add-on failed where failing must not stop anything else (e.g. one of several teardowns)."""


class ResumeWarning(UserWarning):
    """A run resumed inside an epoch where the trainer cannot prove the data order repeats (said once per cause)."""


class StepResultError(ZaeError, TypeError):
    """`train_step`/`test_step` returned something the loop cannot use."""


class NonFiniteLossError(ZaeError, FloatingPointError):
    """The loss became NaN or Inf; training on it would only produce garbage."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped `run()` after finishing the current step (exit code 130 in the CLI)."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"training stopped by {signal_name}")
        self.signal_name = signal_name
