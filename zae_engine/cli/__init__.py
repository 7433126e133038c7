"""The `zae` command line: add-on listing, spec validation, training runs, the spec's JSON Schema.

`main` is the console script. Importing this package is cheap: torch and add-ons are imported only by the
commands that need them (`validate`, `run`, `addons list --check`).
"""

from __future__ import annotations


def main() -> None:
    import sys

    if sys.argv[1:] == ["--version"]:  # the one answer that needs neither Typer nor rich
        from zae_engine import __version__

        print(f"zae-engine {__version__}")
        return
    from zae_engine.cli.app import app

    try:
        app()
        sys.stdout.flush()
    except BrokenPipeError:  # the reader of our output left early (`zae runs list --json | head`): stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(1) from None


__all__ = ["main"]
