"""The benchmark scripts run end to end for a handful of steps (no timing is asserted: numbers live in the README)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(module: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", module, "--quick", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_overhead_benchmark_runs_a_few_steps():
    report = run_benchmark("benchmarks.overhead", "--workload", "tiny")
    tiny = report["workloads"]["tiny"]
    assert tiny["steps_per_round"] == 5
    contenders = tiny["contenders"]
    assert {"raw loop", "Trainer log_bar=False", "Trainer log_bar=True"} <= set(contenders)
    assert contenders["raw loop"]["ratio"] == 1.0
    assert contenders["raw loop"]["best_ratio"] == 1.0
    for row in contenders.values():
        assert "error" not in row, row
        assert row["median_s_per_step"] > 0
        assert 0 < row["best_s_per_step"] <= row["median_s_per_step"]


def test_memory_benchmark_runs_a_few_steps():
    report = run_benchmark("benchmarks.memory")
    assert [s["steps"] for s in report["scenarios"]] == [400, 400]
    assert all(s["rss_end_mb"] > 0 for s in report["scenarios"])


def test_runs_list_benchmark_runs_over_a_few_runs():
    report = run_benchmark("benchmarks.runs_list")
    assert report["runs"] == 20 and report["rounds"] == 1
    assert all(value > 0 for value in report["median_s"].values())


def test_sweep_overhead_benchmark_runs_two_trials():
    report = run_benchmark("benchmarks.sweep_overhead")
    assert report["trials"] == 2 and len(report["sweep"]["training_s"]) == 2
    assert report["sweep"]["fixed_per_trial_s"] > 0 and report["zae_run"]["fixed_per_run_s"] > 0
    assert report["ratio_fixed_per_trial"] > 0


def test_checkpoint_stall_benchmark_runs_a_few_steps():
    report = run_benchmark("benchmarks.checkpoint_stall")
    assert set(report["stall"]) == {"sync", "async"}
    assert all(row["saves"] == 2 and row["median_write_s"] > 0 for row in report["stall"].values())
    assert set(report["step_cost"]["ratio_to_off"]) == {"off", "sync", "async"}


def test_fsdp_memory_benchmark_measures_both_strategies():
    report = run_benchmark("benchmarks.fsdp_memory")
    assert set(report["rows"]) == {"1 process", "ddp, 2 ranks", "fsdp, 2 ranks"}
    assert report["fsdp_over_ddp"] == pytest.approx(0.5, abs=0.05)  # memory, not time: exact up to padding


def test_step_instructions_benchmark_counts_every_contender_or_says_valgrind_is_missing():
    if shutil.which("valgrind") is None:  # the one benchmark that needs a tool: without it, one clear line and 2
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.step_instructions", "--quick"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2 and "apt install valgrind" in done.stdout
        return
    report = run_benchmark("benchmarks.step_instructions")
    assert report["steps_per_epoch"] == 20
    counts = report["contenders"]
    assert set(counts) == {"raw loop", "Trainer log_bar=False", "Trainer +run_log"}
    assert counts["raw loop"]["ratio"] == 1.0
    assert counts["Trainer log_bar=False"]["extra_per_step"] > 0  # the Trainer does more than the raw loop
