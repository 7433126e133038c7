"""Failures end the whole run quickly and clearly: a raising rank, a busy port, Ctrl-C; no process is left behind.

And two runs on one machine never meet: each launcher owns its rendezvous."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from zae_mpu import RankFailedError
from zae_mpu.ports import free_port
from zae_mpu_testkit import DDPTrainer, FailingDDPTrainer, LateReportingDDPTrainer, make_mlp

from zae_engine.errors import ConfigError
from zae_engine.testing import SeparableTrainer, make_dataset

SCRIPTS = Path(__file__).parent / "scripts"


def make_trainer(cls, **options):
    model = make_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return cls(model, ["cpu", "cpu"], "train", optimizer, log_bar=False, threads_per_worker=1, **options)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "trainer_cls", [FailingDDPTrainer, LateReportingDDPTrainer], ids=["as-it-comes", "peer-reports-first"]
)
def test_a_rank_that_raises_ends_every_rank_with_its_traceback(trainer_cls):
    """The rank named is the one whose code raised, even when its peer's broken collective is reported first."""
    trainer = make_trainer(trainer_cls)
    with pytest.raises(RankFailedError) as caught:
        trainer.run(3, DataLoader(make_dataset(128), batch_size=8))
    message = str(caught.value)
    assert "rank 1 of 2 failed" in message
    assert "ValueError: boom on rank 1 at step 3" in message
    assert "in train_step" in message  # the summarised traceback points at the user's code
    assert caught.value.rank == 1 and "Traceback" in caught.value.worker_traceback
    assert not _children_of(os.getpid(), exclude_forkserver=True)


def test_what_cannot_travel_to_the_workers_is_named_before_any_starts():
    trainer = make_trainer(DDPTrainer)
    loader = DataLoader(make_dataset(128), batch_size=8, collate_fn=lambda items: items)
    with pytest.raises(ConfigError, match="cannot be pickled.*lambda"):
        trainer.run(1, loader)


@pytest.fixture
def busy_port():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_busy_port_is_refused_with_the_port_and_the_fix_when_strict(busy_port):
    trainer = make_trainer(DDPTrainer, init_method=f"tcp://localhost:{busy_port}", strict_port=True)
    with pytest.raises(ConfigError, match=f"port {busy_port} .*already in use.*strict_port=False"):
        trainer.run(1, DataLoader(make_dataset(128), batch_size=8))


def test_busy_port_is_swapped_for_a_free_one_otherwise(busy_port, capfd):
    trainer = make_trainer(DDPTrainer, init_method=f"tcp://localhost:{busy_port}")
    trainer.run(1, DataLoader(make_dataset(128), batch_size=8))
    assert f"port {busy_port} is in use" in capfd.readouterr().err
    assert trainer.progress_checker.get_epoch() == 2


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("how", "start_method"),
    [(signal.SIGINT, "forkserver"), (signal.SIGKILL, "spawn")],
    ids=["ctrl-c-forkserver", "kill-9-spawn"],
)
def test_stopping_the_launcher_stops_every_worker(how, start_method):
    process = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "long_run.py"), start_method],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout.readline().startswith("epoch 1")  # the workers are training
        workers = _children_of(process.pid, exclude_forkserver=False)
        assert workers
        process.send_signal(how)
        process.wait(timeout=30)
        if how == signal.SIGINT:
            assert process.returncode != 0
            assert "TrainingInterrupted" in process.stderr.read()
        _wait_gone(workers)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _children_of(pid: int, exclude_forkserver: bool) -> list[int]:
    """Every descendant of `pid` (from /proc), optionally without the long-lived forkserver."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            for child in map(int, task.read_text().split()):
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes() if Path(f"/proc/{child}").exists() else b""
                if exclude_forkserver and (b"forkserver" in cmdline or b"resource_tracker" in cmdline):
                    continue
                found.append(child)
                todo.append(child)
    return found


def _wait_gone(pids: list[int], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return
        time.sleep(0.1)
    raise AssertionError(f"worker processes {alive} outlived the launcher")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.timeout(240)
def test_two_runs_started_together_on_one_init_method_each_train_alone(tmp_path):
    """Each launcher holds its own rendezvous: the second moves to a free port instead of joining the first."""
    init_method = f"tcp://localhost:{free_port()}"
    meeting = tmp_path / "training"  # both runs are inside their process groups at once (see MeetingDDPTrainer)
    meeting.mkdir()
    seeds = (3, 4)  # different models and data: a run that met the other's ranks would not match its reference
    runs = [
        subprocess.Popen(
            [sys.executable, SCRIPTS / "concurrent_run.py", init_method, str(seed), tmp_path / f"{seed}.st", meeting],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for seed in seeds
    ]
    try:
        assert [run.stdout.readline() for run in runs] == ["ready\n", "ready\n"]
        for run in runs:  # release both at once
            run.stdin.write("go\n")
            run.stdin.flush()
        errors = [run.communicate(timeout=200)[1] for run in runs]
    finally:
        for run in runs:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait()
    assert [run.returncode for run in runs] == [0, 0], errors
    for seed in seeds:
        weights = load_file(tmp_path / f"{seed}.st")
        for key, value in _single_process_reference(seed).items():
            torch.testing.assert_close(weights[key], value, rtol=1e-5, atol=1e-6, msg=f"run {seed}: '{key}' differs")


def _single_process_reference(seed: int) -> dict:
    """What 2 ranks x batch 8 must end with: 1 process x batch 16 (SGD, no shuffling)."""
    model = make_mlp(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    SeparableTrainer(model, "cpu", "train", optimizer, log_bar=False).run(
        2, DataLoader(make_dataset(128, seed=seed), batch_size=16, shuffle=False)
    )
    return model.state_dict()
