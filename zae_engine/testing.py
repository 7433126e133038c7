"""A test kit for people who write add-ons (and for zae-engine's own tests).

    from zae_engine.testing import SeparableTrainer, assert_same_weights, make_loader, make_trainer

    def test_my_addon_keeps_training_exact(tmp_path):
        plain = make_trainer()
        with_addon = make_trainer(MyAddon(path=tmp_path))
        plain.run(2, make_loader()); with_addon.run(2, make_loader())
        assert_same_weights(with_addon.model, plain.model)

- a tiny separable task: `make_dataset` / `make_loader` (10 features, 2 classes, the label is the sign of their
  sum) and `SeparableTrainer`, which trains it with cross-entropy and reports validation accuracy;
- `make_trainer(*addons, **options)`: a seeded `Linear(10, 2)` with SGD on that task, quiet by default;
- `assert_same_weights(a, b)`: modules or state dicts equal key by key (exactly, or within a tolerance);
- `free_port()`: a loopback port for the process group of a multi-process test;
- `TrackerContract`: the behaviour every experiment-tracker add-on owes (key scheme, steps, one tracker run per
  trainer across `run()` calls, failures that never stop training); a tracker plugin subclasses it in its tests
  and says how to build its add-on and read back what it logged.

Everything here runs on the CPU in well under a second per test.
"""

from __future__ import annotations

import itertools
import os
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from zae_engine.trainer.addons.base import AddOnBase
from zae_engine.trainer.loop import Trainer

__all__ = [
    "LoggedRun",
    "SeparableTrainer",
    "TrackerContract",
    "assert_same_weights",
    "exit_worker",
    "free_port",
    "make_dataset",
    "make_loader",
    "make_model",
    "make_trainer",
    "rendezvous",
]


class SeparableTrainer(Trainer):
    """Cross-entropy on (x, y) batches; validation also reports accuracy ('acc')."""

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"loss": nn.functional.cross_entropy(self.model(x), y)}

    def test_step(self, batch: Any) -> dict[str, torch.Tensor]:
        x, y = batch
        logits = self.model(x)
        return {"loss": nn.functional.cross_entropy(logits, y), "acc": (logits.argmax(1) == y).float().mean()}


def make_dataset(n: int = 256, seed: int = 0) -> TensorDataset:
    """`n` points in 10 dimensions; the class is whether their coordinates sum above zero."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=g)
    return TensorDataset(x, (x.sum(dim=1) > 0).long())


def make_loader(n: int = 64, batch_size: int = 16, seed: int = 0, shuffle: bool = False) -> DataLoader:
    return DataLoader(make_dataset(n, seed), batch_size=batch_size, shuffle=shuffle)


def make_model(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(10, 2)


def make_trainer(
    *addons: AddOnBase,
    trainer_cls: type[Trainer] = SeparableTrainer,
    model: nn.Module | None = None,
    device: Any = "cpu",
    lr: float = 0.1,
    seed: int = 0,
    **options: Any,
) -> Trainer:
    """A trainer for the separable task: seeded Linear(10, 2) (or your `model`), SGD(lr), the add-ons, no bars.

    `trainer_cls` may be a class made by `Trainer.add_on(...)`; its add-ons' keywords then go in `options`.
    `device=["cpu", "cpu"]` with a launcher add-on (`mpu`) trains in two processes.
    """
    model = make_model(seed) if model is None else model
    options.setdefault("log_bar", False)
    return trainer_cls(model, device, "train", torch.optim.SGD(model.parameters(), lr=lr), addons=addons, **options)


def free_port(host: str = "127.0.0.1") -> int:
    """A loopback port nobody listens on right now: for `init_method=f"tcp://127.0.0.1:{free_port()}"` in tests."""
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def exit_worker() -> None:
    """End a test's spawned worker process after its work, without the interpreter's teardown.

    With torch 2.13, a process that used a gloo process group now and then aborts at interpreter exit ("terminate
    called without an active exception", SIGABRT) once everything is done, and `torch.multiprocessing.spawn`
    reports that as a failure. zae-mpu's own workers leave through `os._exit` already (forkserver children)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def rendezvous(folder: str | os.PathLike) -> str:
    """A `file://` init_method in `folder` for test processes: no port to race for with anything else on the
    machine, unlike a port found free a moment before the workers bind it. One per process group."""
    path = Path(folder) / f"rendezvous-{os.getpid()}-{next(_RENDEZVOUS)}"
    return f"file://{path.resolve()}"


_RENDEZVOUS = itertools.count()


def assert_same_weights(
    actual: nn.Module | Mapping[str, torch.Tensor],
    expected: nn.Module | Mapping[str, torch.Tensor],
    atol: float = 0.0,
    rtol: float = 0.0,
) -> None:
    """Equal key sets and tensors (bit for bit by default; give `atol`/`rtol` for float tolerance)."""
    a = actual.state_dict() if isinstance(actual, nn.Module) else actual
    b = expected.state_dict() if isinstance(expected, nn.Module) else expected
    assert a.keys() == b.keys(), f"different keys: {sorted(set(a) ^ set(b))}"
    for key in b:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=rtol, msg=lambda m, key=key: f"{key}: {m}")


# ---------------------------------------------------------------------- the tracker contract
@dataclass
class LoggedRun:
    """What a tracker stored for one tracker run, as the contract reads it back."""

    run_id: str
    rows: list[dict[str, Any]]  # every log call: its metrics plus 'step'
    config: dict[str, Any] = field(default_factory=dict)
    failed: bool | None = None  # None: the tracker does not record it

    def rows_with(self, key: str) -> list[dict[str, Any]]:
        return [row for row in self.rows if key in row]


class TrackerContract:
    """Subclass in a tracker plugin's tests (the class name must start with `Test`) and implement two methods:

    - `make_addon(self, folder: Path, **options) -> AddOnBase`: the tracker add-on, logging into `folder`;
    - `read_back(self, folder: Path) -> list[LoggedRun]`: every tracker run found there, oldest first.

    The contract trains `SeparableTrainer` on the CPU with `log_interval=2` (4 steps an epoch) and checks what
    reached the tracker's own storage, read back by the plugin with the tracker's own reader.
    """

    def make_addon(self, folder: Path, **options: Any) -> AddOnBase:
        raise NotImplementedError

    def read_back(self, folder: Path) -> list[LoggedRun]:
        raise NotImplementedError

    def _train(self, folder: Path, epochs: int = 2, runs: int = 1) -> Trainer:
        trainer = make_trainer(self.make_addon(folder), log_interval=2)
        for _ in range(runs):
            trainer.run(epochs, make_loader(), valid_loader=make_loader(seed=1))
        return trainer

    def test_epoch_summaries_use_the_key_scheme_and_the_optimizer_step(self, tmp_path: Path) -> None:
        trainer = self._train(tmp_path)
        (run,) = self.read_back(tmp_path)
        logged = run.rows_with("valid/loss")
        assert [row["step"] for row in logged] == [4, 8]
        for row, summary in zip(logged, trainer.history):
            for key in ("train/loss", "valid/loss", "valid/acc", "lr/group0"):
                assert row[key] == _approx(summary[key]), key

    def test_running_means_every_log_interval(self, tmp_path: Path) -> None:
        trainer = self._train(tmp_path)
        (run,) = self.read_back(tmp_path)
        running = run.rows_with("running/train/loss")
        assert [row["step"] for row in running] == [2, 4, 6, 8]
        assert all(row["running/lr/group0"] == _approx(0.1) for row in running)  # make_trainer's SGD rate
        # at an epoch's last step the running mean has seen the whole epoch
        assert running[1]["running/train/loss"] == _approx(trainer.history[0]["train/loss"])

    def test_every_run_call_continues_one_tracker_run(self, tmp_path: Path) -> None:
        trainer = self._train(tmp_path, epochs=1, runs=2)
        runs = self.read_back(tmp_path)
        (addon,) = trainer.addons.values()
        assert {run.run_id for run in runs} == {addon.tracker_run_id}
        steps = [row["step"] for run in runs for row in run.rows_with("valid/loss")]
        assert steps == [4, 8]

    def test_a_failed_run_is_marked_and_keeps_what_it_logged(self, tmp_path: Path) -> None:
        trainer = make_trainer(self.make_addon(tmp_path), trainer_cls=_FailsAtStep6, log_interval=1)
        try:
            trainer.run(3, make_loader())
        except RuntimeError as exc:
            assert "step 6" in str(exc)
        else:  # pragma: no cover - the trainer raises by construction
            raise AssertionError("the run should have failed")
        (run,) = self.read_back(tmp_path)
        assert [row["step"] for row in run.rows_with("running/train/loss")] == [1, 2, 3, 4, 5]
        assert run.failed in (True, None)

    def test_a_failing_tracker_never_stops_training(self, tmp_path: Path) -> None:
        addon = self.make_addon(tmp_path)

        def broken(*args: Any) -> None:
            raise ConnectionError("tracker went away")

        addon._client_log = broken  # the client's own call fails; the shared guard must contain it
        trainer = make_trainer(addon, log_interval=2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.run(2, make_loader())
        assert [h["epoch"] for h in trainer.history] == [1, 2]
        reported = [w for w in caught if "tracker went away" in str(w.message)]
        assert len(reported) == 1 and "training continues" in str(reported[0].message)

    def test_its_run_id_travels_in_checkpoint_state(self, tmp_path: Path) -> None:
        first = self.make_addon(tmp_path)
        make_trainer(first)
        second = self.make_addon(tmp_path)
        make_trainer(second)
        second.load_state_dict(first.state_dict())
        assert second.tracker_run_id == first.tracker_run_id


class _FailsAtStep6(SeparableTrainer):
    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        if self.progress_checker.get_step() == 6:
            raise RuntimeError("boom at step 6")
        return super().train_step(batch)


def _approx(value: float) -> Any:
    import pytest

    return pytest.approx(value, rel=1e-5)
