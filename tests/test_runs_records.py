"""The run record itself: what `RunRecorder` writes, what the readers make of it, and bad files.

Writers run in this process unless the test is about processes (ids across processes, torch-free start).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from zae_engine.runs import RunRecorder, RunsError, find_run, list_runs, load_run, read_metrics
from zae_engine.runs.names import ID_PATTERN


def record_json(recorder: RunRecorder) -> dict:
    text = (recorder.path / "run.json").read_text(encoding="utf-8")
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"run.json holds {name}, which is not JSON"))


def git(repo: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(command, cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def test_start_records_versions_git_and_host_without_importing_torch(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "train.py").write_text("print('hi')\n")
    git(repo, "add", "train.py")
    git(repo, "commit", "-qm", "first")
    code = textwrap.dedent(
        """
        import json, sys
        from zae_engine.runs import RunRecorder
        recorder = RunRecorder(sys.argv[1]).start(name="probe", world_size=2, devices=["cpu", "cpu"], tags={"k": 1})
        recorder.finish("done")
        assert "torch" not in sys.modules, "recording imported torch"
        print(recorder.path)
        """
    )

    def record_from(cwd: Path) -> dict:
        done = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "runs")], cwd=cwd, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return json.loads((Path(done.stdout.strip()) / "run.json").read_text())

    clean = record_from(repo)
    assert clean["git"] == {"commit": git(repo, "rev-parse", "HEAD"), "dirty": False}
    assert clean["versions"]["torch"] == metadata.version("torch")
    assert clean["versions"]["zae-engine"] == metadata.version("zae-engine")
    assert clean["versions"]["plugins"].get("zae-mpu") == metadata.version("zae-mpu")
    assert clean["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert clean["world_size"] == 2 and clean["devices"] == ["cpu", "cpu"] and clean["tags"] == {"k": "1"}
    assert clean["host"] and clean["pid"] and clean["cwd"] == str(repo)
    (repo / "train.py").write_text("print('changed')\n")
    assert record_from(repo)["git"]["dirty"] is True
    (repo / "untracked.txt").write_text("x")  # untracked files (e.g. a runs/ folder) do not make a tree dirty
    git(repo, "checkout", "--", "train.py")
    assert record_from(repo)["git"]["dirty"] is False
    outside = tmp_path / "plain"
    outside.mkdir()
    assert record_from(outside)["git"] is None


def test_options_are_json_safe_and_secrets_masked(tmp_path):
    options = {
        "trainer": {"gradient_clip": 1.0, "path": tmp_path, "sizes": (1, 2)},
        "web_logger": {"wandb": {"api_key": "sekrit", "project": "p"}, "neptune": {"api_token": "t0k"}},
        "password": "hunter2",
        "odd": object(),
        "bad": float("nan"),
    }
    recorder = RunRecorder(tmp_path / "runs").start(options=options, spec={"run": {"n_epoch": 2}})
    recorder.finish("done")
    record = record_json(recorder)
    assert record["options"]["web_logger"]["wandb"] == {"api_key": "***", "project": "p"}
    assert record["options"]["web_logger"]["neptune"]["api_token"] == "***"
    assert record["options"]["password"] == "***"
    assert record["options"]["trainer"] == {"gradient_clip": 1.0, "path": str(tmp_path), "sizes": [1, 2]}
    assert record["options"]["bad"] is None and record["options"]["odd"].startswith("<object")
    assert record["spec"] == {"run": {"n_epoch": 2}}
    assert "hunter2" not in (recorder.path / "run.json").read_text()


def test_metric_lines_and_what_run_json_learns_from_them(tmp_path):
    recorder = RunRecorder(tmp_path / "runs", save_every=0).start(name="lines")  # run.json after every epoch
    recorder.log({"train/loss": 0.9}, step=5, epoch=1, kind="step")
    assert record_json(recorder)["epochs"] == 0  # step lines only append
    recorder.log({"train/loss": 0.8, "valid/loss": 0.7}, step=10, epoch=1)
    recorder.log({"train/loss": float("nan"), "valid/loss": float("inf")}, step=20, epoch=2)
    recorder.log({"train/loss": 0.5, "valid/loss": 0.6}, step=30, epoch=3)
    middle = record_json(recorder)
    assert middle["status"] == "running" and middle["epochs"] == 3 and middle["step"] == 30
    assert middle["best"] == {"metric": "valid/loss", "value": 0.6, "epoch": 3, "mode": "min"}
    assert middle["final"] == {"train/loss": 0.5, "valid/loss": 0.6}
    lines = (recorder.path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line)["kind"] in ("epoch", "step") for line in lines)
    assert json.loads(lines[2])["metrics"] == {"train/loss": None, "valid/loss": None}  # never NaN in a file
    recorder.finish("stopped_early", best={"metric": "valid/acc", "value": 0.9, "epoch": 2, "mode": "max"})
    run = load_run(recorder.path)
    assert run.status == "stopped_early" and run.record.best.mode == "max" and run.record.ended is not None
    metrics = read_metrics(run)
    assert metrics.skipped == 0 and [p.epoch for p in metrics.epochs()] == [1, 2, 3]
    assert metrics.series("valid/loss") == [(1, 0.7), (2, None), (3, 0.6)]
    assert metrics.series("train/loss", per="step") == [(5, 0.9)]


def test_run_json_is_rewritten_at_most_every_save_every_seconds_and_readers_use_the_metrics(tmp_path):
    recorder = RunRecorder(tmp_path / "runs", save_every=3600).start(name="quick epochs")
    for epoch in (1, 2, 3):
        recorder.log({"train/loss": 1.0 / epoch}, step=10 * epoch, epoch=epoch)
    assert record_json(recorder)["epochs"] == 1  # the first epoch is written at once, the next two wait
    running = load_run(recorder.path)
    assert read_metrics(running).epochs_done(running.record.epochs) == 3  # the metrics file is never behind
    shown = subprocess.run(
        [sys.executable, "-m", "zae_engine.cli", "runs", "show", "last", "--dir", str(tmp_path / "runs"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["epochs"] == 3
    recorder.finish("done")
    assert record_json(recorder)["epochs"] == 3 and record_json(recorder)["final"] == {"train/loss": 1 / 3}


def test_the_with_block_finishes_by_how_it_ends(tmp_path):
    root = tmp_path / "runs"
    with RunRecorder(root).start(name="ok") as recorder:
        recorder.log({"train/loss": 1.0}, step=1, epoch=1)
    with pytest.raises(ValueError), RunRecorder(root).start(name="boom"):
        raise ValueError("exploded\nwith a long second line")
    with pytest.raises(KeyboardInterrupt), RunRecorder(root).start(name="ctrl-c"):
        raise KeyboardInterrupt
    with pytest.raises(SystemExit), RunRecorder(root).start(name="exit-0"):
        sys.exit(0)
    runs, damaged = list_runs(root)
    assert not damaged
    statuses = {run.name: run.status for run in runs}
    assert statuses == {"ok": "done", "boom": "failed", "ctrl-c": "interrupted", "exit-0": "done"}
    assert next(run for run in runs if run.name == "boom").record.error == "ValueError: exploded"


def test_misuse_is_refused_with_a_message(tmp_path):
    recorder = RunRecorder(tmp_path / "runs")
    with pytest.raises(RuntimeError, match="before start"):
        recorder.log({"x": 1.0}, step=0)
    recorder.start()
    with pytest.raises(RuntimeError, match="already records run"):
        recorder.start()
    with pytest.raises(TypeError, match="metric 'x' is not a number"):
        recorder.log({"x": "high"}, step=0)
    with pytest.raises(ValueError, match="kind must be 'epoch' or 'step'"):
        recorder.log({"x": 1.0}, step=0, kind="batch")
    with pytest.raises(ValueError, match="status must be one of"):
        recorder.finish("running")
    recorder.finish("failed", error_summary="RuntimeError: out of memory\ntraceback...")
    assert record_json(recorder)["error"] == "RuntimeError: out of memory"
    with pytest.raises(RuntimeError, match="already finished"):
        recorder.finish("done")
    with pytest.raises(RuntimeError, match="after finish"):
        recorder.log({"x": 1.0}, step=0)


def test_a_taken_id_is_drawn_again(tmp_path, monkeypatch):
    import zae_engine.runs.recorder as recorder_module

    ids = iter(["20261201-101530-aaaa", "20261201-101530-aaaa", "20261201-101530-bbbb"])
    monkeypatch.setattr(recorder_module, "new_run_id", lambda started: next(ids))
    first = RunRecorder(tmp_path).start()
    second = RunRecorder(tmp_path).start()
    assert (first.id, second.id) == ("20261201-101530-aaaa", "20261201-101530-bbbb")
    first.finish("done")
    second.finish("done")


def test_processes_starting_together_get_distinct_ids(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        from zae_engine.runs import RunRecorder
        sys.stdin.readline()  # start together
        for i in range(40):
            RunRecorder(sys.argv[1]).start(name=f"{sys.argv[2]}-{i}").finish("done")
        """
    )
    root = tmp_path / "runs"
    writers = [
        subprocess.Popen([sys.executable, "-c", code, str(root), f"w{n}"], stdin=subprocess.PIPE, text=True)
        for n in range(3)
    ]
    for writer in writers:
        writer.stdin.write("go\n")
        writer.stdin.flush()
    assert [writer.wait(timeout=180) for writer in writers] == [0, 0, 0]
    runs, damaged = list_runs(root)
    assert not damaged and len(runs) == 120
    assert len({run.id for run in runs}) == 120 and all(ID_PATTERN.match(run.id) for run in runs)
    assert all(run.path.name == run.id and run.status == "done" for run in runs)
    assert sorted(run.name for run in runs) == sorted(f"w{n}-{i}" for n in range(3) for i in range(40))


def test_a_running_record_without_its_writer_is_crashed(tmp_path):
    recorder = RunRecorder(tmp_path / "runs").start(name="alive")
    assert load_run(recorder.path).status == "running"
    recorder._lock.release()  # what the kernel does when the writer process dies
    assert load_run(recorder.path).status == "crashed"
    (recorder.path / "writer.lock").unlink()
    assert load_run(recorder.path).status == "crashed"


def test_planted_fifos_and_symlinks_do_not_hang_or_mislead_readers(tmp_path):
    recorder = RunRecorder(tmp_path / "runs").start(name="target")
    recorder.log({"train/loss": 1.0}, step=1, epoch=1)
    recorder.finish("done")
    metrics = recorder.path / "metrics.jsonl"
    metrics.unlink()
    os.mkfifo(metrics)
    run = find_run(tmp_path / "runs", "target")  # the listing never opens metrics
    with pytest.raises(RunsError, match="metrics.jsonl: not a regular file"):
        read_metrics(run)
    elsewhere = tmp_path / "secret.json"
    elsewhere.write_text(json.dumps(json.loads((recorder.path / "run.json").read_text()) | {"name": "leaked"}))
    (recorder.path / "run.json").unlink()
    (recorder.path / "run.json").symlink_to(elsewhere)
    runs, damaged = list_runs(tmp_path / "runs")
    assert not runs and "symlink" in damaged[0].reason


def test_huge_and_deep_files_are_refused_in_bounded_time(tmp_path):
    recorder = RunRecorder(tmp_path / "runs").start(name="big")
    recorder.finish("done")
    with open(recorder.path / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write("[" * 100_000 + "\n")  # deeper than any parser should go
        handle.write('{"kind": "epoch", "epoch": 1, "step": 1, "metrics": {"x": ' + "1" * (2 * 1024 * 1024) + "}}\n")
        handle.write('{"kind": "epoch", "epoch": 2, "step": 2, "time": 0, "metrics": {"x": 0.5}}\n')
    metrics = read_metrics(load_run(recorder.path))
    assert metrics.skipped == 2 and metrics.series("x") == [(2, 0.5)]
    (recorder.path / "run.json").write_text('{"format": "zae-engine run record", "pad": "' + "x" * (9 * 2**20) + '"}')
    with pytest.raises(RunsError, match="larger than 8 MiB"):
        load_run(recorder.path)


def test_non_finite_values_never_reach_the_files(tmp_path):
    recorder = RunRecorder(tmp_path / "runs").start(options={"lr": math.inf})
    recorder.log({"loss": -math.inf}, step=1, epoch=1)
    recorder.finish(
        "failed", error_summary="NonFiniteLossError: loss is -inf", best={"metric": "loss", "value": math.nan}
    )
    for name in ("run.json", "metrics.jsonl"):
        text = (recorder.path / name).read_text()
        assert "Infinity" not in text and "NaN" not in text
