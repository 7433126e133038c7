"""Every example runs, so the gallery never rots: scripts, spec files and the custom add-on package.

Scripts run as subprocesses with short epochs. Specs go through the real `zae` CLI: every one is validated, the
single-process ones are trained for one epoch (in-process through Typer's runner, which saves a torch import per
spec). The custom add-on is installed into a scratch folder with pip, then found by name through the registry.
Each spec runs in a scratch copy of `examples/`, so W&B, Neptune and checkpoint files land there.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SPECS = sorted((EXAMPLES / "specs").glob("*.yaml"))
SPEC_PLUGINS = {
    "mpu.yaml": "zae_mpu",
    "wandb.yaml": "zae_wandb",
    "neptune.yaml": "zae_neptune",
    "tensorboard.yaml": "zae_tensorboard",
    "mlflow.yaml": "zae_mlflow",
}
SPAWNING_SPECS = {"mpu.yaml"}  # several processes: validated here, trained by examples/multi_gpu.py's test
ZAE = [sys.executable, "-m", "zae_engine.cli"]


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def needs(module: str):
    return pytest.mark.skipif(not installed(module), reason=f"plugin {module} is not installed")


def quiet_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"  # MLflow's client reports usage to its makers unless told not to
    env.update(extra)
    return env


def run_script(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=quiet_env(**env), capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


# ---------------------------------------------------------------------------------------------- scripts
@needs("zae_wandb")
def test_basic_usage_script(tmp_path):
    out = tmp_path / "basic"
    done = run_script([str(EXAMPLES / "basic_usage.py"), "--quick", "--out", str(out)], cwd=tmp_path)
    accuracy = float(done.stdout.split("accuracy with the best weights: ")[1].split(";")[0])
    assert accuracy > 0.7, done.stdout
    assert (out / "best.safetensors").is_file()
    manifest = json.loads((out / "checkpoints" / "manifest.json").read_text())
    assert manifest, "state_manager wrote no checkpoint"
    assert list((out / "wandb").glob("offline-run-*")), "W&B wrote no offline run"


@needs("zae_mpu")
def test_multi_gpu_script_on_two_cpu_processes(tmp_path):
    done = run_script([str(EXAMPLES / "multi_gpu.py"), "--cpu", "2", "--quick"], cwd=tmp_path)
    assert "2 workers on cpu" in done.stdout
    assert (tmp_path / "runs" / "multi_gpu" / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["runs"]  # nothing left in the folder it was started from


# ---------------------------------------------------------------------------------------------- specs
@pytest.fixture
def examples_copy(tmp_path, monkeypatch):
    """A scratch copy of examples/ as the current directory (specs say `examples.toy...`, relative paths)."""
    shutil.copytree(EXAMPLES, tmp_path / "examples", ignore=shutil.ignore_patterns("custom_addon", "__pycache__"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # `zae` puts the spec's folders on sys.path
    for name in [m for m in sys.modules if m == "examples" or m.startswith("examples.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    return tmp_path


def zae(*args: str):
    from zae_engine.cli.app import app

    return CliRunner().invoke(app, list(args))


def test_there_are_specs():
    assert {p.name for p in SPECS} >= {"quickstart.yaml"}


@pytest.mark.parametrize("spec", SPECS, ids=[p.name for p in SPECS])
def test_spec_validates_and_trains(spec, examples_copy):
    plugin = SPEC_PLUGINS.get(spec.name)
    if plugin and not installed(plugin):
        pytest.skip(f"plugin {plugin} is not installed")
    path = f"examples/specs/{spec.name}"
    result = zae("validate", path)
    assert result.exit_code == 0, result.output
    assert "valid:" in result.output
    if spec.name in SPAWNING_SPECS:
        return
    result = zae("run", path, "--set", "run.n_epoch=1", "--set", "trainer.init_args.log_bar=false")
    assert result.exit_code == 0, result.output
    assert "done" in result.output and "record: runs/" in result.output


# ---------------------------------------------------------------------------------------------- custom add-on
@pytest.fixture(scope="module")
def custom_addon_site(tmp_path_factory) -> Path:
    """examples/custom_addon installed with pip into a scratch folder (offline when hatchling is present)."""
    site = tmp_path_factory.mktemp("custom_addon_site")
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(site)]
    if installed("hatchling"):
        command.append("--no-build-isolation")  # build with the local hatchling: no network needed
    source = tmp_path_factory.mktemp("custom_addon_src") / "custom_addon"
    shutil.copytree(EXAMPLES / "custom_addon", source, ignore=shutil.ignore_patterns("runs", "__pycache__"))
    done = subprocess.run([*command, str(source)], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert list(site.glob("zae_metrics_csv-*.dist-info")), "pip installed no metadata"
    return site


def test_custom_addon_is_listed_by_the_cli(custom_addon_site):
    env = quiet_env(PYTHONPATH=os.pathsep.join([str(custom_addon_site), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([*ZAE, "addons", "list", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    entries = {entry["name"]: entry for entry in json.loads(done.stdout)}
    assert entries["metrics_csv"]["status"] == "ok", entries["metrics_csv"]
    assert entries["metrics_csv"]["distribution"] == "zae-metrics-csv"
    # the description is the first line of the Config's docstring, read through the zae_engine.addon_configs entry
    assert entries["metrics_csv"]["description"].startswith("Write each epoch summary")
    assert entries["state_manager"]["status"] == "ok"
    shown = subprocess.run([*ZAE, "addons", "show", "metrics_csv"], env=env, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "csv_path" in shown.stdout and "csv_keys" in shown.stdout


def test_custom_addon_by_registry_name(custom_addon_site, tmp_path, monkeypatch):
    """get_addon('metrics_csv') is the installed class; configured by keywords, it writes its CSV."""
    monkeypatch.syspath_prepend(str(custom_addon_site))
    from zae_engine.registry import get_addon
    from zae_engine.testing import make_loader, make_trainer

    csv_addon = get_addon("metrics_csv")
    assert csv_addon.name == "metrics_csv"
    trainer = make_trainer(csv_addon(csv_path=str(tmp_path / "metrics.csv")))
    trainer.run(2, make_loader(), valid_loader=make_loader(seed=1))
    with open(tmp_path / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert {"train/loss", "valid/loss", "valid/acc", "lr/group0"} <= set(rows[0])


def test_custom_addon_own_tests_pass(custom_addon_site, tmp_path):
    """The template's tests (written with zae_engine.testing) pass against the installed package."""
    source = tmp_path / "custom_addon"
    shutil.copytree(EXAMPLES / "custom_addon", source, ignore=shutil.ignore_patterns("runs", "__pycache__"))
    shutil.rmtree(source / "zae_metrics_csv")  # the installed copy is the one under test
    env = quiet_env(PYTHONPATH=os.pathsep.join([str(custom_addon_site), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]
    done = subprocess.run(command, cwd=source, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "4 passed" in done.stdout


def test_custom_addon_spec(custom_addon_site, tmp_path, monkeypatch):
    """The package's own spec: the add-on by name from YAML, its keywords checked, its CSV written."""
    monkeypatch.syspath_prepend(str(custom_addon_site))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    spec = EXAMPLES / "custom_addon" / "spec.yaml"
    bad = zae("validate", str(spec), "--set", "addons.metrics_csv.csv_colums=[epoch]")
    assert bad.exit_code == 1 and "csv_colums" in bad.output
    result = zae("run", str(spec), "--set", "run.n_epoch=2")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "runs" / "metrics_csv" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and list(rows[0]) == ["epoch", "train/loss", "valid/loss", "valid/acc"]
