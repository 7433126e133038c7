"""Schedules: values, chaining, state round-trip, argument errors."""

from __future__ import annotations

import math

import pytest
import torch

from zae_engine.errors import ConfigError
from zae_engine.schedulers import CosineAnnealingScheduler, SchedulerBase, SchedulerChain, WarmUpScheduler


def optimizer(lr=1.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def lrs(scheduler, steps):
    out = [scheduler.get_last_lr()[0]]
    for _ in range(steps):
        scheduler.optimizer.step()
        scheduler.step()
        out.append(scheduler.get_last_lr()[0])
    return out


def test_cosine_follows_the_formula_and_stays_at_eta_min():
    sched = CosineAnnealingScheduler(optimizer(1.0), total_iters=10, eta_min=0.1)
    got = lrs(sched, 12)
    want = [0.1 + 0.9 * (1 + math.cos(math.pi * min(t, 10) / 10)) / 2 for t in range(13)]
    assert got == pytest.approx(want)


def test_warmup_rises_linearly():
    sched = WarmUpScheduler(optimizer(2.0), total_iters=4, eta_min=0.0)
    assert lrs(sched, 5) == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.0])


def test_chain_runs_warmup_then_cosine():
    opt = optimizer(1.0)
    chain = SchedulerChain(WarmUpScheduler(opt, total_iters=2), CosineAnnealingScheduler(opt, total_iters=4))
    assert chain.total_iters == 6
    got = lrs(chain, 6)
    assert got[:3] == pytest.approx([0.0, 0.5, 1.0])
    assert got[3:] == pytest.approx([(1 + math.cos(math.pi * t / 4)) / 2 for t in (1, 2, 3, 4)])


@pytest.mark.parametrize(
    "make",
    [
        lambda o: CosineAnnealingScheduler(o, total_iters=8, eta_min=0.01),
        lambda o: WarmUpScheduler(o, total_iters=8),
        lambda o: SchedulerChain(WarmUpScheduler(o, 3), CosineAnnealingScheduler(o, 5)),
    ],
)
def test_state_dict_round_trip_continues_identically(make):
    first = make(optimizer())
    lrs(first, 4)
    state = first.state_dict()
    straight = lrs(first, 4)
    resumed = make(optimizer())
    resumed.load_state_dict(state)
    resumed.optimizer.param_groups[0]["lr"] = state["_last_lr"][0]
    assert lrs(resumed, 4) == pytest.approx(straight)


def test_bad_arguments_are_clear():
    with pytest.raises(ConfigError, match="'total_iters' must be a whole number >= 1"):
        CosineAnnealingScheduler(optimizer(), total_iters=0)
    with pytest.raises(ConfigError, match="'eta_min' must be a number >= 0"):
        WarmUpScheduler(optimizer(), total_iters=3, eta_min=-1)
    with pytest.raises(ConfigError, match="share one optimizer"):
        SchedulerChain(WarmUpScheduler(optimizer(), 2), WarmUpScheduler(optimizer(), 2))


def test_custom_schedules_subclass_the_base():
    class Halving(SchedulerBase):
        def get_lr(self):
            return [base * 0.5 ** min(self.last_epoch, self.total_iters) for base in self.base_lrs]

    assert lrs(Halving(optimizer(8.0), total_iters=2), 3) == pytest.approx([8.0, 4.0, 2.0, 2.0])


def test_chain_next_iters_are_the_steps_where_each_next_schedule_starts():
    opt = optimizer()
    two = SchedulerChain(WarmUpScheduler(opt, total_iters=3), CosineAnnealingScheduler(opt, total_iters=5))
    assert two.next_iters == [3]
    three = SchedulerChain(WarmUpScheduler(opt, 3), CosineAnnealingScheduler(opt, 5), WarmUpScheduler(opt, 2))
    assert three.next_iters == [3, 8]
    assert SchedulerChain(CosineAnnealingScheduler(opt, 4)).next_iters == []


def test_chain_i_scheduler_follows_the_schedule_in_use():
    opt = optimizer(1.0)
    chain = SchedulerChain(WarmUpScheduler(opt, total_iters=3), CosineAnnealingScheduler(opt, total_iters=5))
    seen, rates = [chain.i_scheduler], [chain.get_last_lr()[0]]
    for _ in range(10):  # two steps past the end: the last schedule stays in use
        opt.step()
        chain.step()
        seen.append(chain.i_scheduler)
        rates.append(chain.get_last_lr()[0])
    assert seen == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1]
    # at step next_iters[0] the cosine takes over at its first value, the base rate
    assert rates[:4] == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])


def test_chain_i_scheduler_survives_a_state_round_trip():
    opt = optimizer()
    chain = SchedulerChain(WarmUpScheduler(opt, 3), CosineAnnealingScheduler(opt, 5))
    for _ in range(4):
        opt.step()
        chain.step()
    other = optimizer()
    again = SchedulerChain(WarmUpScheduler(other, 3), CosineAnnealingScheduler(other, 5))
    assert again.i_scheduler == 0
    again.load_state_dict(chain.state_dict())
    assert (again.i_scheduler, again.next_iters) == (1, [3])


def test_chain_next_iters_and_i_scheduler_are_read_only():
    opt = optimizer()
    chain = SchedulerChain(WarmUpScheduler(opt, 3), CosineAnnealingScheduler(opt, 5))
    with pytest.raises(AttributeError):
        chain.next_iters = [1]
    with pytest.raises(AttributeError):
        chain.i_scheduler = 1
    chain.next_iters.append(99)  # a copy: the chain is unchanged
    assert chain.next_iters == [3]
