"""SLURM: reading srun's environment (the compact node list included), and two simulated srun tasks on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from test_mpu_torchrun import JOB, check_ranks
from zae_mpu.slurm import expand_nodelist, first_host, slurm_task

from zae_engine.errors import ConfigError


@pytest.mark.parametrize(
    ("nodelist", "hosts"),
    [
        ("node07", ["node07"]),
        ("node[01-03]", ["node01", "node02", "node03"]),
        ("gpu[07-09,12],cpu01", ["gpu07", "gpu08", "gpu09", "gpu12", "cpu01"]),
        ("a[8-10]", ["a8", "a9", "a10"]),  # no padding: the width of the lower bound
        ("n[098-101]", ["n098", "n099", "n100", "n101"]),
        ("rack[1-2]-n[01-02]", ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"]),
        ("x[1-2]y", ["x1y", "x2y"]),
        (" gpu-a100[3,5] , login ", ["gpu-a1003", "gpu-a1005", "login"]),
        ("10.0.0.1,10.0.0.2", ["10.0.0.1", "10.0.0.2"]),
    ],
)
def test_compact_node_lists_expand_like_scontrol_show_hostnames(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts
    assert first_host(nodelist) == hosts[0]


@pytest.mark.parametrize(
    ("nodelist", "why"),
    [
        ("node[01-03", "'\\[' without '\\]'"),
        ("node01]", "'\\]' without '\\['"),
        ("node[[1-2]]", "nested"),
        ("node[03-01]", "runs backwards"),
        ("node[a-c]", "is not N or N-M"),
        ("", "names no host"),
    ],
)
def test_a_node_list_it_cannot_read_is_named_with_the_way_around(nodelist, why):
    with pytest.raises(ConfigError, match=why) as caught:
        first_host(nodelist)
    assert "MASTER_ADDR" in str(caught.value) or "no host" in str(caught.value)


def test_a_huge_node_list_is_never_expanded_to_find_its_first_host():
    assert first_host("n[0-999999999999],m[1-5]") == "n0"
    with pytest.raises(ConfigError, match="more than 10 hosts"):
        expand_nodelist("n[0-999999999999]", limit=10)


SRUN = {
    "SLURM_PROCID": "1",
    "SLURM_NTASKS": "4",
    "SLURM_LOCALID": "1",
    "SLURM_NODELIST": "gpu[07-08]",
    "SLURM_STEP_ID": "0",
    "SLURM_JOB_ID": "123456",
}


def test_an_srun_task_knows_its_rank_world_device_and_where_rank_zero_listens():
    task = slurm_task(SRUN, fallback_port=12355)
    assert (task.rank, task.world_size, task.local_rank, task.master_addr) == (1, 4, 1, "gpu07")
    assert task.master_port == 15000 + 123456 % 20000  # from the job id: the same on every task, apart per job
    assert task.init_method == f"tcp://gpu07:{task.master_port}"
    exported = slurm_task({**SRUN, "MASTER_ADDR": "10.1.2.3", "MASTER_PORT": "29500"}, fallback_port=12355)
    assert (exported.master_addr, exported.master_port) == ("10.1.2.3", 29500)
    no_job = {k: v for k, v in SRUN.items() if k != "SLURM_JOB_ID"}
    assert slurm_task(no_job, fallback_port=12355).master_port == 12355


@pytest.mark.parametrize(
    "environ",
    [
        {k: v for k, v in SRUN.items() if k != "SLURM_STEP_ID"},  # the batch script itself, or an salloc shell
        {**SRUN, "SLURM_NTASKS": "1", "SLURM_PROCID": "0"},  # srun -n1: spawn per device as anywhere else
        {},
    ],
    ids=["batch-script", "one-task", "no-slurm"],
)
def test_processes_srun_did_not_start_among_several_do_not_join(environ):
    assert slurm_task(environ, fallback_port=12355) is None


@pytest.mark.parametrize(
    ("change", "words"),
    [({"SLURM_PROCID": "one"}, "SLURM_PROCID='one' is not a whole number"), ({"SLURM_PROCID": "4"}, "outside 0..3")],
)
def test_a_broken_slurm_environment_is_named(change, words):
    with pytest.raises(ConfigError, match=words):
        slurm_task({**SRUN, **change}, fallback_port=12355)


def port_in_the_job_id_range() -> int:
    """A free port the job-id rule can produce (15000-34999), so the simulated tasks derive it themselves."""
    for port in range(15000 + os.getpid() % 20000, 35000):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 15000-34999")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_simulated_srun_tasks_join_without_torchrun(tmp_path, strategy):
    port = port_in_the_job_id_range()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_")) and k not in ("RANK",)}
    base.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    tasks = [
        subprocess.Popen(
            [sys.executable, str(JOB), str(tmp_path), strategy],
            env={
                **base,
                "SLURM_PROCID": str(rank),
                "SLURM_NTASKS": "2",
                "SLURM_LOCALID": str(rank),
                "SLURM_NODELIST": "localhost,nodeb[01-02]",  # rank 0 runs on the first host: here, loopback
                "SLURM_STEP_ID": "0",
                "SLURM_JOB_ID": str(port - 15000 + 3 * 20000),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    try:
        results = [task.communicate(timeout=110) for task in tasks]
    finally:
        for task in tasks:
            if task.poll() is None:
                task.kill()
                task.wait()
    for task, (_, err) in zip(tasks, results):
        assert task.returncode == 0, err[-3000:]
    check_ranks(tmp_path)
