"""The `zae` command, run as a real subprocess: every command, every error class, exit codes and messages.

Each subprocess that builds a run imports torch (a few seconds), so runs here are 1-2 tiny epochs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from zae_engine import __version__
from zae_engine.cli.launch import LaunchOptions, torchrun_command

ROOT = Path(__file__).resolve().parents[1]
BROKEN = ROOT / "tests" / "fixtures" / "broken_plugin"
_SCRIPT = Path(sys.executable).with_name("zae")
ZAE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "zae_engine.cli"]

TINY = """\
trainer: {class_path: zae_engine.demo.toy.ToyTrainer, init_args: {log_bar: false}}
model: {class_path: zae_engine.demo.toy.TinyNet, init_args: {hidden: 8}}
optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.1}}
data:
  train: {dataset: {class_path: zae_engine.demo.toy.RandomDataset, init_args: {size: 64}}, batch_size: 32}
  valid: {dataset: {class_path: zae_engine.demo.toy.RandomDataset, init_args: {size: 32, seed: 1}}, batch_size: 32}
run: {n_epoch: 1, seed: 0}
"""


def zae(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run([*ZAE, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=240)


@pytest.fixture
def tiny(tmp_path):
    def write(text: str = TINY, **replace: str) -> Path:
        for old, new in replace.items():
            assert old in text, old
            text = text.replace(old, new)
        path = tmp_path / "tiny.yaml"
        path.write_text(text)
        return path

    return write


def test_console_script_is_installed():
    assert _SCRIPT.exists(), "pip install -e . creates the `zae` console script"


def test_help_and_version():
    result = zae("--help")
    assert result.returncode == 0
    for command in ("addons", "validate", "run", "schema"):
        assert command in result.stdout
    version = zae("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"zae-engine {__version__}"


def test_fast_commands_import_neither_torch_nor_add_ons():
    code = textwrap.dedent(
        """
        import contextlib, io, sys
        from zae_engine.cli import main
        for argv in (["--help"], ["--version"], ["addons", "list"], ["addons", "list", "--json"],
                     ["addons", "show", "state_manager"], ["schema"]):
            sys.argv = ["zae", *argv]
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    main()
                except SystemExit as exit:
                    assert not exit.code, (argv, exit.code)
        # Configs (zae_engine.trainer.addons.configs, zae_mpu.config, ...) are torch-free and allowed; add-ons are not
        implementations = ("zae_engine.trainer.addons.state_manager", "zae_engine.trainer.addons.ema",
                           "zae_engine.trainer.addons.early_stopping", "zae_engine.trainer.addons.tracking",
                           "zae_engine.trainer.loop", "zae_mpu.addon", "zae_wandb.addon", "zae_neptune.addon",
                           "zae_tensorboard.addon", "zae_mlflow.addon", "tensorboardX", "mlflow")
        heavy = [m for m in sys.modules if m == "torch" or m in implementations]
        print(heavy)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_addons_list_table_and_json():
    table = zae("addons", "list")
    assert table.returncode == 0
    assert "state_manager" in table.stdout and "zae-engine" in table.stdout and "ok" in table.stdout
    rows = json.loads(zae("addons", "list", "--json").stdout)
    assert all(list(row) == ["name", "description", "distribution", "version", "status", "error"] for row in rows)
    core = next(row for row in rows if row["name"] == "state_manager")
    assert core["status"] == "ok" and core["error"] is None and core["version"] == __version__


def test_addons_list_with_broken_plugin_installed_stays_correct():
    result = zae("addons", "list", env={"PYTHONPATH": str(BROKEN)})
    assert result.returncode == 0, result.stderr
    lines = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("│ ") and line.split()[1]}
    assert "broken: no module named 'zae_broken_fixture_gone'" in lines["ghost"]
    assert "broken:" in lines["missing_dep"] and "broken:" in lines["bad_config"]
    assert "incompatible:" in lines["future"]
    assert lines["state_manager"].rstrip(" │").endswith("ok")
    assert lines["crashing"].rstrip(" │").endswith("ok")  # fails only when run: `--check` (test_registry) finds it
    rows = {
        row["name"]: row for row in json.loads(zae("addons", "list", "--json", env={"PYTHONPATH": str(BROKEN)}).stdout)
    }
    assert rows["ghost"]["status"] == "broken" and rows["ghost"]["distribution"] == "zae-broken-fixture"
    assert rows["state_manager"]["status"] == "ok"


def test_addons_show_known_and_unknown():
    result = zae("addons", "show", "state_manager")
    assert result.returncode == 0
    assert "save_path" in result.stdout and "save_format" in result.stdout and "status: ok" in result.stdout
    unknown = zae("addons", "show", "state_manger")
    assert unknown.returncode == 1
    assert "unknown add-on 'state_manger' (did you mean 'state_manager'?)" in unknown.stderr


def test_schema_is_json_schema_that_accepts_the_examples_and_knows_add_on_keys():
    import jsonschema
    import yaml

    result = zae("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    sections = {"trainer", "device", "model", "optimizer", "scheduler", "data", "addons", "run", "sweep"}
    assert sections == set(schema["properties"])
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for example in [*(ROOT / "examples" / "specs").glob("*.yaml"), ROOT / "zae_engine" / "demo" / "quickstart.yaml"]:
        assert not list(validator.iter_errors(yaml.safe_load(example.read_text()))), example
    typo = yaml.safe_load(TINY) | {"addons": [{"name": "state_manager", "save_pth": "x"}]}
    assert any("'save_pth' was unexpected" in error.message for error in validator.iter_errors(typo))


def test_validate_accepts_a_good_spec(tiny):
    result = zae("validate", str(tiny()))
    assert result.returncode == 0, result.stderr
    assert "valid:" in result.stdout and "ToyTrainer" in result.stdout


@pytest.mark.parametrize(
    ("replace", "expected"),
    [
        ({"batch_size: 32}\n  valid": "batch_size: [32}\n  valid"}, "tiny.yaml:5: YAML syntax error"),
        (
            {"batch_size: 32}\n  valid": "batch_sise: 32}\n  valid"},
            "tiny.yaml:5: data.train.batch_sise: unknown key 'batch_sise' (did you mean 'batch_size'?)",
        ),
        (
            {"n_epoch: 1": "n_epoch: one"},
            "tiny.yaml:7: run.n_epoch: Input should be a valid integer, unable to parse string as an integer (got 'one')",
        ),
        (
            {"zae_engine.demo.toy.TinyNet": "zae_engine.demo.toyy.TinyNet"},
            "tiny.yaml:2: model.class_path: module not found: package 'zae_engine.demo' has no module 'toyy' (did you mean 'toy'?)",
        ),
        (
            {"zae_engine.demo.toy.TinyNet": "zae_engine.demo.toy.TinyNett"},
            "tiny.yaml:2: model.class_path: name not found: module 'zae_engine.demo.toy' has no attribute 'TinyNett' (did you mean 'TinyNet'?)",
        ),
        (
            {"run:": "addons: [{name: state_manger}]\nrun:"},
            "tiny.yaml:7: addons[0].name: unknown add-on 'state_manger' (did you mean 'state_manager'?)",
        ),
        (
            {"run:": "addons: [{name: state_manager, save_format: pickle}]\nrun:"},
            "tiny.yaml:7: addons[0].save_format: add-on 'state_manager': Input should be 'ckpt' or 'safetensors'",
        ),
    ],
    ids=[
        "yaml-syntax",
        "unknown-key",
        "wrong-type",
        "module-missing",
        "attribute-missing",
        "unknown-addon",
        "addon-field",
    ],
)
def test_validate_errors_are_one_message_without_traceback(tiny, replace, expected):
    result = zae("validate", str(tiny(**replace)))
    assert result.returncode == 1
    assert expected in result.stderr, result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_validate_missing_file_and_bad_set_key(tiny):
    missing = zae("validate", "no/such/spec.yaml")
    assert missing.returncode == 1 and "no/such/spec.yaml: no such spec file" in missing.stderr
    bad_set = zae("validate", str(tiny()), "--set", "run.n_epochs=2")
    assert bad_set.returncode == 1
    assert "--set run.n_epochs: unknown key 'n_epochs' (did you mean 'n_epoch'?)" in bad_set.stderr


def test_validate_names_a_plugin_that_fails_to_import(tiny):
    result = zae("validate", str(tiny(**{"run:": "addons: [{name: crashing}]\nrun:"})), env={"PYTHONPATH": str(BROKEN)})
    assert result.returncode == 1
    assert "add-on 'crashing' (from zae-broken-fixture 0.0.1" in result.stderr
    assert "is broken: importing its add-on class failed: ZeroDivisionError" in result.stderr


def test_run_without_spec_trains_the_demo(tmp_path):
    result = zae("run", "--set", "run.n_epoch=1", "--set", "trainer.init_args.log_bar=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "quickstart.yaml" in result.stdout and "epoch 1/1" in result.stdout
    assert "done: 1 epoch(s)" in result.stdout and "best valid/loss" in result.stdout


def test_run_trains_saves_checkpoints_and_hands_the_spec_to_trackers(tmp_path):
    (tmp_path / "recording.py").write_text(
        textwrap.dedent(
            """
            import json
            from zae_engine.demo.toy import ToyTrainer

            class RecordingTrainer(ToyTrainer):
                def run(self, *args, **kwargs):
                    with open("run_spec.json", "w") as handle:
                        json.dump(self.run_spec, handle)
                    return super().run(*args, **kwargs)
            """
        )
    )
    spec = tmp_path / "specs" / "run.yaml"
    spec.parent.mkdir()
    spec.write_text(
        TINY.replace("zae_engine.demo.toy.ToyTrainer", "recording.RecordingTrainer").replace(
            "run:", "addons: [{name: state_manager, save_path: '${ZAE_TEST_DIR}/ckpt'}]\nrun:"
        )
    )
    result = zae("run", str(spec), "--set", "run.n_epoch=2", cwd=tmp_path, env={"ZAE_TEST_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "done: 2 epoch(s)" in result.stdout
    assert f"checkpoints: {tmp_path / 'ckpt'}" in result.stdout
    assert any((tmp_path / "ckpt").iterdir())
    recorded = json.loads((tmp_path / "run_spec.json").read_text())
    assert recorded["run"]["n_epoch"] == 2
    assert recorded["addons"] == [{"name": "state_manager", "save_path": "${ZAE_TEST_DIR}/ckpt"}]  # no expansion


def test_run_error_exits_1_with_one_message(tiny):
    spec = tiny(**{"TinyNet, init_args: {hidden: 8}": "TinyNet, init_args: {hidden: -1}"})
    result = zae("run", str(spec))
    assert result.returncode == 1
    assert "tiny.yaml:2: model: building zae_engine.demo.toy.TinyNet(hidden=-1) failed: RuntimeError" in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tiny):
    result = zae("--debug", "validate", str(tiny(**{"n_epoch: 1": "n_epoch: one"})))
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr and "run.n_epoch" in result.stderr


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_after_the_step_and_exits_128_plus_signal(tmp_path, sig, code):
    (tmp_path / "slow.py").write_text(
        textwrap.dedent(
            """
            import time
            from zae_engine.demo.toy import ToyTrainer

            class SlowTrainer(ToyTrainer):
                def train_step(self, batch):
                    time.sleep(0.02)
                    return super().train_step(batch)
            """
        )
    )
    spec = tmp_path / "slow.yaml"
    spec.write_text(
        TINY.replace("zae_engine.demo.toy.ToyTrainer", "slow.SlowTrainer").replace("n_epoch: 1", "n_epoch: 1000")
    )
    env = {**os.environ, "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [*ZAE, "run", str(spec)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        for line in process.stdout:
            if line.startswith("epoch 1/1000"):
                break
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == code, stderr
    assert f"interrupted: training stopped by {sig.name}" in stderr
    assert "stopped: " in stdout and "Traceback" not in stderr


def test_launcher_flags_build_the_torchrun_command():
    single = torchrun_command(LaunchOptions(nproc_per_node=2), "s.yaml", ["run.n_epoch=1"])
    assert single == [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
        "-m", "zae_engine.cli", "run", "s.yaml", "--set", "run.n_epoch=1",
    ]  # fmt: skip
    multi = torchrun_command(
        LaunchOptions(nproc_per_node=4, nnodes="2", node_rank=1, master_addr="10.0.0.1", master_port=29400),
        "s.yaml",
        [],
        debug=True,
    )
    assert multi == [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "4", "--nnodes", "2", "--node-rank", "1",
        "--master-addr", "10.0.0.1", "--master-port", "29400", "-m", "zae_engine.cli", "--debug", "run", "s.yaml",
    ]  # fmt: skip
    assert not LaunchOptions().wanted


def test_run_under_torchrun_with_one_process(tiny):
    spec = tiny()
    result = zae("run", str(spec), "--nproc-per-node", "1", cwd=spec.parent)
    assert result.returncode == 0, result.stderr
    assert "done: 1 epoch(s)" in result.stdout


def test_addons_show_prints_the_config_as_it_validates():
    from typer.testing import CliRunner

    from zae_engine.cli.app import app
    from zae_engine.trainer.addons.configs import StateManagerConfig

    result = CliRunner().invoke(app, ["addons", "show", "state_manager"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert '"ckpt" | "safetensors"' in result.output and "integer ≥ -1" in result.output
    assert '"./checkpoints"' in result.output
    shown = CliRunner().invoke(app, ["addons", "show", "state_manager", "--json"])
    assert json.loads(shown.output) == StateManagerConfig.model_json_schema()
