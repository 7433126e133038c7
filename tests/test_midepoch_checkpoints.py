"""Mid-epoch checkpoints in one process: when they are written, what a resume from one gives, async writes.

The signal-driven stops (real SIGTERM at random batches, `zae run`, SIGKILL during a background write) are in
test_midepoch_signals.py, test_midepoch_cli.py and test_midepoch_async_crash.py.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from zae_engine.checkpoint import read_checkpoint, read_manifest
from zae_engine.checkpoint.staging import HostStaging
from zae_engine.data import EpochSampler
from zae_engine.errors import CheckpointError, ConfigError, ResumeWarning, TrainingInterrupted
from zae_engine.seeding import seed_everything
from zae_engine.testing import SeparableTrainer, assert_same_weights, make_dataset
from zae_engine.trainer.addons import AddOnBase, StateManagerAddon
from zae_engine.trainer.logbook import StepLog


class NoisyTrainer(SeparableTrainer):
    def train_step(self, batch):
        x, y = batch
        jitter = torch.randn_like(x) * 0.01 + float(np.random.rand()) * 0.01 + random.random() * 0.01
        return {"loss": nn.functional.cross_entropy(self.model(x + jitter), y), "x_mean": x.mean()}


def build(seed: int = 0, *addons, accum: int = 1, **options) -> NoisyTrainer:
    seed_everything(seed)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    return NoisyTrainer(
        model,
        "cpu",
        "train",
        optimizer,
        scheduler,
        log_bar=False,
        grad_accum_steps=accum,
        addons=list(addons),
        **options,
    )


def loader(kind: str = "plain"):
    data = make_dataset(96)
    if kind == "plain":
        return DataLoader(data, batch_size=8, shuffle=True)  # 12 batches, shuffled from the global stream
    if kind == "epoch_sampler":
        return DataLoader(data, batch_size=8, sampler=EpochSampler(len(data), shuffle=True, seed=3))
    if kind == "list":
        return list(DataLoader(data, batch_size=8))
    raise ValueError(kind)


def names(save_path) -> list[str]:
    return [entry.name for entry in read_manifest(save_path).checkpoints]


def output(capsys) -> str:
    captured = capsys.readouterr()
    return captured.out + captured.err


def same_run(a: NoisyTrainer, b: NoisyTrainer) -> None:
    assert_same_weights(b.model, a.model)
    assert [h["train/loss"] for h in a.history] == [h["train/loss"] for h in b.history]
    assert [h["train/x_mean"] for h in a.history] == [h["train/x_mean"] for h in b.history]
    assert a.optimizer.param_groups[0]["lr"] == b.optimizer.param_groups[0]["lr"]


# ---------------------------------------------------------------------------------------------- when
def test_every_n_steps_saves_inside_epochs_at_those_steps(tmp_path):
    trainer = build(0, StateManagerAddon(save_path=str(tmp_path), every_n_steps=5, keep_last=10), accum=2)
    trainer.run(2, loader())  # 12 batches, groups of 2: 6 optimizer steps an epoch
    assert names(tmp_path) == [
        "step-epoch-0000-step-000005",
        "epoch-0001",
        "step-epoch-0001-step-000010",
        "epoch-0002",
    ]
    entries = read_manifest(tmp_path).checkpoints
    assert [e.kind for e in entries] == ["step", "epoch", "step", "epoch"]
    state, meta = read_checkpoint(tmp_path / "step-epoch-0000-step-000005")
    assert meta["kind"] == "step" and state["progress"] == {"epoch": 1, "step": 6}
    assert state["position"]["drawn"] == 10 and state["position"]["micro"] == 0
    assert read_checkpoint(tmp_path / "epoch-0001")[0]["position"] is None  # between epochs


def test_every_n_minutes_in_one_process_reads_the_clock_after_every_step(tmp_path):
    trainer = build(0, StateManagerAddon(save_path=str(tmp_path), every_n_minutes=1e-9, keep_last=100))
    trainer.run(1, loader())
    assert [e.step for e in read_manifest(tmp_path).checkpoints] == [*range(1, 13), 12]  # 12 steps, then the epoch


@pytest.mark.parametrize("bad", [{"every_n_steps": 0}, {"every_n_minutes": -1}, {"async_when_busy": "later"}])
def test_bad_schedules_are_refused_by_name(tmp_path, bad):
    with pytest.raises(ConfigError, match=f"state_manager.*{next(iter(bad))}"):
        StateManagerAddon(save_path=str(tmp_path), **bad)


# ---------------------------------------------------------------------------------------------- resuming
@pytest.mark.parametrize("kind", ["plain", "epoch_sampler", "list"])
@pytest.mark.parametrize("save_format", ["ckpt", "safetensors"])
def test_a_step_checkpoint_resumes_exactly(tmp_path, kind, save_format):
    straight = build(0, accum=3)
    straight.run(3, loader(kind))

    addon = StateManagerAddon(save_path=str(tmp_path), every_n_steps=7, save_format=save_format, keep_last=5)
    first = build(0, addon, accum=3)
    first.run(2, loader(kind))  # 4 steps an epoch: the step-7 checkpoint is inside epoch 2
    second = build(5, StateManagerAddon(save_path=str(tmp_path), save_format=save_format), accum=3)
    second.load_state(tmp_path / "step-epoch-0001-step-000007")
    torch.rand(3), np.random.rand(), random.random()  # streams disturbed: the checkpoint must restore them
    second.run(2, loader(kind))  # the unfinished epoch 2 counts as the first of the 2
    assert [h["epoch"] for h in second.history] == [1, 2, 3]
    same_run(straight, second)


class BatchCounter(AddOnBase):
    """State kept in on_batch_end: a checkpoint must hold it for every batch trained on before it."""

    name = "batch_counter"

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def on_batch_end(self, result) -> None:
        self.count += 1

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state) -> None:
        self.count = state["count"]


def test_a_step_checkpoint_holds_what_its_batch_end_hooks_did(tmp_path):
    straight = build(0, BatchCounter())
    straight.run(2, loader())
    build(0, BatchCounter(), StateManagerAddon(save_path=str(tmp_path), every_n_steps=17, keep_last=5)).run(2, loader())
    second = build(1, BatchCounter(), StateManagerAddon(save_path=str(tmp_path)))
    second.load_state(tmp_path / "step-epoch-0001-step-000017")
    assert second.addon("batch_counter").count == 17
    second.run(1, loader())  # the rest of epoch 2
    assert second.addon("batch_counter").count == straight.addon("batch_counter").count == 24
    same_run(straight, second)


def test_run_total_after_a_mid_epoch_resume_counts_epochs_in_all(tmp_path):
    first = build(0, StateManagerAddon(save_path=str(tmp_path), every_n_steps=15, keep_last=5))
    first.run(2, loader())
    second = build(1, StateManagerAddon(save_path=str(tmp_path)))
    second.load_state(tmp_path / "step-epoch-0001-step-000015")
    second.run(3, loader(), total=True)
    assert [h["epoch"] for h in second.history] == [1, 2, 3]


def test_a_per_batch_schedule_budget_leaves_out_the_steps_the_resumed_epoch_took(tmp_path):
    from zae_engine.schedulers import CosineAnnealingScheduler

    def trainer(seed, *addons):
        seed_everything(seed)
        model = nn.Linear(10, 2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = CosineAnnealingScheduler(optimizer, total_iters=24)  # exactly 2 epochs of 12 steps
        return NoisyTrainer(
            model, "cpu", "train", optimizer, scheduler, log_bar=False, scheduler_step_on_batch=True, addons=addons
        )

    trainer(0, StateManagerAddon(save_path=str(tmp_path), every_n_steps=18, keep_last=5)).run(2, loader())
    resumed = trainer(0, StateManagerAddon(save_path=str(tmp_path)))
    resumed.load_state(tmp_path / "step-epoch-0001-step-000018")
    resumed.run(1, loader())  # 6 steps are left in epoch 2 and 6 in the schedule: not refused
    assert resumed.scheduler.last_epoch == 24


class Batches:
    """A user's own iterable: re-iterable, but the trainer cannot see where its order comes from."""

    def __init__(self) -> None:
        self.items = list(DataLoader(make_dataset(96), batch_size=8))

    def __iter__(self):
        return iter(self.items)


def test_an_iterable_the_trainer_cannot_see_into_is_replayed_and_said_once(tmp_path):
    straight = build(0)
    straight.run(2, Batches())
    build(0, StateManagerAddon(save_path=str(tmp_path), every_n_steps=5, keep_last=5)).run(1, Batches())
    second = build(1, StateManagerAddon(save_path=str(tmp_path)))
    second.load_state(tmp_path / "step-epoch-0000-step-000005")
    with pytest.warns(ResumeWarning, match="drawing its first 5 batch.*from a Batches") as said:
        second.run(2, Batches())
    assert len([w for w in said if issubclass(w.category, ResumeWarning)]) == 1
    same_run(straight, second)  # deterministic here, so exact


def test_a_list_of_batches_and_a_known_loader_resume_without_a_warning(tmp_path):
    build(0, StateManagerAddon(save_path=str(tmp_path), every_n_steps=5, keep_last=5)).run(1, loader("list"))
    second = build(1, StateManagerAddon(save_path=str(tmp_path)))
    second.load_state(tmp_path / "step-epoch-0000-step-000005")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResumeWarning)
        second.run(1, loader("list"))


def test_a_loader_shorter_than_the_checkpoints_position_is_a_clear_error(tmp_path):
    build(0, StateManagerAddon(save_path=str(tmp_path), every_n_steps=10, keep_last=5)).run(1, loader("list"))
    second = build(1, StateManagerAddon(save_path=str(tmp_path)))
    second.load_state(tmp_path / "step-epoch-0000-step-000010")
    with pytest.raises(CheckpointError, match="after batch 10 of epoch 1, but the training loader now ends after 4"):
        second.run(1, loader("list")[:4])


class SignalAt(AddOnBase):
    """Sends this process a real SIGTERM after the n-th training batch."""

    name = "signal_at"

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.seen = at, 0

    def on_batch_end(self, result) -> None:
        if self.trainer.mode == "train":
            self.seen += 1
            if self.seen == self.at:
                os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_inside_an_accumulation_group_saves_its_gradients_and_resumes_exactly(tmp_path, capsys):
    straight = build(0, accum=4)
    straight.run(2, loader("epoch_sampler"))
    first = build(0, StateManagerAddon(save_path=str(tmp_path)), SignalAt(18), accum=4)
    with pytest.raises(TrainingInterrupted):
        first.run(2, loader("epoch_sampler"))
    assert "SIGTERM: saved interrupted-epoch-0001-step-000004 in" in output(capsys)
    state, _ = read_checkpoint(tmp_path / "interrupted-epoch-0001-step-000004")
    position = state["position"]
    assert (position["drawn"], position["micro"], sorted(position["grads"])) == (
        6,
        2,
        ["0.bias", "0.weight", "3.bias", "3.weight"],
    )
    second = build(2, StateManagerAddon(save_path=str(tmp_path), resume=True), accum=4)
    second.run(2, loader("epoch_sampler"), total=True)
    same_run(straight, second)


def test_a_stop_budget_too_short_for_another_save_keeps_the_latest_and_says_so(tmp_path, capsys):
    addon = StateManagerAddon(save_path=str(tmp_path), every_n_steps=2, stop_budget=1e-9)
    with pytest.raises(TrainingInterrupted):
        build(0, addon, SignalAt(3)).run(1, loader())
    err = output(capsys)
    assert "SIGTERM: not saving this step: the last save took" in err
    assert "the latest checkpoint is step-epoch-0000-step-000002" in err
    assert names(tmp_path) == ["step-epoch-0000-step-000002"]


# ---------------------------------------------------------------------------------------------- async
def test_async_saves_write_the_same_checkpoints_as_synchronous_ones(tmp_path):
    sync = build(0, StateManagerAddon(save_path=str(tmp_path / "sync"), every_n_steps=5, keep_last=10))
    sync.run(2, loader())
    background = StateManagerAddon(save_path=str(tmp_path / "async"), every_n_steps=5, keep_last=10, async_save=True)
    build(0, background).run(2, loader())
    assert names(tmp_path / "async") == names(tmp_path / "sync")
    for name in names(tmp_path / "sync"):
        a, meta_a = read_checkpoint(tmp_path / "sync" / name)
        b, meta_b = read_checkpoint(tmp_path / "async" / name)
        assert_same_weights(b["model"], a["model"])
        assert a["history"] == b["history"] and a["progress"] == b["progress"]
        assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert background.last_checkpoint == tmp_path / "async" / "epoch-0002"  # run() waited for the last write


def test_async_skip_leaves_out_a_save_while_one_is_in_flight(tmp_path):
    addon = StateManagerAddon(
        save_path=str(tmp_path), every_n_steps=3, async_save=True, async_when_busy="skip", keep_last=10
    )
    release = threading.Event()

    class Hold(AddOnBase):
        """Keeps the writer busy from step 2 until step 5 is done, as a slow disk would; else lets each write end."""

        name = "hold"  # runs before the state manager in every hook (phase "update" before "persist")

        def on_optimizer_step(self) -> None:
            step = self.trainer.progress_checker.get_step() - 1
            if step == 2:
                addon._writer.submit(release.wait, "a slow write")
            elif step == 5:
                release.set()
            if step not in (2, 3, 4):
                addon._writer.wait()

    build(0, Hold(), addon).run(1, loader())  # saves fall due at steps 3, 6, 9 and 12: the one at 3 is skipped
    assert names(tmp_path) == [
        "step-epoch-0000-step-000006",
        "step-epoch-0000-step-000009",
        "step-epoch-0000-step-000012",
        "epoch-0001",
    ]


class BreaksOnSecondSave(AddOnBase):
    name = "breaks"

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def state_dict(self):
        self.calls += 1
        return {"handle": object()} if self.calls == 2 else {}


def test_a_failed_background_write_fails_the_run_and_keeps_the_previous_checkpoint(tmp_path):
    addon = StateManagerAddon(save_path=str(tmp_path), every_n_steps=4, async_save=True)
    with pytest.raises(CheckpointError, match="state.addons.breaks.handle"):
        build(0, BreaksOnSecondSave(), addon).run(1, loader())
    assert names(tmp_path) == ["step-epoch-0000-step-000004"]
    assert not list(tmp_path.glob(".tmp-*"))


# ---------------------------------------------------------------------------------------------- pieces
def test_host_staging_copies_cpu_tensors_apart_from_the_ones_training_changes():
    weights = torch.ones(4)
    state = {"model": {"w": weights}, "groups": [{"lr": 0.1, "betas": (0.9, 0.99)}], "n": 3}
    copy, landed = HostStaging().copy(state)
    landed()
    weights.add_(1)
    state["groups"][0]["lr"] = 0.2
    assert torch.equal(copy["model"]["w"], torch.ones(4))
    assert copy["groups"] == [{"lr": 0.1, "betas": (0.9, 0.99)}] and copy["n"] == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_host_staging_copies_cuda_tensors_into_reused_pinned_buffers():
    staging = HostStaging()
    weights = torch.arange(1 << 20, device="cuda", dtype=torch.float32)
    copy, landed = staging.copy({"w": weights})
    weights.add_(1)  # queued after the copy on the same stream
    landed()
    assert copy["w"].is_pinned() and torch.equal(copy["w"], torch.arange(1 << 20, dtype=torch.float32))
    again, landed = staging.copy({"w": weights})
    landed()
    assert again["w"].data_ptr() == copy["w"].data_ptr()


def test_step_log_state_round_trips_exactly():
    log = StepLog(torch.device("cpu"))
    for i in range(300):  # past one flush
        log.append({"loss": torch.tensor(1 / (i + 1)), "n": i, "pred": torch.tensor([i, i])})
    restored = StepLog(torch.device("cpu"))
    restored.load_state_dict(log.state_dict())
    for i in range(300, 310):
        for target in (log, restored):
            target.append({"loss": torch.tensor(1 / (i + 1)), "n": i, "pred": torch.tensor([i, i])})
    assert restored.means() == log.means()
    assert [t.tolist() for t in restored.values_of("pred")] == [t.tolist() for t in log.values_of("pred")]


def test_step_log_takes_a_key_whose_values_change_type():
    log = StepLog(torch.device("cpu"))
    log.append({"a": 1.0, "b": torch.tensor(2.0), "c": torch.tensor([1.0, 2.0])})
    log.append({"a": torch.tensor(3.0), "b": 4, "c": "x"})
    log.append({"a": torch.tensor(5.0, requires_grad=True) * 1, "b": torch.tensor(6.0)})
    assert log.means() == {"a": 3.0, "b": 4.0}
    kept = log.values_of("c")
    assert torch.equal(kept[0], torch.tensor([1.0, 2.0])) and kept[1] == "x"


def test_epoch_sampler_starts_one_pass_part_way():
    sampler = EpochSampler(10, shuffle=True, seed=1)
    sampler.set_epoch(3)
    full = list(sampler)
    sampler.start_next_pass_at(4)
    assert list(sampler) == full[4:]
    assert list(sampler) == full  # only the next pass


@pytest.mark.parametrize(
    ("key", "value", "said"),
    [
        ("drawn", -1, "'drawn' must be a whole number >= 0"),
        ("phase", "halfway", "'phase' must be 'train' or 'valid'"),
        ("grads", {"w": "not a tensor"}, "'grads' must map parameter names to tensors"),
        ("log", {"count": 3, "scalars": {"loss": torch.zeros(2)}, "others": {}, "order": ["loss"]}, "one value per"),
    ],
)
def test_a_damaged_position_is_refused_before_anything_is_loaded(tmp_path, key, value, said):
    build(0, StateManagerAddon(save_path=str(tmp_path), every_n_steps=5, keep_last=5)).run(1, loader())
    state, _ = read_checkpoint(tmp_path / "step-epoch-0000-step-000005")
    state["position"][key] = value
    fresh = build(1)
    before = {k: v.clone() for k, v in fresh.model.state_dict().items()}
    with pytest.raises(CheckpointError, match=f"position inside the epoch is damaged.*{said}"):
        fresh.load_state_dict(state, "the test's state")
    assert_same_weights(fresh.model, before)  # nothing was applied


def test_sigterm_waits_for_the_async_write_in_flight_then_saves_its_step(tmp_path, capsys):
    addon = StateManagerAddon(save_path=str(tmp_path), every_n_steps=2, async_save=True, keep_last=10)
    with pytest.raises(TrainingInterrupted):
        build(0, addon, SignalAt(5)).run(1, loader())  # step 4's write may still be in flight at the stop
    assert names(tmp_path) == [
        "step-epoch-0000-step-000002",
        "step-epoch-0000-step-000004",
        "interrupted-epoch-0000-step-000005",
    ]
    assert not list(tmp_path.glob(".tmp-*"))
    assert "SIGTERM: saved interrupted-epoch-0000-step-000005 in" in output(capsys)
    assert addon.last_checkpoint == tmp_path / "interrupted-epoch-0000-step-000005"
