"""The `sweep:` section is checked like the rest of a spec: every parameter's path and edge values, before any trial.

Also: the search space reaches trials as typed values, `best.yaml` round-trips them, and `optimize()` from Python.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from zae_engine.spec import SpecError
from zae_engine.spec.bounded_yaml import load as load_yaml

ROOT = Path(__file__).resolve().parents[1]
_SCRIPT = Path(sys.executable).with_name("zae")
ZAE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "zae_engine.cli"]

BASE = """\
trainer: {class_path: zae_engine.demo.toy.ToyTrainer, init_args: {log_bar: false}}
device: cpu
model: {class_path: zae_engine.demo.toy.TinyNet, init_args: {hidden: 16}}
optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.1}}
data:
  train: {dataset: {class_path: zae_engine.demo.toy.RandomDataset, init_args: {size: 64}}, batch_size: 16}
  valid: {dataset: {class_path: zae_engine.demo.toy.RandomDataset, init_args: {size: 32, seed: 1}}, batch_size: 32}
addons:
  - {name: early_stopping, patience: 2}
run: {n_epoch: 1, seed: 0}
"""


def write(folder: Path, params: str, extra: str = "", name: str = "spec.yaml") -> Path:
    sweep = (
        "sweep:\n  metric: valid/acc\n  direction: maximize\n" + extra + "  params:\n" + textwrap.indent(params, "    ")
    )
    path = folder / name
    path.write_text(BASE + sweep)
    return path


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def problems(path: Path, sampler: str | None = None) -> list[str]:
    from zae_engine.sweep.checks import load_sweep

    with pytest.raises(SpecError) as caught:
        load_sweep(path, sampler=sampler)
    return caught.value.lines


def test_a_good_space_loads_and_its_values_reach_the_spec_typed(tmp_path):
    from zae_engine.sweep.checks import load_sweep

    path = write(
        tmp_path,
        "optimizer.init_args.lr: {log_float: [1e-5, 1.0e-1]}\n"  # 1e-5: a float, although YAML 1.1 reads it as text
        "model.init_args.hidden: {int: [8, 32], step: 8}\n"
        "addons.early_stopping.patience: {choice: [1, 3]}\n"
        "optimizer.init_args.momentum: {float: [0.0, 0.9], step: 0.3}\n",
    )
    plan = load_sweep(path)
    assert plan.sweep.params["optimizer.init_args.lr"].bounds == (1e-5, 0.1)
    source = plan.with_values({"optimizer.init_args.lr": 1e-05, "model.init_args.hidden": 24})
    assert source.data["optimizer"]["init_args"]["lr"] == 1e-05 and "sweep" not in source.data
    assert isinstance(source.data["optimizer"]["init_args"]["lr"], float)


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        ("model.init_args.hiden: {int: [8, 32]}", "TinyNet takes no argument 'hiden' (did you mean 'hidden'?)"),
        ("optimiser.init_args.lr: {log_float: [1.0e-4, 0.1]}", "unknown key 'optimiser' (did you mean 'optimizer'?)"),
        ("addons.ema.decay: {float: [0.9, 0.99]}", "no entry named 'ema' in 'addons'"),
        ("data.train.batch_size: {int: [0, 32]}", "the low bound 0 is refused"),
        ("optimizer.init_args.lr: {float: [-0.1, 0.1]}", "the low bound -0.1 is refused"),
        ("model.init_args.hidden: {choice: [16, -4]}", "the choice -4 is refused"),
        ("addons.early_stopping.patience: {int: [0, 3]}", "the low bound 0 is refused"),
        ("trainer.init_args.precision: {choice: [fp32, fp8]}", "the choice 'fp8' is refused"),
        ("optimizer.init_args.lr: {choice: [0.1, 1e-3, text]}", "the choice 'text' is refused"),
        ("run.n_epoch: {int: [-2, 3]}", "the low bound -2 is refused"),
        ("data.train.dataset.init_args.size: {choice: [64, many]}", "the choice 'many' is refused"),
    ],
)
def test_a_path_or_value_the_spec_refuses_is_an_error_at_the_parameter_line(tmp_path, param, expected):
    path = write(tmp_path, param)
    (line,) = problems(path)
    key = param.split(":")[0]
    assert line.startswith(f"{path}:{line_of(path, key + ':')}: sweep.params.{key}: "), line
    assert expected in line, line


def test_refusals_say_why_in_the_fields_own_words(tmp_path):
    (lr,) = problems(write(tmp_path, "optimizer.init_args.lr: {float: [-0.1, 0.1]}"))
    assert "torch.optim.SGD(lr=-0.1) fails: ValueError: Invalid learning rate: -0.1" in lr
    (width,) = problems(write(tmp_path, "model.init_args.hidden: {choice: [16, -4]}"))
    assert "TinyNet(hidden=-4) fails" in width
    (batch,) = problems(write(tmp_path, "data.train.batch_size: {int: [0, 32]}"))
    assert "data.train.batch_size: Input should be greater than or equal to 1" in batch
    (size,) = problems(write(tmp_path, "data.train.dataset.init_args.size: {choice: [64, many]}"))
    assert "RandomDataset: Input should be a valid integer" in size  # by its annotation; datasets are not built


def test_the_form_of_each_parameter_is_checked(tmp_path):
    cases = {
        "a.b: {int: [16, 130], step: 16}": "make hi 128 or 144",
        "a.b: {log_float: [0, 1]}": "a log scale needs lo > 0",
        "a.b: {float: [1, 1]}": "lo must be below hi",
        "a.b: {choice: [1, 1]}": "1 is listed twice",
        "a.b: {uniform: [1, 2]}": "a search parameter is exactly one of {log_float",
        "a.b: {int: [1, 2], choice: [3]}": "a search parameter is exactly one of",
        "a.b: {int: [1.5, 2]}": "Input should be a valid integer",
    }
    for param, expected in cases.items():
        path = write(tmp_path, param)
        lines = problems(path)
        assert any(expected in line and line.startswith(f"{path}:") for line in lines), (param, lines)


def test_sweep_section_fields_and_the_grid_sampler_are_checked(tmp_path):
    path = write(tmp_path, "optimizer.init_args.lr: {log_float: [1.0e-4, 0.1]}", extra="  sampler: grid\n")
    (line,) = problems(path)
    assert (
        "the grid sampler needs a finite set of values" in line
        and f":{line_of(path, 'optimizer.init_args.lr:')}:" in line
    )
    path = write(tmp_path, "optimizer.init_args.lr: {log_float: [1.0e-4, 0.1]}", extra="  direction: up\n")
    assert any("duplicate" in line or "written twice" in line for line in problems(path))
    path = write(tmp_path, "optimizer.init_args.lr: {log_float: [1.0e-4, 0.1]}", extra="  objectve: best\n")
    assert any("unknown key 'objectve' (did you mean 'objective'?)" in line for line in problems(path))
    path = write(tmp_path, "model.init_args: {choice: [{hidden: 8}]}\nmodel.init_args.hidden: {int: [8, 16]}\n")
    assert any("lies inside sweep.params.model.init_args" in line for line in problems(path))


def test_a_yaml_1_1_text_number_among_choices_gets_a_hint(tmp_path):
    # a plain spec: `1e-4` is now read as a float everywhere (see test_spec); quoted, it stays text and is refused
    (line,) = problems(write(tmp_path, "optimizer.init_args.lr: {choice: [0.1, '1e-4']}"))
    assert "YAML reads 1e-4 as text; write it with a dot, e.g. 1.0e-4" in line


def test_sections_whole_values_are_choices_too(tmp_path):
    from zae_engine.sweep.checks import load_sweep
    from zae_engine.sweep.space import ChoiceParam

    path = write(
        tmp_path,
        "optimizer: {choice: [{class_path: torch.optim.SGD, init_args: {lr: 0.1}}, "
        "{class_path: torch.optim.Adam, init_args: {lr: 0.01}}]}",
    )
    param = load_sweep(path).sweep.params["optimizer"]
    assert isinstance(param, ChoiceParam) and param.encoded
    stored = param.stored()
    assert all(isinstance(s, str) for s in stored) and param.decode(stored[1])["class_path"] == "torch.optim.Adam"
    bad = write(
        tmp_path,
        "optimizer: {choice: [{class_path: torch.optim.SGD, init_args: {lr: 0.1}}, {class_path: torch.optim.Adamm}]}",
    )
    (line,) = problems(bad)
    assert "the choice" in line and "has no attribute 'Adamm' (did you mean 'Adam'?)" in line


def test_a_sweep_file_names_the_spec_and_its_errors_point_at_the_right_file(tmp_path):
    from zae_engine.sweep.checks import load_sweep

    (tmp_path / "run.yaml").write_text(BASE)
    sweep_file = tmp_path / "search.yaml"
    sweep_file.write_text(
        "spec: run.yaml\nsweep:\n  metric: valid/acc\n  direction: maximize\n  params:\n"
        "    optimizer.init_args.lr: {log_float: [1.0e-4, 0.1]}\n"
    )
    plan = load_sweep(sweep_file)
    assert plan.source.path == tmp_path / "run.yaml" and plan.sweep.metric == "valid/acc"
    sweep_file.write_text(sweep_file.read_text() + "    model.init_args.hiden: {int: [8, 16]}\n")
    (line,) = problems(sweep_file)
    assert line.startswith(f"{sweep_file}:7: sweep.params.model.init_args.hiden: ")
    sweep_file.write_text("spec: missing.yaml\nsweep: {}\n")
    (line,) = problems(sweep_file)
    assert line.startswith(f"{sweep_file}:1: spec: ") and "no such spec file" in line
    sweep_file.write_text(
        "spec: run.yaml\nsweep: {metric: x, direction: maximize, params: {a: {int: [1, 2]}}}\nrun: {}\n"
    )
    (line,) = problems(sweep_file)
    assert "unknown key in a sweep file" in line and line.startswith(f"{sweep_file}:3:")


def test_zae_validate_checks_the_space_and_zae_run_ignores_it(tmp_path):
    good = write(tmp_path, "optimizer.init_args.lr: {log_float: [1.0e-4, 0.1]}", name="good.yaml")
    result = subprocess.run([*ZAE, "validate", str(good)], cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    assert "sweep: 1 parameter(s), valid/acc (maximize)" in result.stdout
    bad = write(tmp_path, "optimizer.init_args.lr: {float: [-1.0, 0.1]}", name="bad.yaml")
    result = subprocess.run([*ZAE, "validate", str(bad)], cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (
        f"bad.yaml:{line_of(bad, 'optimizer.init_args.lr:')}: sweep.params.optimizer.init_args.lr: the low bound -1.0 is refused"
        in result.stderr
    )
    ran = subprocess.run(
        [*ZAE, "run", str(good), "--no-record"], cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    assert ran.returncode == 0 and "done: 1 epoch(s)" in ran.stdout, ran.stderr


def test_the_schema_describes_the_sweep_section():
    from zae_engine.spec.schema import spec_json_schema

    schema = spec_json_schema()
    sweep = schema["$defs"]["SweepSpec"]
    assert {"metric", "direction", "objective", "params", "trials", "sampler", "pruner", "seed"} <= set(
        sweep["properties"]
    )
    assert sweep["properties"]["objective"]["default"] == "last"
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    example = yaml.safe_load((ROOT / "examples" / "specs" / "sweep.yaml").read_text())
    assert not list(validator.iter_errors(example))
    example["sweep"]["params"]["x.y"] = {"lgo_float": [1, 2]}
    assert list(validator.iter_errors(example))


def test_best_yaml_writes_floats_that_read_back_as_the_same_floats():
    from zae_engine.sweep.best import yaml as best_yaml

    values = [1e-05, 0.1 + 0.2, 3e-300, 1.0, 123456789.123456789, 2.5e16]
    text = best_yaml.safe_dump({"lr": values})
    assert load_yaml(text)["lr"] == values and yaml.safe_load(text)["lr"] == values  # also plain YAML 1.1 readers


def test_optimize_from_python_searches_prunes_and_records_failures():
    import optuna
    import torch
    from torch.utils.data import DataLoader

    from zae_engine.demo.toy import RandomDataset, TinyNet, ToyTrainer
    from zae_engine.sweep import optimize

    train_data, valid_data = RandomDataset(120), RandomDataset(100, seed=1)
    seen = []

    def train(values, pruning):
        seen.append(values)
        if values["hidden"] == 24:
            raise RuntimeError("no width 24 today")
        torch.manual_seed(0)
        model = TinyNet(hidden=values["hidden"])
        optimizer = torch.optim.SGD(model.parameters(), lr=values["lr"], momentum=0.9)
        trainer = ToyTrainer(model, "cpu", "train", optimizer, addons=[pruning], log_bar=False)
        trainer.run(3, DataLoader(train_data, batch_size=20), DataLoader(valid_data, batch_size=100))
        return trainer

    with pytest.warns(RuntimeWarning, match="no width 24 today"):
        study = optimize(
            train,
            {"lr": {"choice": [1e-06, 0.1]}, "hidden": {"choice": [16, 24]}},
            metric="valid/acc",
            direction="maximize",
            sampler="grid",
            trials=10,  # a grid of 4: the total is 4
            pruner={"name": "median", "startup_trials": 1},
            seed=0,
        )
    assert len(study.trials) == 4 and {json.dumps(v, sort_keys=True) for v in seen} == {
        json.dumps({"hidden": h, "lr": lr}, sort_keys=True) for h in (16, 24) for lr in (1e-06, 0.1)
    }
    by_params = {(t.params["lr"], t.params["hidden"]): t for t in study.trials}
    assert by_params[(1e-06, 24)].state == by_params[(0.1, 24)].state == optuna.trial.TrialState.FAIL
    assert by_params[(0.1, 24)].user_attrs["zae.error"] == "RuntimeError: no width 24 today"
    good, bad = by_params[(0.1, 16)], by_params[(1e-06, 16)]
    assert good.state == optuna.trial.TrialState.COMPLETE and good.value > 0.75
    first = min((good, bad), key=lambda t: t.number)
    if first is good:  # the slow rate ran second, against a finished trial: pruned after its first epoch
        assert bad.state == optuna.trial.TrialState.PRUNED and sorted(bad.intermediate_values) == [1]
    assert not math.isnan(study.best_value) and study.best_params == {"lr": 0.1, "hidden": 16}


def test_the_pruning_add_on_refuses_a_missing_trial_and_a_wrong_monitor():
    from zae_engine.errors import ConfigError, MissingMetricError
    from zae_engine.testing import make_loader, make_trainer
    from zae_engine.trainer.addons import OptunaPruningAddon

    with pytest.raises(ConfigError, match="trial"):
        OptunaPruningAddon(monitor="valid/acc")
    with pytest.raises(ConfigError, match="expected an optuna.trial.Trial"):
        OptunaPruningAddon(trial="trial 3")
    import optuna

    study = optuna.create_study(direction="minimize")
    trainer = make_trainer(OptunaPruningAddon(trial=study.ask(), monitor="valid/accuracy"))
    with pytest.raises(MissingMetricError, match="monitor 'valid/accuracy' is not in the epoch summary"):
        trainer.run(1, make_loader())


def test_database_passwords_never_reach_messages_or_records():
    from zae_engine.sweep.study import redacted

    assert redacted("postgresql://optuna:s3cret@db.example.org:5432/optuna") == (
        "postgresql://optuna:***@db.example.org:5432/optuna"
    )
    assert redacted("--storage=mysql+pymysql://me:p%40ss@host/db") == "--storage=mysql+pymysql://me:***@host/db"
    assert redacted("sqlite:///runs/sweep.db") == "sqlite:///runs/sweep.db"
    assert redacted("runs/sweeps/x/optuna.journal") == "runs/sweeps/x/optuna.journal"
