"""`zae addons list` and `zae addons show`: what is installed, and what each add-on takes.

Both read metadata and source text only (see `zae_engine.registry`), so they start fast and a broken plugin
shows up as a row, not as a crash. `--check` / `--import` opt into importing.
"""

from __future__ import annotations

import json

import typer
from rich.table import Table

from zae_engine.cli.output import EXIT_ERROR, command, out, report

app = typer.Typer(help="List installed add-ons and show their options.", no_args_is_help=True)

_STYLE = {"ok": "green", "broken": "red", "incompatible": "yellow", "conflict": "red"}


@app.command("list")
@command
def list_command(
    as_json: bool = typer.Option(
        False, "--json", help="Print a JSON list (keys: name, description, distribution, version, status, error)."
    ),
    check: bool = typer.Option(
        False, "--check", help="Also import every add-on to catch errors raised at import time (slower: imports torch)."
    ),
) -> None:
    """Installed add-ons: name, description, providing distribution, status."""
    from zae_engine.registry import list_addons

    infos = list_addons(check=check)
    if as_json:
        print(json.dumps([info.as_json() for info in infos], indent=2))
        return
    if not infos:
        out.print("no add-ons installed (the entry-point group zae_engine.addons is empty)")
        return
    caption = None if check else "status read from metadata and source; `zae addons list --check` also imports each"
    table = Table(
        "name",
        "description",
        "provided by",
        "status",
        title="zae-engine add-ons",
        title_justify="left",
        caption=caption,
    )
    for info in infos:
        status = info.status if info.ok else f"{info.status}: {info.error}"
        table.add_row(info.name, info.description, info.provider, f"[{_STYLE[info.status]}]{status}[/]")
    out.print(table)


@app.command("show")
@command
def show_command(
    name: str = typer.Argument(..., help="Registry name, e.g. state_manager."),
    do_import: bool = typer.Option(
        False,
        "--import",
        help="Import the add-on and read its Config from the class (for Configs the source reader cannot follow).",
    ),
) -> None:
    """An add-on's options: the fields of its Config (name, type, default, description)."""
    from zae_engine.registry import AddOnError, addon_fields, get_addon

    try:
        info, fields = addon_fields(name)
    except AddOnError as exc:
        report("error", "bold red", str(exc))
        raise typer.Exit(EXIT_ERROR) from None
    if do_import:
        fields = _imported_fields(get_addon(name))
    out.print(f"[bold]{info.name}[/] — {info.description}", soft_wrap=True)
    out.print(f"provided by {info.provider} ({info.value})", markup=False)
    status = info.status if info.ok else f"{info.status}: {info.error}"
    out.print(f"status: [{_STYLE[info.status]}]{status}[/]")
    if fields is None:
        if info.ok:
            out.print(f"its Config could not be read from the source; `zae addons show {name} --import` imports it")
        return
    if not fields:
        out.print("options: none")
        return
    table = Table(
        "option",
        "type",
        "default",
        "description",
        title=f"options (spec: `- {{name: {name}, ...}}`)",
        title_justify="left",
    )
    for field in fields:
        table.add_row(field.name, field.type, "(required)" if field.required else field.default, field.description)
    out.print(table)


def _imported_fields(addon: type) -> tuple:
    from pydantic_core import PydanticUndefined

    from zae_engine.addon_source import FieldInfo

    rows = []
    for field_name, field in addon.Config.model_fields.items():
        required = field.is_required()
        default = "" if required else repr(field.default if field.default is not PydanticUndefined else "factory")
        annotation = getattr(field.annotation, "__name__", None) or str(field.annotation).replace("typing.", "")
        rows.append(FieldInfo(field_name, annotation, default, field.description or "", required))
    return tuple(rows)
