"""`zae checkpoint ls | verify | export`, run as the real `zae` subprocess on checkpoints a real run wrote."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from zae_engine.testing import SeparableTrainer, make_dataset
from zae_engine.trainer import Trainer
from zae_engine.trainer.addons import StateManagerAddon

_SCRIPT = Path(sys.executable).with_name("zae")
ZAE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "zae_engine.cli"]


def zae(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [*ZAE, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def one_clean_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert result.stderr.startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


class Classifier(SeparableTrainer, Trainer):
    pass


def train(save_path: Path, save_format: str, epochs: int = 3) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Linear(10, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    trainer = Classifier.add_on(StateManagerAddon)(
        model, "cpu", "train", optimizer, None, log_bar=False,
        save_path=str(save_path), save_format=save_format, save_top_k=-1,
    )  # fmt: skip
    loader = DataLoader(make_dataset(), batch_size=64)
    trainer.run(epochs, loader, loader)
    return model


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One finished 3-epoch run per format (read-only: tests that damage files work on a copy)."""
    root = tmp_path_factory.mktemp("runs")
    return {fmt: (train(root / fmt, fmt), root / fmt)[1] for fmt in ("safetensors", "ckpt")}


@pytest.fixture
def copy_of(runs, tmp_path):
    def make(save_format: str) -> Path:
        return Path(shutil.copytree(runs[save_format], tmp_path / save_format))

    return make


def flip_byte(path: Path, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x01
    path.write_bytes(bytes(data))


def rerecord(folder: Path, name: str) -> None:
    """Make checkpoint.json agree with the file as it is now (so only a structure check can catch it)."""
    meta_path = folder / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    data = (folder / name).read_bytes()
    meta["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    meta_path.write_text(json.dumps(meta))


# ---------------------------------------------------------------------------------------------- ls
@pytest.mark.parametrize("save_format", ["safetensors", "ckpt"])
def test_ls_json_lists_every_checkpoint_with_its_numbers_and_marks(runs, save_format):
    save_path = runs[save_format]
    result = zae("checkpoint", "ls", save_path, "--json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    manifest = json.loads((save_path / "manifest.json").read_text())
    rows = listing["checkpoints"]
    assert [row["name"] for row in rows] == ["epoch-0001", "epoch-0002", "epoch-0003"]
    assert [(row["epoch"], row["step"]) for row in rows] == [(1, 4), (2, 8), (3, 12)]
    assert all(row["kind"] == "epoch" and row["format"] == save_format for row in rows)
    for row, entry in zip(rows, manifest["checkpoints"]):
        assert (row["monitor"], row["mode"], row["value"]) == (entry["monitor"], entry["mode"], entry["value"])
        assert row["bytes"] == sum(f.stat().st_size for f in (save_path / row["name"]).iterdir())
        assert (row["verified"], row["status"]) == (None, "not checked")
    best = min(rows, key=lambda row: row["value"])["name"]
    assert listing["best"] == manifest["best"] == best
    assert [row["name"] for row in rows if row["best"]] == [best]
    assert [row["name"] for row in rows if row["latest"]] == ["epoch-0003"]
    assert listing["unlisted"] == [] and listing["temporary"] == []


def test_ls_table_says_not_checked_until_asked_to_verify(runs):
    plain = zae("checkpoint", "ls", runs["safetensors"])
    assert plain.returncode == 0, plain.stderr
    assert "epoch-0003" in plain.stdout and "latest" in plain.stdout and "best" in plain.stdout
    assert "not checked" in plain.stdout and "valid/loss 0." in plain.stdout and "kB" in plain.stdout
    checked = zae("checkpoint", "ls", runs["safetensors"], "--verify", "--json")
    assert checked.returncode == 0, checked.stderr
    assert {(row["verified"], row["status"]) for row in json.loads(checked.stdout)["checkpoints"]} == {(True, "ok")}


def test_ls_reports_unlisted_folders_and_leaves_them_alone(copy_of):
    save_path = copy_of("safetensors")
    shutil.copytree(save_path / "epoch-0002", save_path / "kept-by-hand")
    (save_path / ".tmp-999999-abcd-epoch-0004").mkdir()
    result = zae("checkpoint", "ls", save_path, "--json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert [(row["name"], row["epoch"], row["format"]) for row in listing["unlisted"]] == [
        ("kept-by-hand", 2, "safetensors")
    ]
    assert listing["temporary"] == [".tmp-999999-abcd-epoch-0004"]
    table = zae("checkpoint", "ls", save_path)
    assert "not listed in the manifest" in table.stdout and "kept-by-hand" in table.stdout
    assert (save_path / "kept-by-hand" / "checkpoint.json").is_file()
    assert (save_path / ".tmp-999999-abcd-epoch-0004").is_dir()


def test_ls_verify_names_damage_and_exits_1(copy_of):
    save_path = copy_of("safetensors")
    flip_byte(save_path / "epoch-0002" / "state.safetensors")
    result = zae("checkpoint", "ls", save_path, "--verify", "--json")
    assert result.returncode == 1
    rows = {row["name"]: row for row in json.loads(result.stdout)["checkpoints"]}
    assert rows["epoch-0002"]["status"] == "damaged" and rows["epoch-0002"]["verified"] is False
    assert "state.safetensors" in rows["epoch-0002"]["problems"][0]
    assert rows["epoch-0001"]["verified"] is True and rows["epoch-0003"]["verified"] is True
    assert "epoch-0002" in result.stderr and "Traceback" not in result.stderr


def test_ls_flags_missing_and_symlinked_folders_without_verify(copy_of, tmp_path):
    save_path = copy_of("ckpt")
    shutil.rmtree(save_path / "epoch-0001")
    shutil.move(save_path / "epoch-0002", tmp_path / "outside")
    (save_path / "epoch-0002").symlink_to(tmp_path / "outside")
    result = zae("checkpoint", "ls", save_path, "--json")
    assert result.returncode == 1
    rows = {row["name"]: row for row in json.loads(result.stdout)["checkpoints"]}
    assert (rows["epoch-0001"]["status"], rows["epoch-0001"]["bytes"]) == ("missing", None)
    assert rows["epoch-0002"]["status"] == "damaged" and "symbolic link" in rows["epoch-0002"]["problems"][0]
    assert rows["epoch-0003"]["status"] == "not checked"
    assert "epoch-0001, epoch-0002" in result.stderr


def test_ls_bad_input_is_one_message(tmp_path, runs):
    one_clean_error(zae("checkpoint", "ls", tmp_path / "nope"), "does not exist")
    one_clean_error(zae("checkpoint", "ls", tmp_path), "is not a save_path")
    one_clean_error(zae("checkpoint", "ls", runs["ckpt"] / "epoch-0001"), "is one checkpoint folder", "verify")
    (tmp_path / "file.txt").write_text("x")
    one_clean_error(zae("checkpoint", "ls", tmp_path / "file.txt"), "is a file")
    (tmp_path / "manifest.json").write_text("{not json")
    one_clean_error(zae("checkpoint", "ls", tmp_path), "manifest.json", "not valid JSON")


# ---------------------------------------------------------------------------------------------- verify
@pytest.mark.parametrize(
    ("save_format", "file"),
    [
        ("safetensors", "model.safetensors"),
        ("safetensors", "state.safetensors"),
        ("safetensors", "state.json"),
        ("ckpt", "state.ckpt"),
    ],
)
def test_verify_catches_a_flipped_byte(copy_of, save_format, file):
    save_path = copy_of(save_format)
    assert zae("checkpoint", "verify", save_path).returncode == 0
    flip_byte(save_path / "epoch-0002" / file)
    result = zae("checkpoint", "verify", save_path)
    one_clean_error(result, "epoch-0002", file, "SHA-256")
    assert "ok       epoch-0001" in result.stdout and "ok       epoch-0003" in result.stdout
    assert "DAMAGED  epoch-0002" in result.stdout
    alone = zae("checkpoint", "verify", save_path / "epoch-0002", "--json")
    assert alone.returncode == 1
    report = json.loads(alone.stdout)
    assert report["ok"] is False and file in report["checkpoints"][0]["problems"][0]
    assert zae("checkpoint", "verify", save_path / "epoch-0001").returncode == 0


def test_verify_catches_a_truncated_file_and_a_missing_folder(copy_of):
    save_path = copy_of("ckpt")
    path = save_path / "epoch-0001" / "state.ckpt"
    path.write_bytes(path.read_bytes()[:-10])
    shutil.rmtree(save_path / "epoch-0003")
    result = zae("checkpoint", "verify", save_path, "--json")
    assert result.returncode == 1
    problems = {c["name"]: c["problems"] for c in json.loads(result.stdout)["checkpoints"]}
    assert "truncated" in problems["epoch-0001"][0]
    assert problems["epoch-0002"] == []
    assert "missing" in problems["epoch-0003"][0]


def test_verify_checks_structure_when_the_hash_was_forged_to_match(copy_of):
    save_path = copy_of("safetensors")
    folder = save_path / "epoch-0002"
    skeleton = json.loads((folder / "state.json").read_text())
    skeleton["progress"] = {"$tensor": "no-such-tensor"}
    (folder / "state.json").write_text(json.dumps(skeleton))
    rerecord(folder, "state.json")
    header = folder / "model.safetensors"
    header.write_bytes(header.read_bytes() + b"\0" * 8)  # data beyond what the header describes
    rerecord(folder, "model.safetensors")
    result = zae("checkpoint", "verify", folder, "--json")
    assert result.returncode == 1
    problems = json.loads(result.stdout)["checkpoints"][0]["problems"]
    assert any(p.startswith("model.safetensors is not a valid safetensors file") for p in problems), problems
    assert any(p.startswith("state.json does not fit") and "no-such-tensor" in p for p in problems), problems


def test_verify_refuses_a_ckpt_that_is_not_what_torch_save_writes(copy_of):
    folder = copy_of("ckpt") / "epoch-0001"
    with zipfile.ZipFile(folder / "state.ckpt", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("state/data.pkl", b"\x80\x04N." * 100)
    rerecord(folder, "state.ckpt")
    one_clean_error(zae("checkpoint", "verify", folder), "state.ckpt holds compressed members")


def test_verify_follows_no_symbolic_link_out_of_the_folder(copy_of, tmp_path):
    folder = copy_of("safetensors") / "epoch-0001"
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(folder / "model.safetensors", outside)
    (folder / "model.safetensors").symlink_to(outside)  # same bytes, so the hash alone would pass
    one_clean_error(zae("checkpoint", "verify", folder), "model.safetensors is a symbolic link")


def test_verify_bad_input_is_one_message(tmp_path, runs):
    one_clean_error(zae("checkpoint", "verify", tmp_path / "nope"), "does not exist")
    one_clean_error(zae("checkpoint", "verify", tmp_path), "neither a checkpoint folder", "nor a save_path")
    (tmp_path / "w.pt").write_bytes(b"x")
    one_clean_error(zae("checkpoint", "verify", tmp_path / "w.pt"), "is a file")
    (tmp_path / "checkpoint.json").write_text('{"format": "something else"}')
    one_clean_error(zae("checkpoint", "verify", tmp_path), "was not written by zae-engine")
    # a file inside a checkpoint folder verifies the whole folder
    assert zae("checkpoint", "verify", runs["ckpt"] / "epoch-0001" / "state.ckpt").returncode == 0


# ---------------------------------------------------------------------------------------------- export
@pytest.mark.parametrize("save_format", ["safetensors", "ckpt"])
def test_export_writes_plain_weights_that_load_anywhere(runs, tmp_path, save_format):
    from safetensors import safe_open
    from safetensors.torch import load_file

    folder = runs[save_format] / "epoch-0002"
    result = zae("checkpoint", "export", folder, "--out", tmp_path / "model.safetensors")
    assert result.returncode == 0, result.stderr
    assert "2 tensors" in result.stdout
    exported = load_file(str(tmp_path / "model.safetensors"))
    from zae_engine.checkpoint import read_checkpoint

    saved = read_checkpoint(folder)[0]["model"]
    assert set(exported) == {"weight", "bias"} == set(saved)
    assert all(torch.equal(exported[k], saved[k]) for k in saved)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt"}
    fresh = nn.Linear(10, 2)
    fresh.load_state_dict(exported)

    pt = zae("checkpoint", "export", runs[save_format], "-o", tmp_path / "latest.pt")  # a save_path: its latest
    assert pt.returncode == 0, pt.stderr
    latest = torch.load(tmp_path / "latest.pt", weights_only=True)
    assert all(
        torch.equal(latest[k], v) for k, v in read_checkpoint(runs[save_format] / "epoch-0003")[0]["model"].items()
    )


def test_export_refuses_to_overwrite_without_force(runs, tmp_path):
    out = tmp_path / "model.pth"
    out.write_bytes(b"precious")
    one_clean_error(zae("checkpoint", "export", runs["ckpt"], "--out", out), "already exists", "--force")
    assert out.read_bytes() == b"precious"
    assert zae("checkpoint", "export", runs["ckpt"], "--out", out, "--force").returncode == 0
    assert set(torch.load(out, weights_only=True)) == {"weight", "bias"}


def test_export_refuses_damaged_weights_and_bad_names(copy_of, tmp_path):
    save_path = copy_of("safetensors")
    flip_byte(save_path / "epoch-0001" / "model.safetensors")
    out = tmp_path / "w.safetensors"
    one_clean_error(zae("checkpoint", "export", save_path / "epoch-0001", "--out", out), "model.safetensors", "SHA-256")
    assert not out.exists()
    flip_byte(save_path / "epoch-0002" / "state.safetensors")  # training state damaged, weights intact: fine
    assert zae("checkpoint", "export", save_path / "epoch-0002", "--out", out).returncode == 0
    one_clean_error(zae("checkpoint", "export", save_path, "--out", tmp_path / "w.txt"), "*.safetensors")
    one_clean_error(zae("checkpoint", "export", tmp_path / "nope", "--out", tmp_path / "x.pt"), "does not exist")
    one_clean_error(zae("checkpoint", "export", save_path, "--out", tmp_path), "is a folder")
    inside = save_path / "epoch-0003" / "copy.safetensors"
    one_clean_error(zae("checkpoint", "export", save_path / "epoch-0003", "--out", inside), "inside the checkpoint")


def test_checkpoint_help_is_fast_and_imports_no_torch():
    code = (
        "import sys\n"
        "from zae_engine.cli import main\n"
        "sys.argv = ['zae', 'checkpoint', '--help']\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO TORCH')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "import-upstream" in result.stdout and result.stdout.strip().endswith("NO TORCH")
