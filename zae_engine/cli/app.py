"""The Typer application behind the `zae` console script."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from zae_engine._version import __version__
from zae_engine.cli import addons, checkpoint
from zae_engine.cli.output import command, out, state

app = typer.Typer(
    name="zae",
    help="zae-engine: list add-ons, validate run specs, train from them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(addons.app, name="addons")
app.add_typer(checkpoint.app, name="checkpoint")

SPEC_HELP = "Run spec (YAML)."
DEBUG_HELP = "Show tracebacks for errors (same as `zae --debug ...`)."
SET_HELP = "Override a spec field: --set run.n_epoch=3 (value is YAML; list items by index or add-on name)."


def _version(value: bool) -> None:
    if value:
        print(f"zae-engine {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
) -> None:
    state.debug = debug or bool(os.environ.get("ZAE_DEBUG"))  # set afresh per invocation (in-process runners)


@app.command()
@command
def validate(
    spec: Path = typer.Argument(..., help=SPEC_HELP),
    overrides: list[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """Check a spec without training: YAML, fields, class paths, add-on names and options."""
    from zae_engine.cli.run import validate as validate_spec

    state.debug = state.debug or debug
    validate_spec(spec, overrides)


@app.command()
@command
def run(
    spec: Path = typer.Argument(None, help=SPEC_HELP + " Without it: the built-in quickstart demo."),
    overrides: list[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    nproc_per_node: int = typer.Option(None, "--nproc-per-node", min=1, help="Start N worker processes (torchrun)."),
    nnodes: str = typer.Option(None, "--nnodes", help="Number of machines (torchrun), e.g. 2."),
    node_rank: int = typer.Option(None, "--node-rank", min=0, help="This machine's rank (torchrun)."),
    master_addr: str = typer.Option(None, "--master-addr", help="Address of the rank-0 machine (torchrun)."),
    master_port: int = typer.Option(None, "--master-port", help="Port on the rank-0 machine (torchrun)."),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """Train from a spec with a progress display, then print a summary. Exit 0, 1 on error, 130 on Ctrl-C."""
    from zae_engine.cli.launch import LaunchOptions
    from zae_engine.cli.run import run as run_spec

    state.debug = state.debug or debug
    if spec is None:
        from zae_engine.demo import QUICKSTART_SPEC

        spec = QUICKSTART_SPEC
    run_spec(spec, overrides, LaunchOptions(nproc_per_node, nnodes, node_rank, master_addr, master_port))


@app.command()
@command
def schema() -> None:
    """Print the JSON Schema of run specs (for editors)."""
    from zae_engine.registry import all_addon_fields
    from zae_engine.spec.schema import schema_text

    print(schema_text(all_addon_fields()))


__all__ = ["app", "out"]
