"""Where each plugin add-on lives, so a missing one fails with the pip command that provides it."""

from __future__ import annotations

import importlib
from typing import Any

# class name -> (module, pip extra, plugin folder in this repository)
PLUGIN_CLASSES = {
    "MultiGPUAddon": ("zae_mpu", "mpu", "plugins/zae-mpu"),
    "WandBLoggerAddon": ("zae_wandb", "wandb", "plugins/zae-wandb"),
    "NeptuneLoggerAddon": ("zae_neptune", "neptune", "plugins/zae-neptune"),
    "TensorBoardLoggerAddon": ("zae_tensorboard", "tensorboard", "plugins/zae-tensorboard"),
    "MLflowLoggerAddon": ("zae_mlflow", "mlflow", "plugins/zae-mlflow"),
}


def load_plugin_class(class_name: str) -> Any:
    module_name, extra, folder = PLUGIN_CLASSES[class_name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name != module_name:  # the plugin is there but one of *its* imports failed: show that
            raise
        raise ImportError(
            f"{class_name} is provided by the '{extra}' extra, which is not installed: "
            f'pip install "zae-engine[{extra}]" (from a checkout of zae-engine: pip install -e {folder})',
            name=module_name,
        ) from None
    return getattr(module, class_name)
