"""`zae runs` through the real console script, over records written by real writer processes.

The writers (tests/runs_writer.py) end every way a run can end: done, failed, stopped early, interrupted by
SIGINT, and killed by SIGKILL while holding its record open.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
WRITER = HERE / "runs_writer.py"
_SCRIPT = Path(sys.executable).with_name("zae")
ZAE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "zae_engine.cli"]
LIST_KEYS = ["id", "name", "status", "epochs", "best", "started", "duration_s", "dir"]


def zae(*args: str, root: Path | None = None, stdin: str | None = None, env: dict | None = None):
    full_env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "160", **(env or {})}
    extra = ["--dir", str(root)] if root is not None else []
    return subprocess.run([*ZAE, *args, *extra], input=stdin, env=full_env, capture_output=True, text=True, timeout=120)


def as_json(*args: str, root: Path) -> object:
    result = zae(*args, "--json", root=root)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def start_writer(root: Path, name: str, mode: str, epochs: int, lr: float = 0.1) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(WRITER), str(root), name, mode, str(epochs), str(lr)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_ready(process: subprocess.Popen) -> None:
    line = process.stdout.readline()
    assert line.strip() == "ready", process.stderr.read()


def by_name(rows: list[dict]) -> dict[str, dict]:
    return {row["name"]: row for row in rows}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A runs folder with one run of every ending; `killed` and `stopped` are ended by signals."""
    root = tmp_path_factory.mktemp("records") / "runs"
    finishing = [
        start_writer(root, "baseline", "done", 3, 0.1),
        start_writer(root, "faster", "done", 3, 0.3),
        start_writer(root, "broken", "failed", 2),
        start_writer(root, "patient", "stopped_early", 2),
    ]
    killed, stopped = start_writer(root, "killed", "hold", 2), start_writer(root, "stopped", "hold", 2)
    wait_ready(killed)
    wait_ready(stopped)
    rows = by_name(as_json("runs", "list", root=root))
    assert rows["killed"]["status"] == "running"  # alive: its writer holds the lock
    killed.send_signal(signal.SIGKILL)
    stopped.send_signal(signal.SIGINT)
    try:
        for process in [*finishing, killed, stopped]:
            process.communicate(timeout=120)
    finally:
        for process in [*finishing, killed, stopped]:
            if process.poll() is None:  # never outlive the fixture, whatever went wrong
                process.kill()
                process.wait()
    assert [p.returncode for p in finishing] == [0, 0, 1, 0]
    assert killed.returncode == -signal.SIGKILL
    return root


def test_list_json_has_exactly_the_contract_keys_and_every_ending(recorded):
    rows = as_json("runs", "list", root=recorded)
    assert all(list(row) == LIST_KEYS for row in rows)
    statuses = {row["name"]: row["status"] for row in rows}
    assert statuses == {
        "baseline": "done",
        "faster": "done",
        "broken": "failed",
        "patient": "stopped_early",
        "stopped": "interrupted",
        "killed": "crashed",
    }
    baseline = by_name(rows)["baseline"]
    assert baseline["epochs"] == 3
    assert baseline["best"]["metric"] == "valid/loss" and baseline["best"]["epoch"] == 3
    assert baseline["best"]["value"] == pytest.approx(1.2 / 3.1)
    assert Path(baseline["dir"]).name == baseline["id"] and baseline["duration_s"] >= 0
    assert [row["started"] for row in rows] == sorted(row["started"] for row in rows)


def test_list_table_status_filter_and_sort(recorded):
    table = zae("runs", "list", root=recorded)
    assert table.returncode == 0, table.stderr
    lines = {line.split()[1]: line for line in table.stdout.splitlines()[1:]}
    assert "crashed" in lines["killed"] and "failed" in lines["broken"]
    assert "valid/loss 0.3871 @3" in lines["baseline"]
    crashed = as_json("runs", "list", "--status", "crashed", "--status", "failed", root=recorded)
    assert sorted(row["name"] for row in crashed) == ["broken", "killed"]
    by_acc = [row["name"] for row in as_json("runs", "list", "--sort", "valid/loss", root=recorded)]
    assert by_acc.index("faster") < by_acc.index("baseline") < by_acc.index("broken")
    reverse = [row["name"] for row in as_json("runs", "list", "--sort", "valid/loss", "--reverse", root=recorded)]
    assert reverse.index("broken") < reverse.index("baseline")
    typo = zae("runs", "list", "--status", "crashd", root=recorded)
    assert typo.returncode == 1 and "did you mean 'crashed'" in typo.stderr and "Traceback" not in typo.stderr
    unknown_sort = zae("runs", "list", "--sort", "valid/los", root=recorded)
    assert unknown_sort.returncode == 1 and "did you mean 'valid/loss'" in unknown_sort.stderr


def test_failed_run_keeps_the_one_line_error(recorded):
    shown = as_json("runs", "show", "broken", root=recorded)
    assert shown["status"] == "failed"
    assert shown["record"]["error"] == "ValueError: loss exploded after epoch 2"
    assert shown["final"]["valid/loss"] == pytest.approx(1.2 / 2.1)


def test_killed_run_is_crashed_and_readable_up_to_its_last_line(recorded):
    shown = as_json("runs", "show", "killed", root=recorded)
    assert shown["status"] == "crashed" and shown["record"]["status"] == "running"
    assert shown["epochs"] == 2 and shown["skipped_lines"] == 0
    assert shown["final"] == pytest.approx({"train/loss": 1 / 2.1, "valid/loss": 1.2 / 2.1, "valid/acc": 0.75})
    exported = zae("runs", "export", "killed", "--csv", root=recorded)
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert len(rows) == 2 * 4 + 2 and [r["kind"] for r in rows].count("epoch") == 2


def test_a_torn_last_line_is_skipped_and_the_rest_kept(recorded, tmp_path):
    root = tmp_path / "runs"
    run_dir = Path(by_name(as_json("runs", "list", root=recorded))["killed"]["dir"])
    shutil.copytree(run_dir, root / run_dir.name)
    with open(root / run_dir.name / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"kind": "epoch", "epoch": 3, "step": 12, "metrics": {"valid/lo')  # a write cut short
    shown = as_json("runs", "show", "last", root=root)
    assert shown["status"] == "crashed" and shown["skipped_lines"] == 1
    assert shown["final"]["valid/acc"] == 0.75  # epoch 2, the last complete line
    human = zae("runs", "show", "last", root=root)
    assert human.returncode == 0 and "1 metrics line(s) could not be read" in human.stderr


def test_show_prints_record_metrics_checkpoints_and_a_loss_chart(recorded):
    manifest = {
        "format": "zae-engine checkpoint manifest",
        "version": 1,
        "checkpoints": [
            {
                "name": "epoch-0002",
                "kind": "epoch",
                "epoch": 2,
                "step": 8,
                "save_format": "safetensors",
                "monitor": "valid/loss",
                "value": 0.4,
            },
            {
                "name": "epoch-0003",
                "kind": "epoch",
                "epoch": 3,
                "step": 12,
                "save_format": "safetensors",
                "monitor": "valid/loss",
                "value": 0.38,
            },
        ],
        "latest": "epoch-0003",
        "best": "epoch-0003",
    }
    save_path = recorded / "ckpt-baseline"
    save_path.mkdir(exist_ok=True)
    (save_path / "manifest.json").write_text(json.dumps(manifest))
    shown = zae("runs", "show", "baseline", root=recorded)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "baseline" in text and "done" in text and "optimizer.init_args.lr" in text
    assert "final (epoch 3)" in text and "valid/acc" in text
    assert "epoch-0003" in text and "best latest" in text
    assert "━━ train/loss" in text and "━━ valid/loss" in text
    assert any("\u2800" < ch <= "\u28ff" for ch in text)  # the chart's Braille dots
    data = as_json("runs", "show", "baseline", root=recorded)
    assert [c["name"] for c in data["checkpoints"]] == ["epoch-0002", "epoch-0003"]
    assert data["checkpoints"][1]["marks"] == ["best", "latest"]


def test_run_references(recorded):
    rows = as_json("runs", "list", root=recorded)
    faster = by_name(rows)["faster"]
    newest = max(rows, key=lambda row: row["started"])
    assert as_json("runs", "show", faster["id"], root=recorded)["name"] == "faster"
    assert as_json("runs", "show", "last", root=recorded)["id"] == newest["id"]
    assert as_json("runs", "show", faster["dir"], root=recorded)["name"] == "faster"
    unique = next(
        faster["id"][:n] for n in range(8, 21) if sum(r["id"].startswith(faster["id"][:n]) for r in rows) == 1
    )
    assert as_json("runs", "show", unique, root=recorded)["name"] == "faster"
    ambiguous = zae("runs", "show", faster["id"][:8], root=recorded)
    assert ambiguous.returncode == 1 and "matches several runs" in ambiguous.stderr
    assert faster["id"] in ambiguous.stderr
    typo = zae("runs", "show", "fastr", root=recorded)
    assert typo.returncode == 1 and "did you mean 'faster'" in typo.stderr and "Traceback" not in typo.stderr
    nowhere = zae("runs", "show", "last", root=recorded / "missing")
    assert nowhere.returncode == 1 and "the folder does not exist" in nowhere.stderr


def test_compare_two_runs(recorded):
    result = zae("runs", "compare", "baseline", "faster", root=recorded)
    assert result.returncode == 0, result.stderr
    assert "optimizer.init_args.lr" in result.stdout and "0.3" in result.stdout
    assert "addons.state_manager.save_path" in result.stdout
    assert "model.init_args.hidden" not in result.stdout  # the same in both
    data = as_json("runs", "compare", "baseline", "faster", root=recorded)
    assert [run["name"] for run in data["runs"]] == ["baseline", "faster"]
    assert data["options"]["optimizer.init_args.lr"] == [0.1, 0.3]
    assert data["final"]["valid/loss"] == pytest.approx([1.2 / 3.1, 1.2 / 3.3])
    assert data["best"]["valid/acc"] == pytest.approx([1 - 0.5 / 3, 1 - 0.5 / 3])
    alone = zae("runs", "compare", "baseline", "baseline", root=recorded)
    assert alone.returncode == 1 and "two or more different runs" in alone.stderr


def test_plot_png_has_the_promised_size(recorded, tmp_path):
    from PIL import Image

    from zae_engine.runs.plot import FIGURE_SIZE_PX

    out = tmp_path / "curves.png"
    result = zae("runs", "plot", "baseline", "faster", "--out", str(out), root=recorded)
    assert result.returncode == 0, result.stderr
    with Image.open(out) as image:
        image.load()
        assert image.size == FIGURE_SIZE_PX == (1000, 600)


def test_plot_svg_names_both_runs_and_steps_work(recorded, tmp_path):
    out = tmp_path / "curves.svg"
    result = zae(
        "runs", "plot", "baseline", "faster", "--metric", "valid/acc", "--step", "--out", str(out), root=recorded
    )
    assert result.returncode == 0, result.stderr
    svg = out.read_text(encoding="utf-8")
    assert "baseline (" in svg and "faster (" in svg and "valid/acc" in svg and ">step<" in svg


def test_terminal_plot_and_its_json(recorded):
    result = zae("runs", "plot", "baseline", "faster", root=recorded)
    assert result.returncode == 0, result.stderr
    assert "train/loss" in result.stdout and "valid/loss" in result.stdout
    assert "━━ baseline (" in result.stdout and "━━ faster (" in result.stdout
    data = as_json("runs", "plot", "baseline", "--step", "--metric", "train/loss", root=recorded)
    points = next(iter(data["metrics"]["train/loss"].values()))
    assert data["x"] == "step" and [x for x, _ in points] == list(range(1, 13))  # the step lines, not epochs
    per_epoch = as_json("runs", "plot", "baseline", root=recorded)
    assert [x for x, _ in next(iter(per_epoch["metrics"]["valid/loss"].values()))] == [1, 2, 3]
    typo = zae("runs", "plot", "baseline", "--metric", "valid/accc", root=recorded)
    assert typo.returncode == 1 and "did you mean 'valid/acc'" in typo.stderr


def test_plot_file_without_matplotlib_names_the_extra(recorded, tmp_path):
    blocker = tmp_path / "no_matplotlib" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    out = tmp_path / "curves.png"
    result = zae("runs", "plot", "baseline", "--out", str(out), root=recorded, env={"PYTHONPATH": str(blocker.parent)})
    assert result.returncode == 1
    assert "pip install 'zae-engine[plot]'" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()
    terminal = zae("runs", "plot", "baseline", root=recorded, env={"PYTHONPATH": str(blocker.parent)})
    assert terminal.returncode == 0, terminal.stderr  # the terminal chart needs no extra


def test_export_csv_to_a_file(recorded, tmp_path):
    out = tmp_path / "baseline.csv"
    result = zae("runs", "export", "baseline", "--csv", "--out", str(out), root=recorded)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert list(rows[0])[:4] == ["kind", "epoch", "step", "time"]
    epochs = [row for row in rows if row["kind"] == "epoch"]
    assert [row["epoch"] for row in epochs] == ["1", "2", "3"]
    assert float(epochs[-1]["valid/loss"]) == pytest.approx(1.2 / 3.1)
    nowhere = zae("runs", "export", "baseline", "--csv", "--out", str(tmp_path / "missing" / "x.csv"), root=recorded)
    assert nowhere.returncode == 1 and "does not exist; create it first" in nowhere.stderr
    no_format = zae("runs", "export", "baseline", root=recorded)
    assert no_format.returncode == 1 and "--csv" in no_format.stderr
    rows_json = as_json("runs", "export", "baseline", root=recorded)
    assert len(rows_json) == len(rows)


def test_rm_asks_refuses_running_runs_and_removes(tmp_path):
    root = tmp_path / "runs"
    for name in ("keep", "drop"):
        assert start_writer(root, name, "done", 1).wait(timeout=120) == 0
    live = start_writer(root, "live", "hold", 1)
    try:
        wait_ready(live)
        no = zae("runs", "rm", "drop", root=root, stdin="n\n")
        assert no.returncode == 1 and "nothing removed" in no.stderr
        silent = zae("runs", "rm", "drop", root=root, stdin="")
        assert silent.returncode == 1 and "nothing removed" in silent.stderr
        assert sorted(by_name(as_json("runs", "list", root=root))) == ["drop", "keep", "live"]
        yes = zae("runs", "rm", "drop", root=root, stdin="y\n")
        assert yes.returncode == 0, yes.stderr
        running = zae("runs", "rm", "live", "--yes", root=root)
        assert running.returncode == 1 and "still running" in running.stderr and "--force" in running.stderr
        assert sorted(by_name(as_json("runs", "list", root=root))) == ["keep", "live"]
        forced = zae("runs", "rm", "live", "--yes", "--force", root=root)
        assert forced.returncode == 0, forced.stderr
    finally:
        live.kill()
        live.communicate(timeout=60)
    assert sorted(by_name(as_json("runs", "list", root=root))) == ["keep"]
    gone = zae("runs", "rm", "drop", "--yes", root=root)
    assert gone.returncode == 1 and "no run 'drop'" in gone.stderr


def test_damaged_and_foreign_folders_do_not_break_the_list(recorded, tmp_path):
    root = tmp_path / "runs"
    source = Path(by_name(as_json("runs", "list", root=recorded))["baseline"]["dir"])
    shutil.copytree(source, root / source.name)
    (root / "20260101-000000-dead").mkdir()
    (root / "20260101-000000-dead" / "run.json").write_text('{"format": "zae-engine run record", "id": 3')
    (root / "notes").mkdir()  # no run.json: not a run
    outside = tmp_path / "elsewhere"
    shutil.copytree(source, outside)
    (root / "20260101-000000-link").symlink_to(outside, target_is_directory=True)
    result = zae("runs", "list", "--json", root=root)
    assert result.returncode == 0, result.stderr
    assert [row["name"] for row in json.loads(result.stdout)] == ["baseline"]
    assert "skipped" in result.stderr and "not JSON" in result.stderr
    damaged = zae("runs", "show", "20260101-000000-dead", root=root)
    assert damaged.returncode == 1 and "not JSON" in damaged.stderr and "Traceback" not in damaged.stderr
    linked = zae("runs", "show", str(root / "20260101-000000-link"), root=root)
    assert linked.returncode == 1 and "symlink" in linked.stderr


def test_runs_commands_import_no_torch(recorded, tmp_path):
    scratch = tmp_path / "runs"
    shutil.copytree(recorded, scratch)
    code = textwrap.dedent(
        f"""
        import contextlib, io, sys
        from zae_engine.cli import main
        root = {str(scratch)!r}
        for argv in (["list"], ["list", "--json"], ["show", "last"], ["show", "baseline", "--json"],
                     ["compare", "baseline", "faster"], ["plot", "baseline", "faster"],
                     ["plot", "baseline", "--out", {str(tmp_path / "c.png")!r}], ["export", "baseline", "--csv"],
                     ["rm", "broken", "--yes"]):
            sys.argv = ["zae", "runs", *argv, "--dir", root]
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    main()
                except SystemExit as exit:
                    assert not exit.code, (argv, exit.code)
        print(sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "zae_engine.trainer"))))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("command", [["list", "--json"], ["export", "baseline", "--json"], ["show", "baseline"]])
def test_output_cut_short_by_the_reader_is_not_an_error(recorded, command):
    """`zae runs list --json | head -1`: the reader leaves; zae stops without an error or a traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first write: every write fails with EPIPE
    try:
        result = subprocess.run(
            [*ZAE, "runs", *command, "--dir", str(recorded)], stdout=write_end, stderr=subprocess.PIPE, timeout=120
        )
    finally:
        os.close(write_end)
    assert result.returncode == 141  # 128 + SIGPIPE, as for any Unix filter
    assert result.stderr.decode() == ""


def test_names_and_options_that_look_like_markup_are_printed_as_text(tmp_path):
    from zae_engine.runs import RunRecorder

    root = tmp_path / "runs"
    for name in ("a[/b]", "[bold]c"):
        with RunRecorder(root).start(name=name, options={"[/x]": "[red]y"}, tags={"t": "[/]"}) as recorder:
            recorder.log({"train/loss": 1.0, "[/m]": 2.0}, step=1, epoch=1)
    for args in (["list"], ["show", "a[/b]"], ["compare", "a[/b]", "[bold]c"], ["plot", "a[/b]", "--metric", "[/m]"]):
        result = zae("runs", *args, root=root)
        assert result.returncode == 0, (args, result.stderr)
        assert "a[/b]" in result.stdout, args
    shown = zae("runs", "show", "a[/b]", root=root).stdout
    assert '"[red]y"' in shown and "[/m]" in shown and "t=[/]" in shown
