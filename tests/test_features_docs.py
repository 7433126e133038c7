"""docs/features.md: its Python example runs, and its spec validates, builds and trains through the spec machinery."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "features.md"
ROOT = DOC.parents[1]


def blocks(mark: str, lang: str) -> list[str]:
    return re.findall(rf"<!-- {mark} -->\n```{lang}\n(.*?)\n```", DOC.read_text(encoding="utf-8"), re.DOTALL)


def test_the_python_example_runs(capsys):
    (code,) = blocks("run", "python")
    namespace: dict = {"__name__": "features_doc"}
    exec(compile(code, str(DOC), "exec"), namespace)
    trainer = namespace["trainer"]
    assert {"ema", "early_stopping"} <= set(trainer.addons)
    assert 1 <= len(trainer.history) <= 20
    assert trainer.history[-1]["valid/acc"] > 0.8


def test_the_spec_example_validates_builds_and_trains(tmp_path, monkeypatch):
    from zae_engine.spec import load_spec
    from zae_engine.spec.build import build_run, check_spec

    (text,) = blocks("spec", "yaml")
    spec_file = tmp_path / "features.yaml"
    spec_file.write_text(text.replace("n_epoch: 20", "n_epoch: 2"), encoding="utf-8")
    monkeypatch.chdir(ROOT)  # class paths like examples.toy.ToyTrainer resolve from the repository root
    spec, source = load_spec(spec_file)
    built = build_run(check_spec(spec, source))
    trainer = built.trainer
    assert (trainer.precision, trainer.grad_accum_steps, trainer.gradient_clip) == ("bf16", 4, 1.0)
    assert trainer.addon("ema").config.evaluate_with_ema
    assert trainer.addon("early_stopping").config.monitor == "valid/acc"
    trainer.run(built.n_epoch, built.loader, built.valid_loader)
    assert trainer.addon("ema").updates == 2 * 7  # 28 batches of 16 per epoch -> 7 optimizer steps
