"""How the loop moves a batch: nothing copied when it is already on the device, everything else moved."""

from __future__ import annotations

import pickle
from collections import namedtuple

import torch

from zae_engine.trainer.batch import batch_mover, move_to_cpu

Pair = namedtuple("Pair", "x y")


def test_the_cpu_mover_hands_back_a_batch_already_there_unchanged():
    x, y = torch.randn(4, 3), torch.arange(4)
    move = batch_mover(torch.device("cpu"))
    assert move is move_to_cpu
    for batch in ((x, y), [x, y], x):
        assert move(batch) is batch


def test_the_cpu_mover_moves_what_is_elsewhere_and_keeps_containers_and_plain_values():
    moved = batch_mover(torch.device("meta"))((torch.randn(2, 3), "name", {"mask": torch.ones(2)}))
    assert moved[0].device.type == "meta" and moved[1] == "name" and moved[2]["mask"].device.type == "meta"
    pair = move_to_cpu(Pair(torch.ones(2), 3))  # a namedtuple with a non-tensor goes the general way
    assert isinstance(pair, Pair) and pair.y == 3 and torch.equal(pair.x, torch.ones(2))
    mixed = move_to_cpu([torch.ones(1), 2.5])
    assert isinstance(mixed, list) and mixed[1] == 2.5


def test_movers_pickle_for_spawned_workers():
    for device in ("cpu", "meta"):
        move = pickle.loads(pickle.dumps(batch_mover(torch.device(device))))
        assert move(torch.zeros(1)).device.type == device
