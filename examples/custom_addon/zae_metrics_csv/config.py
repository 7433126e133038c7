"""The `metrics_csv` add-on's options, in a module that imports neither torch nor the add-on.

The `zae_engine.addon_configs` entry point names this class, so `zae addons list` reads the description (this
docstring's first line, below) and `zae addons show metrics_csv` the fields without importing torch.
"""

from pydantic import Field

from zae_engine.trainer.addons.base import AddOnConfig


class MetricsCSVConfig(AddOnConfig):
    """Write each epoch summary (losses, metrics, learning rates) as a row of a CSV file."""

    csv_path: str = Field("metrics.csv", description="CSV file that receives one row per epoch")
    csv_keys: list[str] | None = Field(
        None, description="columns to keep, e.g. ['epoch', 'valid/loss']; None keeps every summary key"
    )
