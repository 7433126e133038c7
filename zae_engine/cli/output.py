"""How the CLI talks: rich consoles, and one place that turns exceptions into a message and an exit code."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console

from zae_engine.errors import ZaeError


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """The reader has gone: raise, and let `handled()` stop quietly (rich would exit 1 itself)."""
        raise BrokenPipeError


# emoji=False: "spec.yaml:100: ..." must not print as "spec.yaml💯 ..."
out = _Console(highlight=False, soft_wrap=True, emoji=False)
err = _Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM: a scheduler (e.g. Slurm, Kubernetes) stopped the run
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader left (`zae schema | head`), as for any Unix filter


class _State:
    """Global CLI options (`zae --debug ...`); ZAE_DEBUG=1 does the same."""

    debug = False


state = _State()


def report(label: str, style: str, message: str) -> None:
    err.print(f"[{style}]{label}:[/] ", end="")
    err.print(message, markup=False)


@contextmanager
def handled() -> Iterator[None]:
    """Exit 1 with one readable message on any error, 130 on Ctrl-C (143 on SIGTERM); tracebacks only with --debug."""
    try:
        yield
        sys.stdout.flush()  # a reader that has gone shows up here, not in the interpreter's last flush
    except typer.Exit:
        raise
    except BrokenPipeError:
        stop_writing_stdout()
        raise typer.Exit(EXIT_BROKEN_PIPE) from None
    except KeyboardInterrupt as exc:  # includes TrainingInterrupted (SIGINT/SIGTERM during training)
        if state.debug:
            traceback.print_exc()
        report("interrupted", "yellow", str(exc) or "Ctrl-C")
        raise typer.Exit(
            EXIT_TERMINATED if getattr(exc, "signal_name", "") == "SIGTERM" else EXIT_INTERRUPTED
        ) from None
    except ZaeError as exc:
        if state.debug:
            traceback.print_exc()
        report("error", "bold red", str(exc))
        raise typer.Exit(EXIT_ERROR) from None
    except Exception as exc:
        if state.debug:
            traceback.print_exc()
        hint = "" if state.debug else "  (run `zae --debug ...` to see the traceback)"
        report("error", "bold red", f"{type(exc).__name__}: {exc}{hint}")
        raise typer.Exit(EXIT_ERROR) from None


def stop_writing_stdout() -> None:
    """Point stdout at /dev/null, so nothing else tries to write to a pipe whose reader has gone."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a Typer command inside `handled()`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with handled():
            return fn(*args, **kwargs)

    return wrapper
