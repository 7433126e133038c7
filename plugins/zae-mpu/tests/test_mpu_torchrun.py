"""Launched from outside: torchrun on one node, and two torchrun "nodes" on loopback, joined through env://."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from zae_mpu.ports import free_port

from zae_engine.testing import assert_same_weights

JOB = Path(__file__).parent / "scripts" / "torchrun_job.py"


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args, str(JOB)]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def check_ranks(out: Path) -> None:
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    weights = [load_file(str(out / f"rank{r}.safetensors")) for r in (0, 1)]
    assert [r["world_size"] for r in reports] == [2, 2]
    assert all(r["model_is_users"] and r["plain_parameters"] for r in reports)  # no DDP/FSDP wrapper after run()
    assert_same_weights(weights[0], weights[1])  # identical replicas (DDP), or the same shards gathered (FSDP)
    history = reports[0]["history"]
    assert [h["step"] for h in history] == [8, 16, 24]  # 128 samples / (8 per rank x 2 ranks) per epoch
    assert history[-1]["train/loss"] < history[0]["train/loss"]
    assert reports[0]["history"] == reports[1]["history"]  # epoch means are reduced over ranks


@pytest.mark.timeout(120)
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_torchrun_with_two_processes_joins_instead_of_spawning(tmp_path, strategy):
    port = str(free_port())
    command = torchrun("--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", port)
    done = subprocess.run(
        [*command, str(tmp_path), strategy], env=environment(), capture_output=True, text=True, timeout=110
    )
    assert done.returncode == 0, done.stderr[-3000:]
    check_ranks(tmp_path)


@pytest.mark.timeout(120)
def test_two_nodes_on_loopback(tmp_path):
    port = str(free_port())
    nodes = [
        subprocess.Popen(
            [
                *torchrun(
                    "--nnodes",
                    "2",
                    "--node-rank",
                    str(rank),
                    "--nproc-per-node",
                    "1",
                    "--master-addr",
                    "127.0.0.1",
                    "--master-port",
                    port,
                ),
                str(tmp_path),
            ],
            env=environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    try:
        results = [node.communicate(timeout=110) for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.wait()
    for node, (_, err) in zip(nodes, results):
        assert node.returncode == 0, err[-3000:]
    check_ranks(tmp_path)


SPEC = """
trainer: {class_path: zae_engine.testing.SeparableTrainer, init_args: {log_bar: false}}
device: cpu
model: {class_path: torch.nn.Linear, init_args: {in_features: 10, out_features: 2}}
optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.1}}
data:
  train: {dataset: {class_path: zae_engine.testing.make_dataset, init_args: {n: 128}}, batch_size: 8, shuffle: true}
addons:
  - {name: mpu}
  - {name: state_manager, save_path: SAVE_PATH, save_format: safetensors, save_top_k: 0, keep_last: 1}
run: {n_epoch: 2, seed: 0}
"""


@pytest.mark.timeout(120)
def test_zae_run_with_nproc_per_node_trains_on_two_ranks(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.replace("SAVE_PATH", str(tmp_path / "ckpt")))
    command = [sys.executable, "-m", "zae_engine.cli", "run", str(spec), "--nproc-per-node", "2"]
    done = subprocess.run(command, env=environment(), capture_output=True, text=True, timeout=110, cwd=tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert done.stdout.count("epoch 2/2") == 1  # rank 0 alone reports
    (folder,) = [p for p in (tmp_path / "ckpt").iterdir() if p.is_dir()]
    assert folder.name == "epoch-0002"
    assert set(load_file(str(folder / "model.safetensors"))) == {"weight", "bias"}
