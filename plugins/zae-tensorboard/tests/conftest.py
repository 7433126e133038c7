"""Fixtures for zae-tensorboard tests; `tb_events` (the reader) is importable from the test modules.

This folder goes on sys.path because conftest itself is not importable under --import-mode=importlib.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
torch.set_num_threads(1)
