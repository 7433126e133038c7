"""`zae checkpoint ls | verify | export | import-upstream`: look at, check, export and bring in checkpoints.

The work is done in `zae_engine.checkpoint` (inspect, export, upstream); this module only renders it. None of
these commands unpickles anything from a checkpoint, and torch is imported only when a command runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from zae_engine.cli.output import EXIT_ERROR, command, out, report

app = typer.Typer(
    help="List, verify and export checkpoints; import upstream zae-engine save folders.", no_args_is_help=True
)

JSON_HELP = "Print JSON instead of a table."


@app.command("ls")
@command
def ls_command(
    save_path: Path = typer.Argument(..., help="The save_path of a StateManagerAddon (the folder with manifest.json)."),
    verify: bool = typer.Option(False, "--verify", help="Also hash every file (reads all of them; slower)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Every checkpoint in a save_path: epoch, step, monitored value, best/latest, size, format, verified."""
    from zae_engine.checkpoint.inspect import NOT_CHECKED, list_save_path

    listing = list_save_path(save_path, verify=verify)
    if as_json:
        print(json.dumps(listing.as_json(), indent=2))
    else:
        _print_listing(listing, NOT_CHECKED)
    if listing.damaged:
        names = ", ".join(row.entry.name for row in listing.damaged)
        report("error", "bold red", f"damaged or missing checkpoints in {str(listing.root)!r}: {names}")
        raise typer.Exit(EXIT_ERROR)


def _print_listing(listing: Any, not_checked: str) -> None:
    styles = {"ok": "green", "missing": "red", "damaged": "red", not_checked: "dim"}
    table = Table(
        title=f"checkpoints in {listing.root}",
        title_justify="left",
        caption=None if listing.damaged or not listing.checkpoints else _caption(listing, not_checked),
    )
    for column in ("name", "kind", "epoch", "step", "monitored", "marks", "size", "format", "verified"):
        table.add_column(column, no_wrap=column in ("name", "monitored"))
    for row in listing.checkpoints:
        entry = row.entry
        monitored = "—" if entry.value is None else f"{entry.monitor} {entry.value:.4g} ({entry.mode})"
        marks = ", ".join(mark for mark, on in (("best", row.best), ("latest", row.latest)) if on)
        table.add_row(
            entry.name,
            entry.kind,
            str(entry.epoch),
            str(entry.step),
            monitored,
            marks,
            "—" if row.bytes is None else human_size(row.bytes),
            entry.save_format,
            f"[{styles[row.status]}]{row.status}[/]",
        )
    if listing.checkpoints:
        out.print(table)
    elif listing.has_manifest:
        out.print(f"{listing.root}: the manifest lists no checkpoint yet", markup=False)
    else:
        out.print(f"{listing.root}: no manifest.json", markup=False)
    for row in listing.checkpoints:
        for problem in row.problems:
            out.print(f"[bold red]{row.status}[/] {_escape(row.entry.name)}: {_escape(problem)}")
    if listing.unlisted:
        out.print("not listed in the manifest (kept; zae never deletes them; load or verify them by folder):")
        for row in listing.unlisted:
            meta = row.meta or {}
            what = row.problem or (
                f"{meta.get('kind')}, epoch {meta.get('epoch')}, step {meta.get('step')}, {meta.get('save_format')}"
            )
            out.print(f"  {row.name}  {what}  {human_size(row.bytes)}", markup=False)
    if listing.temporary:
        out.print(
            f"{len(listing.temporary)} unfinished temporary folder(s) ({', '.join(listing.temporary)}) of saves "
            "that were cut short; the next save removes those whose writer has exited",
            markup=False,
        )


def _caption(listing: Any, not_checked: str) -> str | None:
    if any(row.status == not_checked for row in listing.checkpoints):
        return "files not checked; `--verify` hashes them against their checkpoint.json"
    return "every file matches the size and SHA-256 recorded when it was saved"


@app.command("verify")
@command
def verify_command(
    path: Path = typer.Argument(..., help="A checkpoint folder, or a save_path (every checkpoint it lists)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Check the SHA-256 and structure of every file; exit 1 naming the damaged ones. Nothing is unpickled."""
    from zae_engine.checkpoint.inspect import verify_path

    root, checks = verify_path(path)
    damaged = [check for check in checks if not check.ok]
    if as_json:
        print(
            json.dumps({"path": str(root), "ok": not damaged, "checkpoints": [c.as_json() for c in checks]}, indent=2)
        )
    else:
        for check in checks:
            if check.ok:
                files = f"{len(check.files)} files, {human_size(check.bytes)}"
                out.print(f"[green]ok[/]       {_escape(check.name)}  ({check.save_format}, {files})")
            else:
                out.print(f"[bold red]DAMAGED[/]  {_escape(check.name)}")
                for problem in check.problems:
                    out.print(f"         {problem}", markup=False)
        out.print(f"{len(checks) - len(damaged)} of {len(checks)} checkpoint(s) intact", markup=False)
    if damaged:
        first = damaged[0]
        report(
            "error",
            "bold red",
            f"{len(damaged)} damaged checkpoint(s) in {str(root)!r}; first: {first.name}: {first.problems[0]}",
        )
        raise typer.Exit(EXIT_ERROR)


@app.command("export")
@command
def export_command(
    folder: Path = typer.Argument(..., help="A checkpoint folder, or a save_path (its latest checkpoint)."),
    out_file: Path = typer.Option(..., "--out", "-o", help="model.safetensors (recommended), or a .pt/.pth file."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
) -> None:
    """Write the model weights only (plain parameter names), ready for inference elsewhere."""
    from zae_engine.checkpoint.export import export_weights

    done = export_weights(folder, out_file, force=force)
    out.print(
        f"wrote {done.out} ({done.tensors} tensors, {human_size(done.bytes)}) from {done.folder}",
        markup=False,
    )


@app.command("import-upstream")
@command
def import_upstream_command(
    old: Path = typer.Argument(..., help="Upstream zae-engine 0.7 save folder (model.ckpt, optimizer.zae, ...)."),
    new: Path = typer.Argument(..., help="New save_path to create (must not exist, or be empty)."),
    trust_pickle: bool = typer.Option(
        False,
        "--trust-pickle",
        help="Also carry optimizer.zae and scheduler.zae (pickle files). Only for files you made yourself: they are "
        "read by a restricted unpickler that admits tensors and plain values only.",
    ),
    epoch: int = typer.Option(1, "--epoch", min=1, help="The epoch the next run() trains (upstream records none)."),
    save_format: str = typer.Option("safetensors", "--save-format", help="safetensors or ckpt."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Convert an upstream 0.7 save folder into a checkpoint that load_state() resumes from."""
    from zae_engine.checkpoint.upstream import import_upstream
    from zae_engine.errors import ConfigError

    fmt = {"safetensor": "safetensors"}.get(save_format.strip().lower(), save_format.strip().lower())
    if fmt not in ("safetensors", "ckpt"):
        raise ConfigError(f"--save-format must be 'safetensors' or 'ckpt', got {save_format!r}")
    done = import_upstream(old, new, trust_pickle=trust_pickle, epoch=epoch, save_format=fmt)
    if as_json:
        print(json.dumps(done.as_json(), indent=2))
        return
    out.print(f"imported {done.source} -> {done.checkpoint} ({done.save_format})", markup=False)
    for part in done.parts:
        mark = "[green]carried    [/]" if part.carried else "[yellow]not carried[/]"
        out.print(f"  {mark}  {_escape(part.file)}: {_escape(part.note)}")
    out.print(
        f"  progress     the next run() trains epoch {done.epoch} (upstream records none; --epoch N sets it)",
        markup=False,
    )
    out.print(
        f"resume: a trainer with StateManagerAddon(save_path={str(done.save_path)!r}) calls load_state()",
        markup=False,
    )


def human_size(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    for unit in ("kB", "MB", "GB"):
        n /= 1000
        if n < 1000 or unit == "GB":
            break
    return f"{n:.1f} {unit}"


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
