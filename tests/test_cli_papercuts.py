"""The `zae` command in a shell: pipes that close early, help that reads well, docs that install the right thing.

Every check runs the real console script in a subprocess.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_SCRIPT = Path(sys.executable).with_name("zae")
ZAE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "zae_engine.cli"]
ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
GUIDES = [ROOT / "docs" / "guide.en.md", ROOT / "docs" / "guide.ko.md"]


def zae(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ZAE, *args], env=ENV, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args", [["schema"], ["addons", "list"], ["addons", "list", "--json"], ["--version"]])
def test_output_into_a_pipe_whose_reader_has_gone_ends_quietly(args):
    """`zae schema | head`: the reader may leave before zae writes. Here it has left before zae even starts."""
    reading, writing = os.pipe()
    os.close(reading)
    try:
        done = subprocess.run([*ZAE, *args], env=ENV, stdout=writing, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(writing)
    assert done.stderr == ""
    assert done.returncode == 141  # 128 + SIGPIPE, what a shell reports for any filter cut short


@pytest.mark.parametrize("command", [[], ["run"], ["validate"], ["schema"], ["addons"], ["addons", "list"]])
def test_help_shows_no_type_noise_for_flags(command):
    text = zae(*command, "--help").stdout
    assert "--help" in text
    assert "<bool>" not in text and "<list[str]>" not in text and "<str>" not in text and "<int" not in text


def test_help_of_run_and_validate_shows_examples_and_every_exit_code():
    run_help, validate_help, root_help = zae("run", "--help").stdout, zae("validate", "--help").stdout, zae("--help")
    assert "Examples" in run_help and "zae run examples/specs/quickstart.yaml" in run_help
    assert "KEY=VALUE" in run_help  # what --set takes, instead of a type name
    assert "Examples" in root_help.stdout and "zae validate spec.yaml" in root_help.stdout
    assert exit_codes(run_help) == ["0", "1", "2", "130", "143"]
    assert exit_codes(validate_help) == ["0", "1", "2"]
    assert zae("run", "--no-such-option").returncode == 2  # what "2" stands for


def exit_codes(help_text: str) -> list[str]:
    block = help_text.split("Exit codes", 1)[1]
    return re.findall(r"^\s+(\d+)\s{2,}\S", block, flags=re.M)


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.name)
def test_the_guide_lists_the_exit_codes_run_help_lists(guide):
    section = re.search(r"### 6\.5 .*?\n(.*?)\n## ", guide.read_text(encoding="utf-8"), flags=re.S).group(1)
    prose = re.sub(r"```.*?```", "", section, flags=re.S)
    for code in exit_codes(zae("run", "--help").stdout):
        assert re.search(rf"(?<!\d){code}(?!\d)", prose), f"{guide.name} section 6.5 does not mention exit code {code}"


INDEX_INSTALL = re.compile(r"""pip install\s+(["']?)zae-(engine|mpu|wandb|neptune)\b(?!\s*@)""")


@pytest.mark.parametrize(
    "document",
    [*GUIDES, ROOT / "README.md", *sorted((ROOT / "plugins").glob("*/README.md"))],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_no_install_command_fetches_the_unrelated_zae_engine_from_the_index(document):
    """PyPI's `zae-engine` is the upstream 0.7 project: commands install this one from a checkout or git."""
    blocks = re.findall(r"```(?:bash|console|sh)?\n(.*?)```", document.read_text(encoding="utf-8"), flags=re.S)
    commands = [line for block in blocks for line in block.splitlines() if "pip install" in line]
    assert not [line for line in commands if INDEX_INSTALL.search(line)]
