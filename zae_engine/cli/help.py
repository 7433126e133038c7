"""How `zae ... --help` reads: flags without a type column, examples and exit codes under the commands."""

from __future__ import annotations

from typing import Any

from typer.core import TyperGroup


class TidyGroup(TyperGroup):
    """The root group: before any help is shown, flags of every command lose their `<bool>` type column.

    A flag takes no value, so its row should show none; recent Typer versions print `<bool>` there (for `--help`
    itself too). Commands added later by other modules get the same treatment, since the whole tree is walked.
    """

    def get_params(self, ctx: Any) -> list:
        if not getattr(self, "_flags_tidied", False):
            self._flags_tidied = True
            _quiet_flags(self, ctx)
        return super().get_params(ctx)


def _quiet_flags(command: Any, ctx: Any) -> None:
    for param in command.get_params(ctx):
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _quiet_flags(sub, ctx)


def _block(title: str, *lines: str) -> str:
    """An epilog section. Lines are separated by blank lines: older Typer joins single line breaks into one
    paragraph, newer Typer keeps them; a blank line is a line break in both."""
    return f"[bold]{title}[/]\n\n" + "\n\n".join(f"  {line}" for line in lines)


_USAGE_ERROR = "2    the command line itself is wrong (an unknown option, a missing argument)"

ROOT_EPILOG = _block(
    "Examples",
    "zae run                                  the built-in demo",
    "zae validate spec.yaml                   check a spec without training",
    "zae run spec.yaml --set run.n_epoch=3    train, overriding one field",
    "zae addons list                          the add-ons this environment can use",
    "zae schema > zae-spec.schema.json        the JSON Schema, for editors",
)

VALIDATE_EPILOG = "\n\n".join(
    [
        _block(
            "Examples",
            "zae validate examples/specs/quickstart.yaml",
            "zae validate spec.yaml --set optimizer.init_args.lr=0.01",
        ),
        _block("Exit codes", "0    the spec is valid", "1    it is not (one line per problem)", _USAGE_ERROR),
    ]
)

RUN_EPILOG = "\n\n".join(
    [
        _block(
            "Examples",
            "zae run examples/specs/quickstart.yaml",
            "zae run spec.yaml --set run.n_epoch=3 --set addons.state_manager.resume=true",
            "zae run spec.yaml --nproc-per-node 2    one process per device, under torchrun",
        ),
        _block(
            "Exit codes",
            "0    done",
            "1    an error (the message names the file, the line and the field)",
            _USAGE_ERROR,
            "130  stopped by Ctrl-C (SIGINT)",
            "143  stopped by SIGTERM (e.g. a batch scheduler)",
        ),
    ]
)

SWEEP_EPILOG = "\n\n".join(
    [
        _block(
            "Examples",
            "zae sweep examples/specs/sweep.yaml --trials 20 --jobs 2",
            "zae sweep spec.yaml --storage postgresql://user@db/optuna --study lr    (on every machine)",
            "zae sweep show sweep                     the trials and the best one",
            "zae run runs/sweeps/sweep/best.yaml      train the best trial again",
        ),
        _block(
            "Exit codes",
            "0    done (or the study already had its trials)",
            "1    an error: the spec or its sweep section is wrong, or no trial completed",
            "130  stopped by Ctrl-C (SIGINT); running trials are marked interrupted and run again next time",
            "143  stopped by SIGTERM",
        ),
    ]
)
