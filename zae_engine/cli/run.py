"""`zae validate SPEC` and `zae run [SPEC]`: the same checks, then (for run) the training and a summary."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from zae_engine.cli.launch import LaunchOptions, launch
from zae_engine.cli.output import out, state


def prepare(spec_path: Path, overrides: list[str]) -> Any:
    """Read, validate and check a spec (imports torch and the add-ons it names); returns the RunPlan."""
    from zae_engine.spec import load_spec
    from zae_engine.spec.build import check_spec

    spec, source = load_spec(spec_path, overrides)
    return check_spec(spec, source)


def print_config(spec_path: Path, overrides: list[str]) -> None:
    """The spec as it will run: after `--set` and `${VAR}` (secrets masked), validated."""
    import yaml

    from zae_engine.redact import masked
    from zae_engine.spec import load_spec

    spec, _ = load_spec(spec_path, overrides)
    data = masked(spec.model_dump(mode="json", exclude_none=True))
    print(yaml.safe_dump(data, sort_keys=False), end="")


def validate(spec_path: Path, overrides: list[str], dry_run: bool = False) -> None:
    from zae_engine.spec.preflight import preflight

    plan = prepare(spec_path, overrides)
    preflight(plan)
    if dry_run:
        _dry_run(plan)
    spec = plan.spec
    addons = ", ".join(entry.name for entry in spec.addons) or "none"
    out.print(
        f"[green]valid:[/] {escape(str(spec_path))} — {plan.trainer_class.__name__}, model {spec.model.class_path}, "
        f"{spec.run.n_epoch} epoch(s) on {escape(str(spec.device))}, add-ons: {addons}"
    )


def _dry_run(plan: Any) -> None:
    from zae_engine.errors import ConfigError
    from zae_engine.spec.build import build_run
    from zae_engine.spec.preflight import owner_of
    from zae_engine.trainer.dry_run import dry_run

    built = build_run(plan)
    try:
        summary = dry_run(built.trainer, built.loader, built.valid_loader)
    except ConfigError as exc:
        raise plan.source.fail(owner_of(plan, str(exc)), str(exc)) from None
    shown = "  ".join(f"{k} {v:.4g}" for k, v in summary.items() if k not in ("epoch", "step"))
    out.print(f"[green]dry run:[/] one training and one validation batch went through: {escape(shown)}")


def run(spec_path: Path, overrides: list[str], launcher: LaunchOptions, dry_run: bool = False) -> None:
    if dry_run:
        from zae_engine.spec.preflight import preflight

        plan = prepare(spec_path, overrides)
        preflight(plan)
        _dry_run(plan)
        return
    if launcher.wanted:
        code = launch(launcher, str(spec_path), overrides, debug=state.debug)
        raise typer.Exit(code)
    from zae_engine.spec.build import build_run

    plan = prepare(spec_path, overrides)
    built = build_run(plan)
    trainer = built.trainer
    trainer.run_spec = plan.run_spec
    if _rank_zero():
        out.print(
            f"[bold]zae run[/] {escape(str(spec_path))}: {type(trainer).__name__}, {built.n_epoch} epoch(s) "
            f"on {escape(str(plan.spec.device))}"
        )
    started = time.perf_counter()
    try:
        trainer.run(built.n_epoch, built.loader, built.valid_loader, total=True)  # run.n_epoch is the run's total
    except KeyboardInterrupt:
        if _rank_zero():
            out.print(summary(trainer, time.perf_counter() - started, stopped=True), markup=False)
        raise
    if _rank_zero():
        out.print(summary(trainer, time.perf_counter() - started), markup=False)


def summary(trainer: Any, seconds: float, stopped: bool = False) -> str:
    """'done: 5 epoch(s) in 2.1 s; best valid/acc 0.9825 (epoch 4); checkpoints: runs/demo'."""
    epochs = len(trainer.history)
    head = "stopped" if stopped else "done"
    parts = [
        f"{head}: {epochs} epoch(s) in {seconds:.1f} s"
        if epochs or not _ran_elsewhere(trainer)
        else f"{head} in {seconds:.1f} s (training ran in worker processes)"
    ]
    from zae_engine.trainer.describe import best_epoch

    best = best_epoch(trainer)
    if best is not None:
        parts.append(f"best {best['metric']} {best['value']:.4f} (epoch {best['epoch']})")
    folders = [
        str(Path(addon.config.save_path).resolve())
        for addon in trainer.addons.values()
        if hasattr(addon.config, "save_path")
    ]
    parts.append(
        f"checkpoints: {', '.join(folders)}"
        if folders
        else "checkpoints: none (add `- {name: state_manager, save_path: ...}` under addons to keep them)"
    )
    record = getattr(trainer.addons.get("run_log"), "path", None)
    if record is not None:
        parts.append(f"record: {record} (zae runs show last)")
    return "; ".join(parts)


def _ran_elsewhere(trainer: Any) -> bool:
    return trainer.launcher is not None


def _rank_zero() -> bool:
    from zae_engine.distributed import is_rank_zero

    return is_rank_zero()
