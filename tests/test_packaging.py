"""The built wheel holds every module of the core package (a .gitignore pattern once hid `zae_engine/runs/`)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_every_core_module(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("zae_engine-*.whl")
    packed = set(zipfile.ZipFile(wheel).namelist())
    sources = {path.relative_to(ROOT).as_posix() for path in (ROOT / "zae_engine").rglob("*.py")}
    missing = sorted(sources - packed)
    assert not missing, f"left out of the wheel (check .gitignore and [tool.hatch.build]): {missing}"
