"""`zae addons list` and `zae addons show`: what is installed, and what each add-on takes.

`list` reads metadata (and the torch-free Config modules add-ons register), so it starts fast and a broken plugin
shows up as a row, not as a crash; `--check` opts into importing every add-on. `show` prints the add-on's real
pydantic Config: the same types, enums, bounds, defaults and descriptions that validate its options.
"""

from __future__ import annotations

import json
from typing import Any

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
    caption = None if check else "status read from metadata; `zae addons list --check` also imports each add-on"
    table = Table("name", "description", "provided by", "status", title="zae-engine add-ons", title_justify="left")
    table.caption = caption
    for info in infos:
        status = info.status if info.ok else f"{info.status}: {info.error}"
        table.add_row(info.name, info.description, info.provider, f"[{_STYLE[info.status]}]{status}[/]")
    out.print(table)


@app.command("show")
@command
def show_command(
    name: str = typer.Argument(..., help="Registry name, e.g. state_manager."),
    as_json: bool = typer.Option(False, "--json", help="Print the options' JSON Schema (the Config's own)."),
) -> None:
    """An add-on's options: name, type, default and description of every field of its Config."""
    from zae_engine.registry import AddOnError, addon_config, find_info

    try:
        info = find_info(name)
        config = addon_config(name)
    except AddOnError as exc:
        report("error", "bold red", str(exc))
        raise typer.Exit(EXIT_ERROR) from None
    schema = config.model_json_schema()
    if as_json:
        print(json.dumps(schema, indent=2))
        return
    out.print(f"[bold]{info.name}[/] — {info.description}", soft_wrap=True)
    out.print(f"provided by {info.provider} ({info.value})", markup=False)
    out.print(f"status: [{_STYLE[info.status]}]{info.status if info.ok else f'{info.status}: {info.error}'}[/]")
    properties: dict[str, Any] = schema.get("properties", {})
    if not properties:
        out.print("options: none")
        return
    required = set(schema.get("required", ()))
    table = Table("option", "type", "default", "description", title=f"options (spec: `- {{name: {name}, ...}}`)")
    table.title_justify = "left"
    for field, prop in properties.items():
        default = "(required)" if field in required else json.dumps(prop.get("default"))
        table.add_row(field, type_text(prop), default, prop.get("description", ""))
    out.print(table)


def type_text(prop: dict[str, Any]) -> str:
    """A JSON Schema property as a short type: `'ckpt' | 'safetensors'`, `integer ≥ -1`, `string | null`."""
    if "enum" in prop:
        text = " | ".join(json.dumps(v) for v in prop["enum"])
    elif "const" in prop:
        text = json.dumps(prop["const"])
    elif "anyOf" in prop:
        text = " | ".join(type_text(p) for p in prop["anyOf"])
    elif "$ref" in prop:
        text = prop["$ref"].rsplit("/", 1)[-1]
    elif prop.get("type") == "array":
        text = f"list[{type_text(prop.get('items', {}))}]"
    elif prop.get("type") == "object":
        values = prop.get("additionalProperties")
        text = f"dict[str, {type_text(values)}]" if isinstance(values, dict) and values else "dict"
    else:
        text = str(prop.get("type", "any"))
    bounds = [
        f"{symbol} {prop[key]}"
        for key, symbol in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"))
        if key in prop
    ]
    return f"{text} {', '.join(bounds)}" if bounds else text
