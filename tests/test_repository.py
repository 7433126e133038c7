"""The repository keeps its promises: CI runs the README's test command, the README's code runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_ci_runs_the_readme_test_command():
    quickstart = README.split("## Quickstart", 1)[1].split("### ", 1)[0]
    commands = [block.strip() for block in bash_blocks(quickstart)]
    assert len(commands) == 2, "the Quickstart is exactly two commands"
    test_command = commands[1].split("&& pip install torch==2.13.0", 1)[1]
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert any(line.strip() == "pip install torch==2.13.0" + test_command for line in ci_lines)
    assert "pytest" in test_command
    assert commands[0].endswith("zae run")


def test_every_install_command_pins_torch_first():
    for block in bash_blocks(README):
        for line in block.splitlines():
            if "pip install" in line and "-e ." in line:
                assert "pip install torch==2.13.0 &&" in line, line


def test_readme_python_example_runs(tmp_path):
    """Both blocks of "From Python": the seeds' `add_on` style, then the same script with configured instances."""
    section = README.split("## From Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2
    code = "\n".join(blocks).replace("n_epoch=10", "n_epoch=2").replace('"runs/quick"', repr(str(tmp_path / "quick")))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "'valid/acc'" in result.stdout and "['state_manager', 'early_stopping']" in result.stdout
    assert (tmp_path / "quick" / "manifest.json").is_file()
    assert (tmp_path / "runs" / "by-acc" / "manifest.json").is_file()


def test_readme_addon_example_composes_and_prints(tmp_path):
    block = re.search(r"\*\*Write your own\*\*.*?```python\n(.*?)```", README, flags=re.S).group(1)
    code = (
        block
        + """
import torch
from torch import nn
from zae_engine.trainer import Trainer

class T(Trainer):
    def train_step(self, batch):
        return {"loss": self.model(batch[0]).pow(2).mean()}
    def test_step(self, batch):
        return self.train_step(batch)

model = nn.Linear(3, 1)
trainer = T.add_on(PrintLRAddon)(model, "cpu", "train", torch.optim.SGD(model.parameters(), lr=0.5), log_bar=False, every=2)
trainer.run(4, [(torch.randn(4, 3),)] * 2)
"""
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "epoch 2: lr 5.00e-01" in result.stdout and "epoch 4: lr" in result.stdout
    assert "epoch 1: lr" not in result.stdout
