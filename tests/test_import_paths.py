"""Import paths of the compatibility contract, and what importing costs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

PLUGINS = {
    "MultiGPUAddon": ("zae_mpu", "mpu"),
    "WandBLoggerAddon": ("zae_wandb", "wandb"),
    "NeptuneLoggerAddon": ("zae_neptune", "neptune"),
    "TensorBoardLoggerAddon": ("zae_tensorboard", "tensorboard"),
    "MLflowLoggerAddon": ("zae_mlflow", "mlflow"),
}


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_public_names_import():
    from zae_engine.schedulers import CosineAnnealingScheduler, SchedulerChain, WarmUpScheduler  # noqa: F401
    from zae_engine.trainer import ProgressChecker, Trainer  # noqa: F401
    from zae_engine.trainer.addons import AddOnBase, StateManagerAddon  # noqa: F401


def test_core_imports_pull_in_no_tracker_client():
    result = run_python(
        "import sys, zae_engine, zae_engine.trainer, zae_engine.trainer.addons\n"
        "bad = [m for m in ('wandb', 'neptune', 'tensorboardX', 'mlflow', 'zae_wandb', 'zae_neptune', 'zae_mpu',\n"
        "                   'zae_tensorboard', 'zae_mlflow') if m in sys.modules]\n"
        "print(bad)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_bare_package_import_does_not_import_torch():
    result = run_python("import sys, zae_engine; print('torch' in sys.modules, zae_engine.__version__)")
    assert result.stdout.split()[0] == "False"


@pytest.mark.parametrize("class_name", sorted(PLUGINS))
def test_missing_plugin_names_the_pip_extra(class_name):
    module, extra = PLUGINS[class_name]
    # sys.modules[name] = None is how Python itself marks a module as unavailable.
    result = run_python(
        f"import sys; sys.modules[{module!r}] = None\n"
        f"try:\n    from zae_engine.trainer.addons import {class_name}\n"
        f"except ImportError as e:\n    print('IMPORTERROR', e)\n"
    )
    assert "IMPORTERROR" in result.stdout, result.stderr
    assert f'pip install "zae-engine[{extra}]"' in result.stdout
    assert f"plugins/zae-{extra}" in result.stdout


def test_missing_mpu_plugin_breaks_the_seed_import_path_clearly():
    result = run_python(
        "import sys; sys.modules['zae_mpu'] = None\n"
        "try:\n    from zae_engine.trainer.addons.mpu import MultiGPUAddon\n"
        "except ImportError as e:\n    print('IMPORTERROR', e)\n"
    )
    assert "IMPORTERROR MultiGPUAddon is provided by the 'mpu' extra" in result.stdout, result.stderr


@pytest.mark.parametrize("class_name", sorted(PLUGINS))
def test_installed_plugin_class_is_handed_over(class_name):
    module, _ = PLUGINS[class_name]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed in this environment")
    import zae_engine.trainer.addons as addons

    plugin = importlib.import_module(module)
    assert getattr(addons, class_name) is getattr(plugin, class_name)
    if class_name == "MultiGPUAddon":
        from zae_engine.trainer.addons.mpu import MultiGPUAddon

        assert MultiGPUAddon is plugin.MultiGPUAddon
