"""Epoch and step counters that survive a checkpoint round-trip."""

from __future__ import annotations


class ProgressChecker:
    """Counts epochs and optimizer steps, both starting at 1 (the epoch/step about to run).

    `get_epoch() - 1` epochs and `get_step() - 1` optimizer steps are complete. The counts are also plain
    attributes, `epoch` and `step`, which the loop's per-step path increments without a method call.
    """

    def __init__(self) -> None:
        self.init_state()

    def init_state(self) -> None:
        self.epoch = 1
        self.step = 1

    def update_step(self) -> None:
        self.step += 1

    def update_epoch(self) -> None:
        self.epoch += 1

    def get_step(self) -> int:
        return self.step

    def get_epoch(self) -> int:
        return self.epoch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "step": self.step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, step = int(state["epoch"]), int(state["step"])
        if epoch < 1 or step < 1:
            raise ValueError(f"progress state must count from 1, got epoch={epoch}, step={step}")
        self.epoch, self.step = epoch, step

    def __repr__(self) -> str:
        return f"ProgressChecker(epoch={self.epoch}, step={self.step})"
