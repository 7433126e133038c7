"""Hostile spec files meet the real `zae validate`, in a child process that may use at most 512 MiB of memory.

Each one ends with one message naming the file (and the line) and exit code 1: bounded memory, bounded depth,
no code run. A tame spec with anchors, aliases and merge keys still validates.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

_SCRIPT = Path(sys.executable).with_name("zae")
ZAE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "zae_engine.cli"]
MEMORY_LIMIT = 512 * 2**20


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def validate(spec: Path, limit_memory: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "300"}
    return subprocess.run(
        [*ZAE, "validate", spec.name],
        cwd=spec.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,  # a safety net only: each of these ends in a few seconds
        preexec_fn=_limit_memory if limit_memory else None,
    )


def billion_laughs() -> str:
    """342 bytes that expand to 9**9 (387 million) strings for whoever walks the parsed result."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [{','.join([f'*{previous}'] * 9)}]")
    return "\n".join(lines) + "\n"


def aliases_nested_deep() -> str:
    """Each line is shallow, but every alias adds a level to the one before: depth hides in the expansion."""
    lines = ["l0: &l0 [[[[[[[[[[1]]]]]]]]]]"]
    lines += [f"l{i}: &l{i} [*l{i - 1}]" for i in range(1, 120)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (billion_laughs(), "bomb.yaml:6: aliases repeat more than 100,000 nodes by here (alias *e)"),
        ("a: " + "[" * 100_000 + "]" * 100_000 + "\n", "bomb.yaml:1: collections nest more than 100 levels deep"),
        (aliases_nested_deep(), "bomb.yaml:90: alias *l88 nests collections more than 100 levels deep"),
        ("a: &loop [1, *loop]\n", "bomb.yaml:1: alias *loop points into the collection that holds it"),
    ],
    ids=["billion-laughs", "nested-100k-deep", "deep-through-aliases", "recursive-alias"],
)
def test_alias_bombs_and_deep_nesting_are_refused_with_file_and_line(tmp_path, text, message):
    spec = tmp_path / "bomb.yaml"
    spec.write_text(text)
    result = validate(spec)
    assert result.returncode == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and "Error:" not in result.stderr  # no RecursionError/MemoryError


def test_a_python_tag_is_named_as_such_not_as_a_syntax_error_at_its_line(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("# a comment line\n" * 99 + "trainer: !!python/object/apply:os.system ['touch pwned']\n")
    result = validate(spec)
    assert result.returncode == 1
    assert (
        "spec.yaml:100: tag '!!python/object/apply:os.system': tags that build Python objects are not allowed"
    ) in result.stderr
    assert "syntax error" not in result.stderr
    assert not (tmp_path / "pwned").exists()


def test_a_file_over_16_mib_is_refused_before_it_is_parsed(tmp_path):
    spec = tmp_path / "huge.yaml"
    with spec.open("w") as stream:
        stream.write("a: [" + "1," * (8 * 2**20) + "1]\n")  # valid YAML, 16 MiB and a bit
    result = validate(spec)
    assert result.returncode == 1
    assert "huge.yaml: larger than 16 MiB" in result.stderr


def test_a_spec_with_anchors_aliases_and_merge_keys_still_validates(tmp_path):
    spec = tmp_path / "anchors.yaml"
    spec.write_text(
        "trainer: {class_path: zae_engine.demo.toy.ToyTrainer, init_args: {log_bar: false}}\n"
        "model: {class_path: zae_engine.demo.toy.TinyNet, init_args: {hidden: 8}}\n"
        "optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.1}}\n"
        "data:\n"
        "  train: &loader\n"
        "    dataset: {class_path: zae_engine.demo.toy.RandomDataset, init_args: &size {size: 64}}\n"
        "    batch_size: 32\n"
        "  valid: {<<: *loader, dataset: {class_path: zae_engine.demo.toy.RandomDataset, init_args: *size}}\n"
        "run: {n_epoch: 1, seed: 0}\n"
    )
    result = validate(spec, limit_memory=False)  # this one imports torch: no address-space limit
    assert result.returncode == 0, result.stderr
    assert "valid:" in result.stdout
