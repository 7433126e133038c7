"""The Typer application behind the `zae` console script."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from zae_engine._version import __version__
from zae_engine.cli import addons, checkpoint, runs
from zae_engine.cli.help import ROOT_EPILOG, RUN_EPILOG, VALIDATE_EPILOG, TidyGroup
from zae_engine.cli.output import command, out, state

app = typer.Typer(
    name="zae",
    help="zae-engine: list add-ons, validate run specs, train from them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    cls=TidyGroup,
    rich_markup_mode="rich",
    epilog=ROOT_EPILOG,
)
app.add_typer(addons.app, name="addons")
app.add_typer(runs.app, name="runs")
app.add_typer(checkpoint.app, name="checkpoint")

SPEC_HELP = "Run spec (YAML)."
DEBUG_HELP = "Show tracebacks for errors (same as `zae --debug ...`)."
DRY_RUN_HELP = "Also run one training and one validation batch through everything (nothing is written)."
PRINT_CONFIG_HELP = "Print the spec as it will run (after --set and ${VAR}) and exit."
SET_HELP = "Override a spec field: --set run.n_epoch=3 (value is YAML; list items by index or add-on name)."
SPEC_METAVAR = "SPEC"


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


@app.command(epilog=VALIDATE_EPILOG)
@command
def validate(
    spec: Path = typer.Argument(..., metavar=SPEC_METAVAR, help=SPEC_HELP),
    overrides: list[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE", help=SET_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help=DRY_RUN_HELP),
    print_config: bool = typer.Option(False, "--print-config", help=PRINT_CONFIG_HELP),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """Check a spec without training: YAML, fields, class paths, argument types, the model, optimizer and
    scheduler (on the meta device), datasets, devices, add-ons and their settings."""
    from zae_engine.cli import run as run_module

    state.debug = state.debug or debug
    if print_config:
        run_module.print_config(spec, overrides)
        return
    run_module.validate(spec, overrides, dry_run)


@app.command(epilog=RUN_EPILOG)
@command
def run(
    spec: Path = typer.Argument(
        None, metavar=SPEC_METAVAR, help=SPEC_HELP + " Without it: the built-in quickstart demo."
    ),
    overrides: list[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE", help=SET_HELP),
    nproc_per_node: int = typer.Option(
        None, "--nproc-per-node", min=1, metavar="N", help="Start N worker processes (torchrun)."
    ),
    nnodes: str = typer.Option(None, "--nnodes", metavar="N", help="Number of machines (torchrun), e.g. 2."),
    node_rank: int = typer.Option(None, "--node-rank", min=0, metavar="RANK", help="This machine's rank (torchrun)."),
    master_addr: str = typer.Option(
        None, "--master-addr", metavar="HOST", help="Address of the rank-0 machine (torchrun)."
    ),
    master_port: int = typer.Option(
        None, "--master-port", metavar="PORT", help="Port on the rank-0 machine (torchrun)."
    ),
    no_record: bool = typer.Option(False, "--no-record", help="Leave no run record under runs/ (run.record=false)."),
    dry_run: bool = typer.Option(False, "--dry-run", help=DRY_RUN_HELP),
    print_config: bool = typer.Option(False, "--print-config", help=PRINT_CONFIG_HELP),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """Train from a spec with a progress display, then print a summary."""
    from zae_engine.cli.launch import LaunchOptions
    from zae_engine.cli.run import run as run_spec

    state.debug = state.debug or debug
    if spec is None:
        from zae_engine.demo import QUICKSTART_SPEC

        spec = QUICKSTART_SPEC
    if no_record:
        overrides = [*overrides, "run.record=false"]
    if print_config:
        from zae_engine.cli.run import print_config as print_spec

        print_spec(spec, overrides)
        return
    launcher = LaunchOptions(nproc_per_node, nnodes, node_rank, master_addr, master_port)
    run_spec(spec, overrides, launcher, dry_run=dry_run)


@app.command()
@command
def schema() -> None:
    """Print the JSON Schema of run specs (for editors)."""
    from zae_engine.registry import addon_configs
    from zae_engine.spec.schema import schema_text

    print(schema_text(addon_configs()))


__all__ = ["app", "out"]
