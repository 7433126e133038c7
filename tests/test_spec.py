"""Run specs in-process: parsing with line numbers, env interpolation, --set, validation, class paths, building."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch

from zae_engine.spec import RunSpec, SpecError, load_spec
from zae_engine.spec.build import build_run, check_spec
from zae_engine.spec.schema import spec_json_schema

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples" / "specs").glob("*.yaml"))

SPEC = """\
trainer: {class_path: zae_engine.demo.toy.ToyTrainer, init_args: {gradient_clip: 1.0}}
device: cpu
model: {class_path: zae_engine.demo.toy.TinyNet, init_args: {in_features: 10, hidden: 8}}
optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.1}}
scheduler: {class_path: zae_engine.schedulers.CosineAnnealingScheduler, init_args: {total_iters: 2}}
data:
  train:
    dataset: {class_path: zae_engine.demo.toy.RandomDataset, init_args: {size: 64}}
    batch_size: 16
    shuffle: true
  valid:
    dataset: {class_path: zae_engine.demo.toy.RandomDataset, init_args: {size: 32, seed: 1}}
    batch_size: 32
addons:
  - {name: state_manager, save_path: "${ZAE_TEST_RUNS:-runs}/toy"}
run: {n_epoch: 2, seed: 3}
"""


@pytest.fixture
def spec_file(tmp_path, monkeypatch):
    """Write a spec (SPEC with replacements) in a folder of its own; the cwd is tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # class-path roots added by check_spec are undone

    def write(text: str = SPEC, name: str = "spec.yaml", **replace: str) -> Path:
        for old, new in replace.items():
            assert old in text, old
            text = text.replace(old, new)
        folder = tmp_path / "specs"
        folder.mkdir(exist_ok=True)
        path = folder / name
        path.write_text(text)
        return path

    return write


def problem(path: Path, *overrides: str) -> str:
    with pytest.raises(SpecError) as caught:
        spec, source = load_spec(path, list(overrides))
        check_spec(spec, source)
    return str(caught.value)


def test_valid_spec_builds_a_ready_trainer(spec_file, tmp_path):
    spec, source = load_spec(spec_file())
    plan = check_spec(spec, source)
    built = build_run(plan)
    trainer = built.trainer
    assert type(trainer).__name__ == "ToyTrainer"  # one entry, one add-on instance: the class stays the user's
    assert [type(a).__name__ for a in trainer.addons.values()] == ["StateManagerAddon", "RunLogAddon"]  # + the record
    assert trainer.gradient_clip == 1.0
    assert trainer.optimizer.param_groups[0]["params"] == list(trainer.model.parameters())  # injected
    assert trainer.scheduler.optimizer is trainer.optimizer  # injected
    assert trainer.addons["state_manager"].config.save_path == "runs/toy"  # ${ZAE_TEST_RUNS:-runs} default
    assert built.loader.batch_size == 16 and built.valid_loader.batch_size == 32
    assert built.n_epoch == 2
    trainer.run(built.n_epoch, built.loader, built.valid_loader)
    assert len(trainer.history) == 2
    assert (tmp_path / "runs" / "toy").is_dir()


def test_seed_makes_builds_identical(spec_file):
    path = spec_file()
    weights = []
    for _ in range(2):
        spec, source = load_spec(path, ["addons=[]"])
        built = build_run(check_spec(spec, source))
        weights.append(next(iter(built.trainer.model.parameters())).detach().clone())
        weights.append(next(iter(built.loader))[0])
    assert torch.equal(weights[0], weights[2]) and torch.equal(weights[1], weights[3])


def test_run_spec_is_plain_data_without_secrets(spec_file, monkeypatch):
    monkeypatch.setenv("ZAE_TEST_RUNS", "/secret/place")
    spec, source = load_spec(spec_file(), ["run.n_epoch=1"])
    assert spec.addons[0].options["save_path"] == "/secret/place/toy"
    data = check_spec(spec, source).run_spec
    assert data["addons"] == [{"name": "state_manager", "save_path": "${ZAE_TEST_RUNS:-runs}/toy"}]
    assert data["run"] == {"n_epoch": 1, "seed": 3, "deterministic": False, "record": True}
    assert data["trainer"]["init_args"]["gradient_clip"] == 1.0


def test_missing_environment_variable_is_named(spec_file):
    path = spec_file(**{"${ZAE_TEST_RUNS:-runs}": "${ZAE_TEST_NOT_SET_ANYWHERE}"})
    message = problem(path)
    assert "spec.yaml:15: addons[0].save_path: environment variable 'ZAE_TEST_NOT_SET_ANYWHERE' is not set" in message


@pytest.mark.parametrize(
    ("replace", "expected"),
    [
        ({"batch_size: 16": "batch_size: [16"}, r"spec.yaml:1\d: YAML syntax error"),
        (
            {"batch_size: 16": "batch_sise: 16"},
            r"spec.yaml:9: data.train.batch_sise: unknown key 'batch_sise' \(did you mean 'batch_size'\?\)",
        ),
        (
            {"batch_size: 16": "batch_size: lots"},
            r"spec.yaml:9: data.train.batch_size: Input should be a valid integer",
        ),
        (
            {"device: cpu": "device: 3"},
            r"spec.yaml:2: device: Input should be a valid string or Input should be a valid list \(got 3\)",
        ),
        (
            {"gradient_clip: 1.0": "gradient_clipp: 1.0"},
            r"spec.yaml:1: trainer.init_args.gradient_clipp: unknown key .*did you mean 'gradient_clip'",
        ),
        ({"run: {n_epoch: 2, seed: 3}": "run: {seed: 3}"}, r"spec.yaml:16: run.n_epoch: required, but missing"),
        (
            {"shuffle: true\n": "shuffle: true\n    shuffle: false\n"},
            r"spec.yaml:11: data.train.shuffle: written twice",
        ),
        (
            {"zae_engine.demo.toy.TinyNet": "zae_engine.demo.toyy.TinyNet"},
            r"spec.yaml:3: model.class_path: module not found: package 'zae_engine.demo' has no module 'toyy' \(did you mean 'toy'\?\)",
        ),
        (
            {"zae_engine.demo.toy.TinyNet": "zae_engine.demo.toy:TinyNett"},
            r"spec.yaml:3: model.class_path: name not found: module 'zae_engine.demo.toy' has no attribute 'TinyNett' \(did you mean 'TinyNet'\?\)",
        ),
        (
            {"zae_engine.demo.toy.TinyNet": "no_such_top_level_pkg.Net"},
            r"model.class_path: module not found: no module named 'no_such_top_level_pkg'; class paths are imported from the current directory",
        ),
        (
            {"hidden: 8": "hiden: 8"},
            r"spec.yaml:3: model.init_args.hiden: TinyNet takes no argument 'hiden' \(did you mean 'hidden'\?\)",
        ),
        ({"lr: 0.1": "lrr: 0.1"}, r"optimizer.init_args.lrr: SGD takes no argument 'lrr' \(did you mean 'lr'\?\)"),
        (
            {"name: state_manager,": "name: state_manger,"},
            r"spec.yaml:15: addons\[0\].name: unknown add-on 'state_manger' \(did you mean 'state_manager'\?\)",
        ),
        (
            {"save_path:": "save_format: pickle, save_path:"},
            r"spec.yaml:15: addons\[0\].save_format: add-on 'state_manager': Input should be 'ckpt' or 'safetensors'",
        ),
        (
            {"save_path:": "save_pth:"},
            r"addons\[0\].save_pth: add-on 'state_manager': unknown key 'save_pth' \(did you mean 'save_path'\?\)",
        ),
        ({"device: cpu": "device: [cpu, cpu]"}, r"spec.yaml:2: device: 2 devices need a launcher add-on"),
        (
            {
                '- {name: state_manager, save_path: "${ZAE_TEST_RUNS:-runs}/toy"}': "- {name: ema}\n  - {name: ema, decay: 0.9}"
            },
            r"spec.yaml:16: addons\[1\]: add-on 'ema' is listed twice: here and as addons\[0\] \(.*spec.yaml:15\)",
        ),
        (
            {"name: state_manager,": "class_path: torch.nn.Linear,"},
            r"spec.yaml:15: addons\[0\].class_path: torch.nn.Linear is not an add-on class",
        ),
        (
            {"name: state_manager,": "name: state_manager, class_path: x.Y,"},
            r"spec.yaml:15: addons\[0\]: .*give the add-on's registry `name` or a `class_path` \(exactly one of them\)",
        ),
        (
            {"zae_engine.demo.toy.ToyTrainer": "torch.nn.Linear"},
            r"trainer.class_path: torch.nn.Linear is not a subclass of Trainer",
        ),
    ],
)
def test_each_bad_input_gets_one_message_with_line_field_and_fix(spec_file, replace, expected):
    import re

    message = problem(spec_file(**replace))
    assert re.search(expected, message), message


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("run.n_epochs=3", "--set run.n_epochs: unknown key 'n_epochs' (did you mean 'n_epoch'?)"),
        ("data.train.batch_size=x", "--set data.train.batch_size: Input should be a valid integer"),
        ("addons.state_manger.save_path=x", "--set addons.state_manger.save_path: no entry named 'state_manger'"),
        ("addons.3.save_path=x", "'addons' has 1 entries; there is no [3]"),
        ("device.kind=cpu", "--set device.kind: 'device' is 'cpu', not a section"),
        ("run.n_epoch", "--set run.n_epoch: expected key.path=value"),
        ("model.init_args.hiden=3", "--set model.init_args.hiden: TinyNet takes no argument 'hiden'"),
    ],
)
def test_bad_set_options_name_the_option(spec_file, override, expected):
    assert expected in problem(spec_file(), override)


def test_set_options_apply_yaml_values_by_path_and_addon_name(spec_file):
    spec, _ = load_spec(
        spec_file(),
        [
            "run.n_epoch=5",
            "device=[cpu]",
            "addons.state_manager.save_format=safetensors",
            "trainer.init_args.log_bar=false",
        ],
    )
    assert spec.run.n_epoch == 5 and spec.device == ["cpu"]
    assert spec.addons[0].options["save_format"] == "safetensors"
    assert spec.trainer.init_args.log_bar is False


def test_numbers_with_an_exponent_are_floats_in_files_and_in_set_options(spec_file):
    """YAML 1.1 (PyYAML) reads `1e-4` as text; a learning rate written so must not reach the optimizer as a string."""
    path = spec_file(**{"lr: 0.1": "lr: 1e-4, momentum: 9E-1"})
    spec, _ = load_spec(path)
    assert spec.optimizer.init_args == {"lr": 1e-4, "momentum": 0.9}
    spec, _ = load_spec(path, ["optimizer.init_args.lr=1e-05", "run.seed=2e3"])
    assert spec.optimizer.init_args["lr"] == 1e-05 and isinstance(spec.optimizer.init_args["lr"], float)
    assert "Input should be a valid integer" in problem(path, "run.seed=2.5e0")


def test_class_paths_resolve_from_the_spec_folder(spec_file, tmp_path):
    path = spec_file(**{"zae_engine.demo.toy.TinyNet": "beside_spec_model:Net", "hidden: 8": "width: 4"})
    (path.parent / "beside_spec_model.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            class Net(nn.Sequential):
                def __init__(self, in_features, width):
                    super().__init__(nn.Linear(in_features, width), nn.Linear(width, 2))
            """
        )
    )
    spec, source = load_spec(path)
    plan = check_spec(spec, source)
    assert type(build_run(plan).trainer.model).__name__ == "Net"


def test_one_entry_builds_one_addon_with_exactly_its_own_options(spec_file):
    path = spec_file(
        **{
            'save_path: "${ZAE_TEST_RUNS:-runs}/toy"}': 'save_path: "runs/toy", monitor: valid/acc, monitor_mode: max}\n'
            "  - {name: early_stopping, monitor: valid/loss, patience: 2}"
        }
    )
    spec, source = load_spec(path)
    trainer = build_run(check_spec(spec, source)).trainer
    assert trainer.addon("state_manager").config.monitor == "valid/acc"
    assert trainer.addon("early_stopping").config.monitor == "valid/loss"  # nothing shared between entries


LOCAL_ADDON = '''
from zae_engine.trainer.addons import AddOnBase, AddOnConfig


class EveryConfig(AddOnConfig):
    """Counts epochs."""

    every: int = 1


class Counter(AddOnBase):
    name = "counter"
    Config = EveryConfig

    def on_epoch_end(self, epoch, summary):
        summary["counted"] = epoch * self.config.every
'''


def test_a_local_addon_class_by_class_path(spec_file, tmp_path):
    path = spec_file(
        **{'name: state_manager, save_path: "${ZAE_TEST_RUNS:-runs}/toy"': "class_path: my_addons.Counter, every: 3"}
    )
    (path.parent / "my_addons.py").write_text(LOCAL_ADDON)
    spec, source = load_spec(path)
    built = build_run(check_spec(spec, source))
    built.trainer.run(built.n_epoch, built.loader, built.valid_loader)
    assert [h["counted"] for h in built.trainer.history] == [3, 6]
    message = problem(path, "addons.0.evry=2")
    assert "addons[0].evry: add-on 'counter': unknown key 'evry' (did you mean 'every'?)" in message


def test_missing_file_suggests_a_close_name(spec_file):
    path = spec_file()
    with pytest.raises(SpecError, match=r"spec.yam: no such spec file"):
        load_spec(path.with_name("spec.yam"))
    with pytest.raises(SpecError, match=r"sepc.yaml: no such spec file \(did you mean 'spec.yaml'\?\)"):
        load_spec(path.with_name("sepc.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_specs_validate(example, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))
    spec, source = load_spec(example)
    plan = check_spec(spec, source)
    assert plan.spec.run.n_epoch >= 1


def test_schema_describes_every_section():
    from zae_engine.registry import addon_config

    config = addon_config("state_manager")
    schema = spec_json_schema({"state_manager": config})
    assert set(schema["properties"]) == set(RunSpec.model_fields)
    assert set(schema["required"]) == {"trainer", "model", "data", "run"}
    trainer_args = schema["$defs"]["TrainerArgs"]["properties"]
    assert {"gradient_clip", "precision", "mode"} <= set(trainer_args)
    entry = schema["$defs"]["AddOnEntry"]
    assert entry["properties"]["name"]["examples"] == ["state_manager"]
    (rule,) = entry["allOf"]
    assert rule["if"]["properties"]["name"] == {"const": "state_manager"}
    own = schema["$defs"][rule["then"]["$ref"].rsplit("/", 1)[1]]
    assert own["additionalProperties"] is False and own["properties"]["name"] == {"const": "state_manager"}
    # every option is described exactly as the add-on's Config describes it: enums, bounds, defaults
    for key, prop in config.model_json_schema()["properties"].items():
        assert own["properties"][key] == prop, key
    assert own["properties"]["save_format"]["enum"] == ["ckpt", "safetensors"]
    assert own["properties"]["save_top_k"]["minimum"] == -1
