"""The `zae` command line: add-on listing, spec validation, training runs, the spec's JSON Schema.

`main` is the console script. Importing this package is cheap: torch and add-ons are imported only by the
commands that need them (`validate`, `run`, `addons list --check`).
"""

from __future__ import annotations


def main() -> None:
    import sys

    try:
        try:
            _dispatch(sys.argv[1:])
        finally:
            sys.stdout.flush()  # here, not in the interpreter's last flush, where an error could not be caught
    except BrokenPipeError:  # the reader has gone (`zae schema | head -1`): stop quietly, like any Unix filter
        from zae_engine.cli.output import EXIT_BROKEN_PIPE, stop_writing_stdout

        stop_writing_stdout()
        sys.exit(EXIT_BROKEN_PIPE)


def _dispatch(args: list[str]) -> None:
    if args == ["--version"]:  # the one answer that needs neither Typer nor rich
        from zae_engine import __version__

        print(f"zae-engine {__version__}")
        return
    from zae_engine.cli.app import app

    app()


__all__ = ["main"]
