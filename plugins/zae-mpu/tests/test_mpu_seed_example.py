"""The seeds' multi-GPU example, run as a script: afterwards the user's own objects hold the training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parent / "scripts" / "seed_example.py"


@pytest.mark.timeout(120)
def test_seed_example_trains_and_the_user_model_holds_the_weights(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=110
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Model saved as 'dummy_model_mgpu.pth'." in done.stdout
    assert "Traceback" not in done.stderr and "Warning" not in done.stderr
    before = torch.load(tmp_path / "initial.pth", weights_only=True)
    after = torch.load(tmp_path / "dummy_model_mgpu.pth", weights_only=True)
    assert set(after) == {"weight", "bias"}  # the user's nn.Linear, no "module." prefix
    assert not torch.equal(before["weight"], after["weight"])
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history) == 10 and history[-1]["step"] == 160  # 1000 samples / 2 ranks / 32 per batch = 16 steps
    assert history[-1]["train/loss"] < history[0]["train/loss"]
    state = json.loads((tmp_path / "state.json").read_text())
    assert state == {"optimizer_steps": 2, "scheduler_epoch": 10}  # Adam moments and the schedule came back
