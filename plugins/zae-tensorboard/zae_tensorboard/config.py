"""The `tensorboard` add-on's options (torch-free: `zae addons show tensorboard` reads them without the add-on)."""

from typing import Any

from pydantic import Field

from zae_engine.trainer.addons.configs import TrackerConfig


class TensorBoardLoggerConfig(TrackerConfig):
    """TensorBoard event files: scalars, hyper-parameters (HPARAMS tab), one folder per run; no server needed.

    The run's folder is `tensorboard/` inside its run record when the run_log add-on is on the trainer (as under
    `zae run`), else `<log_dir>/<date>-<time>-<id>/`. `web_logger` takes no entry for this tracker.
    """

    log_dir: str = Field(
        "runs/tensorboard",
        description="Folder that holds one sub-folder of event files per run when no run record is kept; "
        "point `tensorboard --logdir` at it (or at the run records' folder, `runs`).",
    )
    web_logger: dict[str, dict[str, Any]] | None = Field(
        None,
        description="Other trackers' client settings (so that one flat keyword of Trainer.add_on can serve every "
        "tracker); an entry 'tensorboard' is refused: this add-on's options are its own keywords (log_dir).",
    )
    upload_checkpoints: bool = Field(
        False,
        description="Not used: TensorBoard stores event files only (accepted so that one flat keyword of "
        "Trainer.add_on can serve every tracker); checkpoints stay where state_manager writes them.",
    )
