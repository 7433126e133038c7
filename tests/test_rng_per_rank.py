"""After a DDP resume every rank continues its own random streams, not rank 0's: 2 real gloo processes."""

from __future__ import annotations

import torch
import torch.multiprocessing as mp
from rng_ddp_workers import WORLD, worker

from zae_engine.testing import rendezvous


def run(tmp_path, name: str, save_path, epochs: int, resume: bool) -> list[dict[int, float]]:
    out = tmp_path / name
    out.mkdir()
    mp.spawn(worker, args=(rendezvous(out), str(save_path), epochs, resume, str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def test_each_rank_resumes_its_own_random_streams(tmp_path):
    straight = run(tmp_path, "straight", tmp_path / "a", 2, resume=False)
    run(tmp_path, "first", tmp_path / "b", 1, resume=False)
    resumed = run(tmp_path, "resumed", tmp_path / "b", 2, resume=True)
    assert [sorted(r) for r in resumed] == [[2], [2]]  # only epoch 2 ran after the resume
    assert [r[2] for r in resumed] == [r[2] for r in straight]  # exactly the draws of the straight run
    assert resumed[0][2] != resumed[1][2]  # and the ranks still draw differently
