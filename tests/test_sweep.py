"""`zae sweep` for real: the CLI in subprocesses, trials in processes of their own, a journal file on disk.

The main sweep's trials are enqueued in the study beforehand (Optuna's `enqueue_trial`, through the same journal
file), so which trial gets which values is fixed and every outcome below is certain, not likely: good rates
complete, a rate of 1e-6 is pruned after its first epoch (two good trials have finished by then: with two jobs, a
trial starts only after all but one of those before it ended), width 13 kills its own process, width 14 raises.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna

_SCRIPT = Path(sys.executable).with_name("zae")
ZAE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "zae_engine.cli"]

TOY = '''
import os, signal, time

from torch.utils.data import Dataset

from zae_engine.demo.toy import RandomDataset, ToyTrainer


class SweepTrainer(ToyTrainer):
    """Width 13 kills its own process in its first step (a crash); width 14 raises there (an error)."""

    def train_step(self, batch):
        width = self.model[0].out_features
        if width == 13:
            os.kill(os.getpid(), signal.SIGKILL)
        if width == 14:
            raise ValueError("injected failure in the first step")
        return super().train_step(batch)


class SlowData(Dataset):
    """RandomDataset that takes `delay` seconds per sample, so trials are still running when a test stops them."""

    def __init__(self, size=64, seed=0, delay=0.0):
        self.data, self.delay = RandomDataset(size, seed=seed), delay

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        time.sleep(self.delay)
        return self.data[index]
'''

SPEC = """\
trainer: {class_path: sweep_toy.SweepTrainer, init_args: {log_bar: false}}
device: cpu
model: {class_path: zae_engine.demo.toy.TinyNet, init_args: {hidden: 16}}
optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.1, momentum: 0.9}}
data:
  train: {dataset: {class_path: TRAIN_DATA, init_args: {size: 240}}, batch_size: 24, shuffle: true}
  valid: {dataset: {class_path: zae_engine.demo.toy.RandomDataset, init_args: {size: 200, seed: 1}}, batch_size: 200}
run: {n_epoch: EPOCHS, seed: 0}
sweep:
  metric: valid/acc
  direction: maximize
  pruner: {name: median, startup_trials: 2}
  params:
PARAMS"""
SAFE = "    optimizer.init_args.lr: {log_float: [0.01, 0.5]}\n    model.init_args.hidden: {choice: [16, 32]}\n"
WITH_FAILURES = (
    "    optimizer.init_args.lr: {log_float: [1.0e-6, 1.0]}\n    model.init_args.hidden: {choice: [16, 13, 14]}\n"
)

LR, HIDDEN = "optimizer.init_args.lr", "model.init_args.hidden"
# Trial number -> values, and what must become of them. Valid accuracy after epochs 1, 2, 3 (seed 0): lr 0.05:
# .745 .87 .935; lr 0.3: .91 .95 .955; lr 0.1: .85 .925 .98; lr 0.2: .855 .97 .965; lr 1e-6: .585 .585 .585.
# The median pruner stops a trial whose best so far is below the median of the finished trials at that epoch: each
# good trial here is at or above that median at every epoch (given the ones before it), the 1e-6 ones fall below.
ENQUEUED = [
    ({LR: 0.05, HIDDEN: 16}, "complete"),
    ({LR: 0.3, HIDDEN: 16}, "complete"),
    ({LR: 0.1, HIDDEN: 16}, "complete"),
    ({LR: 0.1, HIDDEN: 13}, "failed"),  # its process is killed
    ({LR: 1e-6, HIDDEN: 16}, "pruned"),
    ({LR: 0.2, HIDDEN: 16}, "complete"),
    ({LR: 0.1, HIDDEN: 14}, "failed"),  # raises
    ({LR: 1e-6, HIDDEN: 16}, "pruned"),
]


def env() -> dict[str, str]:
    return {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}


def make_folder(
    tmp_path: Path, epochs: int = 3, data: str = "zae_engine.demo.toy.RandomDataset", params: str = SAFE
) -> Path:
    (tmp_path / "sweep_toy.py").write_text(TOY)
    text = SPEC.replace("EPOCHS", str(epochs)).replace("TRAIN_DATA", data).replace("PARAMS", params)
    (tmp_path / "search.yaml").write_text(text)
    return tmp_path


def zae(folder: Path, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([*ZAE, *args], cwd=folder, env=env(), capture_output=True, text=True, timeout=timeout)


def show(folder: Path, study: str = "search", *more: str) -> dict:
    result = zae(folder, "sweep", "show", study, "--json", *more)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def journal(folder: Path, study: str = "search") -> Path:
    return folder / "runs" / "sweeps" / study / "optuna.journal"


def open_journal(folder: Path, study: str = "search") -> optuna.storages.BaseStorage:
    from optuna.storages.journal import JournalFileBackend

    path = journal(folder, study)
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def run_records(folder: Path) -> list[dict]:
    records = []
    for path in sorted((folder / "runs").glob("*/run.json")):
        records.append(json.loads(path.read_text()))
    return records


def wait_for(condition, timeout: float = 180.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {condition.__name__}")


# -------------------------------------------------------------------------------------------------- the sweep
def test_a_sweep_of_eight_trials_two_at_a_time_prunes_fails_resumes_and_reproduces_its_best(tmp_path):
    folder = make_folder(tmp_path, params=WITH_FAILURES)
    study = optuna.create_study(storage=open_journal(folder), study_name="search", direction="maximize")
    for values, _ in ENQUEUED:
        study.enqueue_trial(values)

    first = zae(folder, "sweep", "search.yaml", "--trials", "5", "--jobs", "2")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "study search, 5 trial(s) in all, 2 at a time" in first.stdout and "Traceback" not in first.stderr
    shown = show(folder)
    states = {t["number"]: t["state"] for t in shown["trials"]}
    assert states == {0: "complete", 1: "complete", 2: "complete", 3: "failed", 4: "pruned"} | {
        n: "waiting" for n in (5, 6, 7)
    }

    resumed = zae(folder, "sweep", "search.yaml", "--trials", "8", "--jobs", "2")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    shown = show(folder)
    trials = {t["number"]: t for t in shown["trials"]}
    assert {n: t["state"] for n, t in trials.items()} == {n: state for n, (_, state) in enumerate(ENQUEUED)}
    for number, (values, _) in enumerate(ENQUEUED):
        assert trials[number]["params"] == values  # exactly: 1e-06 is the float 1e-06
    assert "killed by SIGKILL" in trials[3]["error"] and "trial-3.log" in trials[3]["error"]
    assert trials[6]["error"] == "ValueError: injected failure in the first step"
    assert trials[4]["epochs"] == trials[7]["epochs"] == 1  # pruned after their first epoch
    assert trials[4]["error"].startswith("pruned after epoch 1: valid/acc = ")

    best = shown["best"]
    values = [t["value"] for t in trials.values() if t["value"] is not None]
    assert (
        best["number"]
        == max((t for t in trials.values() if t["state"] == "complete"), key=lambda t: t["value"])["number"]
    )
    assert best["value"] - min(values) > 0.2, values  # the best beats the worst by a clear margin

    again = zae(folder, "sweep", "search.yaml", "--trials", "8", "--jobs", "2")
    assert again.returncode == 0 and len(show(folder)["trials"]) == 8  # complete: nothing more to run

    # every trial is a recorded run, tagged with its study and number
    records = {r["tags"].get("trial"): r for r in run_records(folder) if r["tags"].get("study") == "search"}
    assert sorted(records, key=int) == [str(n) for n in range(8)]
    assert {n: records[str(n)]["status"] for n in (0, 4, 6)} == {0: "done", 4: "stopped_early", 6: "failed"}
    assert records["0"]["spec"]["optimizer"]["init_args"]["lr"] == 0.05 and "sweep" not in records["0"]["spec"]
    assert all((folder / "runs" / "sweeps" / "search" / "logs" / f"trial-{n}.log").is_file() for n in range(8))
    compared = zae(folder, "runs", "compare", "search-0", "search-1", "--json")
    assert compared.returncode == 0, compared.stderr
    assert "optimizer.init_args.lr" in json.loads(compared.stdout)["options"]

    # best.yaml: a complete spec without the sweep; `zae run` trains the best trial again, to the same value
    best_yaml = folder / "runs" / "sweeps" / "search" / "best.yaml"
    import yaml

    data = yaml.safe_load(best_yaml.read_text())
    assert "sweep" not in data and data["optimizer"]["init_args"]["lr"] == best["params"][LR]
    rerun = zae(folder, "run", str(best_yaml))
    assert rerun.returncode == 0, rerun.stderr
    final = json.loads(zae(folder, "runs", "show", "last", "--json").stdout)["record"]["final"]
    assert final["valid/acc"] == best["value"]  # bit for bit: same seed, same values, same metrics


def test_the_metric_must_exist_and_a_wrong_one_stops_the_sweep_at_its_line(tmp_path):
    folder = make_folder(tmp_path, epochs=1)
    spec = folder / "search.yaml"
    spec.write_text(spec.read_text().replace("metric: valid/acc", "metric: valid/accuracy"))
    result = zae(folder, "sweep", "search.yaml", "--trials", "4", "--jobs", "2")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "search.yaml:10: sweep.metric: " in result.stderr
    assert "'valid/accuracy' is not in the epoch summary (did you mean 'valid/acc'?)" in result.stderr
    assert len(show(folder)["trials"]) <= 2  # the trials already started, no more


def test_a_changed_search_is_refused_and_a_bad_study_name_too(tmp_path):
    folder = make_folder(tmp_path, epochs=1)
    assert zae(folder, "sweep", "search.yaml", "--trials", "1").returncode == 0
    spec = folder / "search.yaml"
    spec.write_text(spec.read_text().replace("[0.01, 0.5]", "[0.02, 0.5]"))
    result = zae(folder, "sweep", "search.yaml", "--trials", "2")
    assert result.returncode == 1 and "was made with another search (params differ)" in result.stderr
    result = zae(folder, "sweep", "search.yaml", "--study", "../elsewhere")
    assert result.returncode == 1 and "--study '../elsewhere': use letters, digits" in result.stderr
    missing = zae(folder, "sweep", "show", "serach")
    assert (
        missing.returncode == 1
        and "no study 'serach'" in missing.stderr
        and "(did you mean 'search'?)" in missing.stderr
    )


def test_a_journal_torn_by_a_crash_is_repaired_and_a_foreign_file_is_left_alone(tmp_path):
    folder = make_folder(tmp_path, epochs=1)
    assert zae(folder, "sweep", "search.yaml", "--trials", "1", "--pruner", "none").returncode == 0
    path = journal(folder)
    whole = path.read_bytes()
    torn = b'{"op_code": 4, "worker_id": "a-power-cut-he'  # an append cut short
    path.write_bytes(whole + torn)
    resumed = zae(folder, "sweep", "search.yaml", "--trials", "2", "--pruner", "none")
    assert resumed.returncode == 0, resumed.stderr
    assert (
        f"dropped an incomplete last line ({len(torn)} bytes), left by a crash while it was written" in resumed.stdout
    )
    assert path.read_bytes().startswith(whole)  # nothing before the torn line was touched
    assert [t["state"] for t in show(folder)["trials"]] == ["complete", "complete"]

    foreign = folder / "notes.txt"
    foreign.write_text("my notes, not a study")  # e.g. a mistyped --storage
    result = zae(folder, "sweep", "search.yaml", "--trials", "1", "--storage", str(foreign))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "notes.txt: not an Optuna journal" in result.stderr and "it was left as it is" in result.stderr
    assert foreign.read_text() == "my notes, not a study"
    shown = zae(folder, "sweep", "show", "search", "--storage", str(foreign))
    assert shown.returncode == 1 and "not an Optuna journal" in shown.stderr


def test_timeout_stops_starting_trials(tmp_path):
    folder = make_folder(tmp_path, epochs=1)
    result = zae(folder, "sweep", "search.yaml", "--trials", "3", "--timeout", "0")
    assert result.returncode == 0, result.stderr
    assert "--timeout 0 s reached: no further trials were started" in result.stdout
    assert show(folder)["trials"] == []


def test_sqlite_storage_works_too(tmp_path):
    folder = make_folder(tmp_path, epochs=1)
    url = f"sqlite:///{folder / 'studies.db'}"
    result = zae(folder, "sweep", "search.yaml", "--trials", "2", "--storage", url, "--sampler", "random")
    assert result.returncode == 0, result.stderr
    shown = show(folder, "search", "--storage", url)
    assert [t["state"] for t in shown["trials"]] == ["complete", "complete"] and shown["best"] is not None
    assert (folder / "runs" / "sweeps" / "search" / "best.yaml").is_file()


def test_the_example_sweep_runs(tmp_path):
    import shutil

    root = Path(__file__).resolve().parents[1]
    shutil.copytree(root / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("runs", "__pycache__"))
    command = ["sweep", "examples/specs/sweep.yaml", "--trials", "2", "--jobs", "2", "--set", "run.n_epoch=1"]
    result = zae(tmp_path, *command)
    assert result.returncode == 0, result.stdout + result.stderr
    shown = show(tmp_path, "sweep")
    assert len(shown["trials"]) == 2 and shown["best"] is not None
    assert set(shown["best"]["params"]) == {
        "optimizer.init_args.lr",
        "model.init_args.hidden",
        "optimizer.init_args.momentum",
    }


# ------------------------------------------------------------------------------------ processes and signals
def _slow_sweep(tmp_path: Path) -> tuple[Path, subprocess.Popen]:
    folder = make_folder(tmp_path, epochs=2, data="sweep_toy.SlowData")
    spec = folder / "search.yaml"
    spec.write_text(spec.read_text().replace("{size: 240}", "{size: 240, delay: 0.02}"))  # ~5 s per epoch
    process = subprocess.Popen(
        [*ZAE, "sweep", "search.yaml", "--trials", "4", "--jobs", "2", "--pruner", "none"],
        cwd=folder,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal would give it
    )
    return folder, process


def _two_trials_training(folder: Path):
    def two_trials_training():
        return (
            [r for r in run_records(folder) if r["status"] == "running"]
            if len([r for r in run_records(folder) if r["status"] == "running"]) == 2
            and all(
                (folder / "runs" / r["id"] / "metrics.jsonl").stat().st_size > 0
                for r in run_records(folder)
                if r["status"] == "running"
            )
            else None
        )

    return wait_for(two_trials_training)


def test_ctrl_c_stops_the_running_trials_after_their_step_marks_them_interrupted_and_exits_130(tmp_path):
    folder, process = _slow_sweep(tmp_path)
    try:
        _two_trials_training(folder)
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, out + err
    assert "SIGINT: starting no more trials" in out and "Traceback" not in err
    trials = show(folder)["trials"]
    assert [t["state"] for t in trials] == ["interrupted", "interrupted"]
    assert all(t["error"].startswith("training stopped by SIGINT") for t in trials), trials
    assert sorted(r["status"] for r in run_records(folder)) == ["interrupted", "interrupted"]
    # interrupted trials do not count: the rerun runs four more
    spec = folder / "search.yaml"
    spec.write_text(spec.read_text().replace("delay: 0.02", "delay: 0.0"))
    resumed = zae(folder, "sweep", "search.yaml", "--trials", "4", "--jobs", "2", "--pruner", "none")
    assert resumed.returncode == 0, resumed.stderr
    assert [t["state"] for t in show(folder)["trials"]] == ["interrupted"] * 2 + ["complete"] * 4


def test_a_killed_sweep_leaves_nothing_running_and_the_next_one_takes_over(tmp_path):
    folder, process = _slow_sweep(tmp_path)
    try:
        running = _two_trials_training(folder)
        os.kill(process.pid, signal.SIGKILL)  # the sweep process alone dies; its trials notice and stop
        process.communicate(timeout=60)

        def trials_stopped():
            return all(r["status"] != "running" for r in run_records(folder))

        wait_for(trials_stopped, timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert {r["status"] for r in run_records(folder)} == {"interrupted"}
    assert {r["id"] for r in run_records(folder)} == {r["id"] for r in running}
    spec = folder / "search.yaml"
    spec.write_text(spec.read_text().replace("delay: 0.02", "delay: 0.0"))
    resumed = zae(folder, "sweep", "search.yaml", "--trials", "4", "--jobs", "2", "--pruner", "none")
    assert resumed.returncode == 0, resumed.stderr
    assert "marked 2 trial(s) left running by a stopped sweep as interrupted: 0, 1" in resumed.stdout
    trials = show(folder)["trials"]
    assert [t["state"] for t in trials] == ["interrupted"] * 2 + ["complete"] * 4
    assert trials[0]["error"] == "its sweep process ended without finishing it"


def test_two_sweep_processes_share_one_study_without_duplicate_or_lost_trials(tmp_path):
    """Two machines, played by two processes on one journal file: eight trials in all, each run exactly once."""
    folder = make_folder(tmp_path, epochs=1, data="sweep_toy.SlowData")
    spec = folder / "search.yaml"
    spec.write_text(spec.read_text().replace("{size: 240}", "{size: 48, delay: 0.01}"))
    path = journal(folder)
    path.parent.mkdir(parents=True)
    path.touch()
    lock = Path(f"{path}.lock")  # Optuna's own journal lock: held here until both processes wait on the study
    os.symlink(path, lock)
    command = [*ZAE, "sweep", "search.yaml", "--trials", "8", "--jobs", "1", "--sampler", "random", "--pruner", "none"]
    processes = [
        subprocess.Popen(command, cwd=folder, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        for process in processes:  # the first line is printed just before the study is opened
            assert process.stdout.readline().startswith("zae sweep search.yaml: study search, 8 trial(s)")
        time.sleep(0.5)
        lock.unlink()
        outputs = [process.communicate(timeout=400) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, out + err
    trials = show(folder)["trials"]
    assert [t["number"] for t in trials] == list(range(8)) and {t["state"] for t in trials} == {"complete"}
    records = [r for r in run_records(folder) if r["tags"].get("study") == "search"]
    assert sorted(int(r["tags"]["trial"]) for r in records) == list(range(8))  # each trial ran exactly once
    assert all(r["status"] == "done" for r in records)
    storage = open_journal(folder)
    owners = {t.user_attrs["zae.pid"] for t in optuna.load_study(study_name="search", storage=storage).trials}
    assert owners == {p.pid for p in processes}  # both took part
