"""The core tests' shared helpers come from the public test kit (`zae_engine.testing`); this name stays importable
for spawned DDP workers that load test modules by name."""

from zae_engine.testing import SeparableTrainer, assert_same_weights, make_dataset, make_loader, make_trainer

__all__ = ["SeparableTrainer", "assert_same_weights", "make_dataset", "make_loader", "make_trainer"]
