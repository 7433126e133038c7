"""The `mlflow` add-on's options (torch-free: `zae addons show mlflow` reads them without importing the add-on)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from zae_engine.trainer.addons.configs import TrackerConfig

DEFAULT_TRACKING_URI = "sqlite:///runs/mlflow.db"
#: MLflow's limits on tag keys and values (mlflow.utils.validation)
MAX_KEY, MAX_TAG_VALUE = 250, 8000


class MLflowLoggerConfig(TrackerConfig):
    """MLflow tracking: params, metrics with steps, checkpoints as artifacts; a local SQLite store or a server.

    Credentials come from the environment only (MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and
    MLFLOW_TRACKING_PASSWORD), never from a spec. `web_logger` takes no entry for this tracker.
    """

    tracking_uri: str | None = Field(
        None,
        description="Where runs go: a server ('http://host:5000'), a database ('sqlite:///path.db', "
        "'postgresql://host/db'), ... None: MLFLOW_TRACKING_URI from the environment, else "
        f"'{DEFAULT_TRACKING_URI}' (a local file, no server; its folder is created).",
    )
    experiment: str | None = Field(
        None,
        min_length=1,
        max_length=500,  # MLflow's limit on experiment names
        description="Experiment name, created if missing. None: MLFLOW_EXPERIMENT_NAME from the environment, "
        "else MLflow's 'Default' experiment.",
    )
    run_name: str | None = Field(None, description="The run's name in MLflow. None: MLflow makes one up.")
    tags: dict[str, str] = Field(
        default_factory=dict, description="Tags set on the MLflow run, e.g. {'team': 'vision'}."
    )
    web_logger: dict[str, dict[str, Any]] | None = Field(
        None,
        description="Other trackers' client settings (so that one flat keyword of Trainer.add_on can serve every "
        "tracker); an entry 'mlflow' is refused: this add-on's options are its own keywords (tracking_uri, experiment, ...).",
    )
    upload_checkpoints: bool = Field(
        False,
        description="Upload each checkpoint the state_manager add-on writes as run artifacts under "
        "checkpoints/<checkpoint name>/; needs state_manager on the same trainer.",
    )

    @field_validator("tracking_uri")
    @classmethod
    def _no_credentials(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.password is not None or "token=" in parts.query.lower():
            raise ValueError(
                "holds credentials; keep them out of specs and code: export MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) and give the URI without them"
            )
        return value

    @field_validator("tags")
    @classmethod
    def _tags_fit_mlflow(cls, tags: dict[str, str]) -> dict[str, str]:
        for key, value in tags.items():
            if not key or len(key) > MAX_KEY:
                raise ValueError(f"tag key {key[:40]!r} must be 1 to {MAX_KEY} characters (MLflow's limit)")
            if len(value) > MAX_TAG_VALUE:
                raise ValueError(f"tag {key!r} is longer than MLflow's {MAX_TAG_VALUE} characters")
        return tags
