"""The English and Korean guides stay in step, and their code is real code.

Both guides must have the same headings (levels, order), the same code blocks (compared without comments,
so comments may be translated) and the same `<!-- run -->` marks. Python blocks must compile; the blocks
marked `<!-- run -->` are executed in order, as one script, in a scratch folder.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDES = {"en": ROOT / "docs" / "guide.en.md", "ko": ROOT / "docs" / "guide.ko.md"}
RUN_MARK = "<!-- run -->"
FENCE = re.compile(r"^```(\S*)\s*$")
HEADING = re.compile(r"^(#{1,6})\s+\S")


@dataclass
class CodeBlock:
    lang: str
    text: str
    line: int
    run: bool


@dataclass
class Outline:
    headings: list[tuple[int, int]] = field(default_factory=list)  # (level, line)
    blocks: list[CodeBlock] = field(default_factory=list)
    anchors: set[str] = field(default_factory=set)  # GitHub's ids of the headings
    links: list[tuple[str, int]] = field(default_factory=list)  # (#fragment, line) outside code


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped (letters of any script kept), '-' for spaces."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def outline(path: Path) -> Outline:
    """Headings outside code fences, and every fenced block with its language and run mark."""
    result = Outline()
    lines = path.read_text(encoding="utf-8").splitlines()
    in_block, lang, start, body, run = False, "", 0, [], False
    previous = ""
    for number, line in enumerate(lines, 1):
        fence = FENCE.match(line)
        if in_block:
            if line.strip() == "```":
                result.blocks.append(CodeBlock(lang, "\n".join(body), start, run))
                in_block = False
            else:
                body.append(line)
        elif fence:
            in_block, lang, start, body, run = True, fence.group(1), number, [], previous.strip() == RUN_MARK
        else:
            heading = HEADING.match(line)
            if heading:
                result.headings.append((len(heading.group(1)), number))
                result.anchors.add(github_anchor(line[len(heading.group(1)) :]))
            result.links.extend((fragment, number) for fragment in re.findall(r"\]\(#([^)]+)\)", line))
        if line.strip():
            previous = line
    assert not in_block, f"{path.name}: code block opened at line {start} is never closed"
    return result


def without_comments(block: CodeBlock) -> str:
    """The code with comments and blank lines dropped, so the two languages may word their comments freely."""
    kept = []
    for line in block.text.splitlines():
        if block.lang in ("python", "bash", "yaml", "toml", "console", "text", ""):
            line = re.sub(r"(^|\s)#(?![!]).*$", "", line)
        if line.strip():
            kept.append(line.rstrip())
    return "\n".join(kept)


@pytest.fixture(scope="module")
def outlines() -> dict[str, Outline]:
    return {lang: outline(path) for lang, path in GUIDES.items()}


def test_guides_have_the_same_headings(outlines):
    en, ko = outlines["en"].headings, outlines["ko"].headings
    assert len(en) > 20, "the English guide lost its sections"
    for (en_level, en_line), (ko_level, ko_line) in zip(en, ko):
        assert en_level == ko_level, f"heading level differs: guide.en.md:{en_line} vs guide.ko.md:{ko_line}"
    assert len(en) == len(ko), f"{len(en)} headings in English, {len(ko)} in Korean"


def test_guides_have_the_same_code(outlines):
    en, ko = outlines["en"].blocks, outlines["ko"].blocks
    assert len(en) == len(ko), f"{len(en)} code blocks in English, {len(ko)} in Korean"
    for a, b in zip(en, ko):
        where = f"guide.en.md:{a.line} vs guide.ko.md:{b.line}"
        assert a.lang == b.lang, f"code block language differs: {where}"
        assert a.run == b.run, f"'{RUN_MARK}' mark differs: {where}"
        assert without_comments(a) == without_comments(b), f"code differs (comments aside): {where}"


def test_section_links_point_at_headings(outlines):
    for lang, result in outlines.items():
        for fragment, line in result.links:
            assert fragment in result.anchors, f"guide.{lang}.md:{line}: no heading has the id '#{fragment}'"


def test_every_code_block_names_its_language(outlines):
    for lang, result in outlines.items():
        for block in result.blocks:
            assert block.lang, f"guide.{lang}.md:{block.line}: say which language the block is (```python, ```bash)"


def test_python_blocks_compile(outlines):
    for lang, result in outlines.items():
        for block in result.blocks:
            if block.lang == "python":
                compile(block.text, f"guide.{lang}.md:{block.line}", "exec")


def test_runnable_blocks_run(outlines, tmp_path):
    """The marked blocks form a working script: the guide's walk-through really trains, saves and resumes."""
    blocks = [b for b in outlines["en"].blocks if b.run]
    assert blocks, f"no '{RUN_MARK}' blocks in guide.en.md"
    script = "\n\n".join(f"# --- guide.en.md:{b.line}\n{b.text}" for b in blocks)
    (tmp_path / "guide_walkthrough.py").write_text(script, encoding="utf-8")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    done = subprocess.run(
        [sys.executable, "guide_walkthrough.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_yaml_blocks_are_real_specs(outlines, tmp_path, monkeypatch):
    """A whole spec in the guide passes `zae validate`; an `addons:` fragment passes each add-on's own Config
    (a `class_path` entry names the reader's own module, so only its shape is checked)."""
    import yaml
    from typer.testing import CliRunner

    from zae_engine.cli.app import app
    from zae_engine.registry import get_addon
    from zae_engine.spec.models import AddOnEntry

    monkeypatch.chdir(ROOT)  # class paths such as examples.toy.ToyTrainer resolve from the repository root
    monkeypatch.setattr(sys, "path", list(sys.path))
    checked = 0
    for block in outlines["en"].blocks:
        if block.lang != "yaml":
            continue
        data = yaml.safe_load(block.text)
        where = f"guide.en.md:{block.line}"
        if "trainer" in data:
            spec = tmp_path / f"spec_{block.line}.yaml"
            spec.write_text(block.text, encoding="utf-8")
            result = CliRunner().invoke(app, ["validate", str(spec)])
            assert result.exit_code == 0, f"{where}: {result.output}"
            checked += 1
        for entry in data.get("addons") or []:
            if "class_path" in entry:  # a module of the reader's own, beside their spec: only the entry's shape
                AddOnEntry.model_validate(entry)
                continue
            options = {k: v for k, v in entry.items() if k != "name"}
            get_addon(entry["name"]).validate_config(options)
            checked += 1
    assert checked >= 8


def test_toml_blocks_parse(outlines):
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    for block in outlines["en"].blocks:
        if block.lang == "toml":
            tomllib.loads(block.text)


FIRST_PARTY = ("zae-engine", "zae-mpu", "zae-wandb", "zae-neptune", "zae-tensorboard", "zae-mlflow")


def test_guides_document_every_first_party_addon_keyword():
    """A keyword added to an add-on (or to the Trainer) without a line in both guides fails here."""
    from zae_engine.registry import get_addon, list_addons
    from zae_engine.trainer.config import TrainerConfig

    fields = {"Trainer": set(TrainerConfig.model_fields)}
    for info in list_addons():
        if info.distribution in FIRST_PARTY and info.ok:
            fields[info.name] = set(get_addon(info.name).Config.model_fields)
            fields[info.name].add(info.name)
    assert {"state_manager", "early_stopping", "ema"} <= set(fields)
    for lang, path in GUIDES.items():
        text = path.read_text(encoding="utf-8")
        missing = {owner: sorted(f for f in names if f"`{f}`" not in text) for owner, names in fields.items()}
        missing = {owner: names for owner, names in missing.items() if names}
        assert not missing, f"guide.{lang}.md does not mention: {missing}"


def test_guides_document_every_cli_command_and_option():
    """Walks the real Typer app: a command or flag added to `zae` without a mention in both guides fails here."""
    import typer.main

    from zae_engine.cli.app import app

    wanted: set[str] = set()

    def walk(command, words: list[str]) -> None:
        for param in command.params:
            wanted.update(opt for opt in param.opts if opt.startswith("--"))
        for name, sub in (getattr(command, "commands", None) or {}).items():
            wanted.add(" ".join([*words, name]))
            walk(sub, [*words, name])

    walk(typer.main.get_command(app), ["zae"])
    assert {"zae run", "zae validate", "zae addons list", "zae addons show", "zae schema"} <= wanted
    for lang, path in GUIDES.items():
        text = path.read_text(encoding="utf-8")
        missing = sorted(item for item in wanted if item not in text)
        assert not missing, f"guide.{lang}.md does not mention: {missing}"


def test_relative_links_point_at_files():
    pages = [*GUIDES.values(), ROOT / "examples" / "README.md", ROOT / "examples" / "custom_addon" / "README.md"]
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)}: link to missing '{target}'"


# ---------------------------------------------------------------------------------------------- migrating.md
MIGRATING = {"en": ROOT / "docs" / "migrating.md", "ko": ROOT / "docs" / "migrating.ko.md"}
PENDING = re.compile(r"<!-- pending: [^>]*-->")


@pytest.fixture(scope="module")
def migrating() -> dict[str, Outline]:
    return {lang: outline(path) for lang, path in MIGRATING.items()}


def test_migrating_twins_have_the_same_headings_code_and_marks(migrating):
    en, ko = migrating["en"], migrating["ko"]
    assert len(en.headings) >= 8, "migrating.md lost its sections"
    assert [level for level, _ in en.headings] == [level for level, _ in ko.headings], (
        f"headings differ: {en.headings} vs {ko.headings}"
    )
    assert len(en.blocks) == len(ko.blocks), f"{len(en.blocks)} code blocks in English, {len(ko.blocks)} in Korean"
    for a, b in zip(en.blocks, ko.blocks):
        where = f"migrating.md:{a.line} vs migrating.ko.md:{b.line}"
        assert (a.lang, a.run) == (b.lang, b.run), f"language or '{RUN_MARK}' mark differs: {where}"
        assert without_comments(a) == without_comments(b), f"code differs (comments aside): {where}"
        if a.lang == "python":
            compile(a.text, f"migrating.md:{a.line}", "exec")


def test_migrating_twins_mark_the_same_pending_lines():
    """The lead checks `<!-- pending: ... -->` lines when the work lands; both languages carry the same marks."""
    en, ko = (PENDING.findall(path.read_text(encoding="utf-8")) for path in MIGRATING.values())
    assert en == ko


def test_migrating_links_point_at_headings_and_files(migrating):
    for lang, path in MIGRATING.items():
        for fragment, line in migrating[lang].links:
            assert fragment in migrating[lang].anchors, f"{path.name}:{line}: no heading has the id '#{fragment}'"
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8")):
            if not target.startswith(("http://", "https://")):
                assert (path.parent / target).exists(), f"{path.name}: link to missing '{target}'"


def test_readme_compared_with_table_links_the_migration_guide():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Compared with") :]
    table = table[: table.index("\n## ")]
    assert "(docs/migrating.md)" in table


def test_migrating_walkthrough_runs(migrating, tmp_path):
    """The marked blocks convert an upstream-style folder with the real `zae` and resume from it."""
    blocks = [b for b in migrating["en"].blocks if b.run]
    assert blocks, "no runnable block in migrating.md"
    script = "\n\n".join(f"# --- migrating.md:{b.line}\n{b.text}" for b in blocks)
    (tmp_path / "migrating_walkthrough.py").write_text(script, encoding="utf-8")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [sys.executable, "migrating_walkthrough.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "optimizer.zae" in done.stdout and "not carried" in done.stdout


def test_migrating_schedule_table_is_right():
    """Our rows are what our schedulers report; upstream's rows follow the description: one step in, no stop."""
    import math

    import torch

    from zae_engine.schedulers import CosineAnnealingScheduler, WarmUpScheduler

    def curve(kind: type, steps: int = 7) -> list[float]:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler = kind(optimizer, total_iters=4)
        rates = [scheduler.get_last_lr()[0]]
        for _ in range(steps - 1):
            optimizer.step()
            scheduler.step()
            rates.append(scheduler.get_last_lr()[0])
        return rates

    expected = {
        ("WarmUpScheduler", "ours"): curve(WarmUpScheduler),
        ("CosineAnnealingScheduler", "ours"): curve(CosineAnnealingScheduler),
        ("WarmUpScheduler", "upstream"): [(k + 1) / 4 for k in range(7)],
        ("CosineAnnealingScheduler", "upstream"): [(1 + math.cos(math.pi * (k + 1) / 4)) / 2 for k in range(7)],
    }
    words = {"ours": "ours", "upstream": "upstream", "우리": "ours", "업스트림": "upstream"}
    for path in MIGRATING.values():
        rows = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            row = re.match(r"\| `(\w+Scheduler)`, (\S+) \|([\d.| ]+)\|\s*$", line)
            if row:
                rows[(row.group(1), words[row.group(2)])] = [float(v) for v in row.group(3).split("|")]
        assert rows.keys() == expected.keys(), f"{path.name}: schedule table rows {sorted(rows)}"
        for key, values in rows.items():
            assert values == pytest.approx(expected[key], abs=5e-4), f"{path.name}: {key}"
