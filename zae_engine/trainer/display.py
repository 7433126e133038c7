"""What the trainer shows people: rich progress bars, or one line per epoch."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# The bar is redrawn (and the running loss read from the device) at most this often. A rich redraw costs ~1.5 ms of
# Python, so twice a second keeps it well under 1% of the loop (benchmarks/overhead.py).
REFRESH_SECONDS = 0.5


def format_summary(summary: dict[str, Any], n_epoch: int | None = None) -> str:
    """'epoch 3/10  train/loss 0.4123  valid/loss 0.3981  lr/group0 1.00e-03' from an epoch summary."""
    epoch = summary.get("epoch")
    head = f"epoch {epoch}/{n_epoch}" if n_epoch else f"epoch {epoch}"
    parts = [head]
    for key, value in summary.items():
        if key in ("epoch", "step") or not isinstance(value, (int, float)):
            continue
        parts.append(f"{key} {value:.3e}" if key.startswith("lr/") else f"{key} {value:.4f}")
    return "  ".join(parts)


class NullDisplay:
    """Shows nothing: ranks other than 0, and `inference`."""

    def run_start(self, first_epoch: int, last_epoch: int) -> None: ...
    def epoch_start(self, epoch: int, mode: str, total: int | None) -> None: ...
    def refresh(self, done: int, running: dict[str, float], lr: float | None) -> None: ...
    def epoch_end(self, summary: dict[str, Any]) -> None: ...
    def run_end(self) -> None: ...


class LineDisplay(NullDisplay):
    """`log_bar=False`: one summary line per epoch, nothing per batch."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False)
        self.n_epoch: int | None = None

    def run_start(self, first_epoch: int, last_epoch: int) -> None:
        self.n_epoch = last_epoch  # epochs are numbered across resumes: "epoch 5/8" after resuming at 5

    def epoch_end(self, summary: dict[str, Any]) -> None:
        self.console.print(format_summary(summary, self.n_epoch), markup=False, soft_wrap=True)


class BarDisplay(LineDisplay):
    """An epoch bar and a batch bar with the running loss and learning rate, redrawn at a bounded rate."""

    def __init__(self, console: Console | None = None) -> None:
        super().__init__(console)
        self.progress: Progress | None = None
        self._epoch_task = self._batch_task = None

    def run_start(self, first_epoch: int, last_epoch: int) -> None:
        super().run_start(first_epoch, last_epoch)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            auto_refresh=False,  # we redraw from the loop, at most every REFRESH_SECONDS: no thread, no per-step cost
        )
        self.progress.start()
        self._epoch_task = self.progress.add_task("epochs", total=last_epoch, completed=first_epoch - 1, info="")

    def epoch_start(self, epoch: int, mode: str, total: int | None) -> None:
        assert self.progress is not None
        if self._batch_task is not None:
            self.progress.remove_task(self._batch_task)
        label = "train" if mode == "train" else "valid"
        self._batch_task = self.progress.add_task(f"  {label} {epoch}", total=total, info="")
        self.progress.refresh()

    def refresh(self, done: int, running: dict[str, float], lr: float | None) -> None:
        assert self.progress is not None
        info = "  ".join(f"{k} {v:.4f}" for k, v in running.items())
        if lr is not None:
            info += f"  lr {lr:.2e}"
        self.progress.update(self._batch_task, completed=done, info=info)
        self.progress.refresh()

    def epoch_end(self, summary: dict[str, Any]) -> None:
        assert self.progress is not None
        self.progress.console.print(format_summary(summary, self.n_epoch), markup=False, soft_wrap=True)
        self.progress.advance(self._epoch_task)  # drawn by the next epoch's add_task or run_end (a redraw is ~1 ms)

    def run_end(self) -> None:
        if self.progress is not None:
            if self._batch_task is not None:
                self.progress.remove_task(self._batch_task)
                self._batch_task = None
            self.progress.refresh()
            self.progress.stop()
            self.progress = None
