"""zae-mpu tests: spawned workers and the scripts import `zae_mpu_testkit` by name, so this folder goes on sys.path."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
torch.set_num_threads(1)
