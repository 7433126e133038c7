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

    app()


__all__ = ["main"]
