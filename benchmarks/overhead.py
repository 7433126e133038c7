"""Framework overhead: seconds per training step of the Trainer against a hand-written PyTorch loop.

    python -m benchmarks.overhead                 # tiny, premade and medium, 15 rounds after 2 warm-up rounds
    python -m benchmarks.overhead --workload tiny --rounds 21
    python -m benchmarks.overhead --quick         # a few steps, only to see that it runs
    python -m benchmarks.overhead --profile       # cProfile of a Trainer epoch on tiny
    (python benchmarks/overhead.py ... works too)

Every contender does the same work per step on the same data: iterate a DataLoader, zero_grad(set_to_none=True),
forward, loss, backward, optimizer step. The Trainer contenders also keep the step's loss (on the device), as
any user of a trainer wants.

How it measures: each contender trains in its own thread for `warmup + rounds + 1` epochs of `--steps` batches,
but only one thread runs at a time. A contender waits for its turn at the start of every epoch, so the contenders
take turns round by round (in a rotating order), and slow phases of the machine hit them all alike. One turn is
one whole epoch, from the start of its iteration to the start of the next (so the epoch summary, the checkpoint
save and the tracker's epoch log are inside it); the run's own start and end (e.g. `wandb.init`) are not, being
paid once per run rather than per step. The last epoch is not timed for that reason.
Reported: the median seconds per step over the rounds, and the median of the per-round ratios to the raw loop;
and each contender's fastest round against the raw loop's fastest. On a shared machine the slow phases are often
shorter than a round, so they hit one contender's turn and not its neighbour's and the per-round ratios scatter;
interference only ever adds time, so the fastest rounds (as `timeit` reports its minimum) are the closest to what
each step costs on its own.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import platform
import pstats
import statistics
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter, process_time
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import zae_engine
from zae_engine.trainer import Trainer
from zae_engine.trainer.display import BarDisplay, LineDisplay, NullDisplay

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


# ---------------------------------------------------------------------- workloads
@dataclass(frozen=True)
class Workload:
    name: str
    layers: tuple[int, ...]  # feature sizes: (in, hidden..., out)
    batch_size: int
    steps: int  # batches per epoch (one round)
    premade: bool = False  # batches made up front, loaded with DataLoader(batch_size=None): no collation per step

    def model(self) -> nn.Module:
        torch.manual_seed(0)
        sizes = self.layers
        parts: list[nn.Module] = []
        for i in range(len(sizes) - 1):
            parts.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                parts.append(nn.ReLU())
        return parts[0] if len(parts) == 1 else nn.Sequential(*parts)

    def dataset(self, steps: int) -> TensorDataset:
        g = torch.Generator().manual_seed(0)
        n = steps * self.batch_size
        x = torch.randn(n, self.layers[0], generator=g)
        y = torch.randint(0, self.layers[-1], (n,), generator=g)
        return TensorDataset(x, y)

    def loader(self, steps: int) -> DataLoader:
        """Collating loader, or (premade) one over whole ready batches: the raw step then weighs least."""
        data = self.dataset(steps)
        if not self.premade:
            return DataLoader(data, batch_size=self.batch_size, shuffle=False)
        x, y = data.tensors
        batches = TensorDataset(x.view(steps, self.batch_size, -1), y.view(steps, self.batch_size))
        return DataLoader(batches, batch_size=None, shuffle=False)


WORKLOADS = {
    "tiny": Workload("tiny", (10, 2), batch_size=32, steps=1000),
    "premade": Workload("premade", (10, 2), batch_size=32, steps=2000, premade=True),
    "medium": Workload("medium", (512, 1024, 1024, 10), batch_size=128, steps=60),
}


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.01)


# ---------------------------------------------------------------------- the trainer under test
class BenchTrainer(Trainer):
    """Cross-entropy on (x, y) batches: the same step as the raw loop."""

    def train_step(self, batch):
        x, y = batch
        return {"loss": nn.functional.cross_entropy(self.model(x), y)}

    def test_step(self, batch):
        x, y = batch
        return {"loss": nn.functional.cross_entropy(self.model(x), y)}

    def _make_display(self) -> NullDisplay:
        # Draw exactly what a terminal would get, into /dev/null, so the bar's cost is real but the screen stays clean.
        console = Console(file=open(os.devnull, "w"), force_terminal=True, width=120, highlight=False)  # noqa: SIM115
        return BarDisplay(console) if self.log_bar else LineDisplay(console)


def raw_loop(model: nn.Module, optimizer: torch.optim.Optimizer) -> Callable[[int, Any], None]:
    """The hand-written loop every contender is compared with."""

    def run(n_epoch: int, loader: Any) -> None:
        model.train()
        for _ in range(n_epoch):
            for x, y in loader:
                optimizer.zero_grad(set_to_none=True)
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()

    return run


def trainer_run(trainer_cls: type[Trainer], **kwargs: Any) -> Callable[[nn.Module], Callable[[int, Any], None]]:
    def build(model: nn.Module) -> Callable[[int, Any], None]:
        trainer = trainer_cls(model, "cpu", "train", make_optimizer(model), **kwargs)
        return trainer.run

    return build


@dataclass
class Contender:
    name: str
    build: Callable[[nn.Module], Callable[[int, Any], None]] | None  # model -> run(n_epoch, loader)
    skipped: str = ""  # why it cannot run here


def contenders(workdir: str) -> list[Contender]:
    found = [
        Contender("raw loop", lambda model: raw_loop(model, make_optimizer(model))),
        Contender("Trainer log_bar=False", trainer_run(BenchTrainer, log_bar=False)),
        Contender("Trainer log_bar=True", trainer_run(BenchTrainer, log_bar=True)),
    ]
    found.append(_addon_contender(workdir))
    found.append(Contender("Trainer +run_log", _with_addons(lambda: [_run_log(workdir)])))
    found += _tracker_contenders(workdir)
    return found


def _run_log(workdir: str) -> Any:
    """The run record `zae run` keeps by default (log_interval 50)."""
    from zae_engine.trainer.addons import RunLogAddon

    return RunLogAddon(dir=os.path.join(workdir, "runs"))


def _tracker_contenders(workdir: str) -> list[Contender]:
    """Each self-hosted tracker alone, at the default log_interval (50): TensorBoard files, MLflow into SQLite.

    MLflow's sends run on its background thread (at most one every 2 s); all contenders share one process, so a
    send may fall into another contender's turn: the wall-clock ratio is the loop's own, the CPU one is spread."""
    found = []
    try:
        from zae_engine.trainer.addons import TensorBoardLoggerAddon

        found.append(
            Contender(
                "Trainer +tensorboard",
                _with_addons(lambda: [TensorBoardLoggerAddon(log_dir=os.path.join(workdir, "tensorboard"))]),
            )
        )
    except ImportError:
        found.append(Contender("Trainer +tensorboard", None, "pip install -e plugins/zae-tensorboard"))
    try:
        from zae_engine.trainer.addons import MLflowLoggerAddon

        def mlflow_addons() -> list[Any]:
            return [MLflowLoggerAddon(tracking_uri=f"sqlite:///{workdir}/mlflow.db", experiment="bench")]

        found.append(Contender("Trainer +mlflow", _with_addons(mlflow_addons)))
    except ImportError:
        found.append(Contender("Trainer +mlflow", None, "pip install -e plugins/zae-mlflow"))
    return found


def _with_addons(make: Callable[[], list[Any]]) -> Callable[[nn.Module], Callable[[int, Any], None]]:
    def build(model: nn.Module) -> Callable[[int, Any], None]:
        trainer = BenchTrainer(model, "cpu", "train", make_optimizer(model), log_bar=False, addons=make())
        return trainer.run

    return build


def _addon_contender(workdir: str) -> Contender:
    """Trainer + state_manager (a checkpoint per epoch) + the W&B add-on offline, each when installed."""
    addons: list[type] = []
    kwargs: dict[str, Any] = {"log_bar": False}
    missing = []
    try:
        from zae_engine.trainer.addons import StateManagerAddon

        addons.append(StateManagerAddon)
        kwargs.update(save_path=os.path.join(workdir, "checkpoints"), save_format="safetensors")
    except ImportError as exc:
        missing.append(f"state_manager ({exc})")
    try:
        from zae_engine.trainer.addons import WandBLoggerAddon

        addons.append(WandBLoggerAddon)
        kwargs["web_logger"] = {"wandb": {"project": "zae-bench", "mode": "offline", "dir": workdir}}
    except ImportError:
        missing.append("wandb (pip install -e plugins/zae-wandb)")
    names = "+".join(getattr(a, "name", a.__name__) for a in addons)
    label = f"Trainer +{names}" if names else "Trainer + add-ons"
    if not addons:
        return Contender(label, None, "no add-on installed: " + ", ".join(missing))
    try:
        cls = BenchTrainer.add_on(*addons)
    except Exception as exc:  # an add-on being written right now may not compose yet
        return Contender(label, None, f"cannot compose: {exc}")
    note = ("without " + ", ".join(missing)) if missing else ""
    return Contender(label, trainer_run(cls, **kwargs), note)


# ---------------------------------------------------------------------- taking turns
class TurnLoader:
    """A DataLoader whose every epoch starts by handing the last turn back and waiting for the next one."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader
        self.turn = threading.Semaphore(0)  # the coordinator lets this contender run one epoch
        self.handed_back = threading.Semaphore(0)  # the contender is ready / finished its epoch
        self.seconds: list[float] = []  # wall clock per epoch
        self.cpu_seconds: list[float] = []  # CPU time of the whole process per epoch: immune to other processes
        self._started: tuple[float, float] | None = None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        self.hand_back()
        self.turn.acquire()
        self._started = perf_counter(), process_time()
        return iter(self.loader)

    def hand_back(self) -> None:
        if self._started is not None:
            wall, cpu = self._started
            self.seconds.append(perf_counter() - wall)
            self.cpu_seconds.append(process_time() - cpu)
            self._started = None
        self.handed_back.release()


@dataclass
class Lane:
    contender: Contender
    loader: TurnLoader
    thread: threading.Thread | None = None
    error: BaseException | None = None
    wall: list[float] = field(default_factory=list)  # seconds per step, one per timed round
    cpu: list[float] = field(default_factory=list)


def measure(workload: Workload, found: list[Contender], rounds: int, warmup: int, steps: int) -> list[Lane]:
    lanes = [Lane(c, TurnLoader(workload.loader(steps))) for c in found if c.build is not None]
    n_epoch = warmup + rounds + 1  # the last epoch also pays for the run's end: never timed

    def work(lane: Lane) -> None:
        torch.set_num_threads(1)
        try:
            lane.contender.build(workload.model())(n_epoch, lane.loader)
        except BaseException as exc:
            lane.error = exc
        finally:
            lane.loader.hand_back()

    for lane in lanes:
        lane.thread = threading.Thread(target=work, args=(lane,), name=lane.contender.name, daemon=True)
        lane.thread.start()
        lane.loader.handed_back.acquire()  # set up (model, trainer, run start) one at a time, untimed
    for r in range(n_epoch):
        for i in range(len(lanes)):
            lane = lanes[(i + r) % len(lanes)]
            if lane.error is not None:
                continue
            gc.collect()
            lane.loader.turn.release()
            lane.loader.handed_back.acquire()
    for lane in lanes:
        lane.loader.turn.release()  # a lane that failed early may still wait for a turn
        lane.thread.join()
        timed = slice(warmup, warmup + rounds)
        lane.wall = [s / steps for s in lane.loader.seconds[timed]]
        lane.cpu = [s / steps for s in lane.loader.cpu_seconds[timed]]
    return lanes


# ---------------------------------------------------------------------- report
def summarise(lanes: list[Lane]) -> dict[str, dict[str, Any]]:
    raw = lanes[0]
    out: dict[str, dict[str, Any]] = {}
    for lane in lanes:
        name = lane.contender.name
        if lane.error is not None:
            out[name] = {"error": f"{type(lane.error).__name__}: {lane.error}"}
            continue
        ratios = [t / r for t, r in zip(lane.wall, raw.wall)]
        cpu_ratios = [t / r for t, r in zip(lane.cpu, raw.cpu)]
        out[name] = {
            "median_s_per_step": statistics.median(lane.wall),
            "ratio": statistics.median(ratios),
            "ratio_q1": _quantile(ratios, 0.25),
            "ratio_q3": _quantile(ratios, 0.75),
            "best_s_per_step": min(lane.wall),
            "best_ratio": min(lane.wall) / min(raw.wall),
            "cpu_median_s_per_step": statistics.median(lane.cpu),
            "cpu_ratio": statistics.median(cpu_ratios),
            "rounds": len(ratios),
        }
        if lane.contender.skipped:
            out[name]["note"] = lane.contender.skipped
    return out


def _quantile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=4, method="inclusive")[{0.25: 0, 0.75: 2}[q]]


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "zae_engine": zae_engine.__version__,
    }


def print_table(console: Console, title: str, results: dict[str, dict[str, Any]], skipped: dict[str, str]) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("contender")
    table.add_column("median µs/step", justify="right")
    table.add_column("ratio to raw", justify="right")
    table.add_column("ratio IQR", justify="right")
    table.add_column("CPU-time ratio", justify="right")
    table.add_column("best µs/step", justify="right")
    table.add_column("best-round ratio", justify="right")
    noted = bool(skipped) or any("note" in row or "error" in row for row in results.values())
    if noted:
        table.add_column("note")
    blanks = [""] * (len(table.columns) - 3)  # the figures' cells of a row that has none: name, status, ..., note
    for name, row in results.items():
        if "error" in row:
            table.add_row(name, "failed", *blanks, row["error"])
            continue
        table.add_row(
            name,
            f"{row['median_s_per_step'] * 1e6:.1f}",
            f"{row['ratio']:.3f}x",
            f"{row['ratio_q1']:.3f}-{row['ratio_q3']:.3f}",
            f"{row['cpu_ratio']:.3f}x",
            f"{row['best_s_per_step'] * 1e6:.1f}",
            f"{row['best_ratio']:.3f}x",
            *([row.get("note", "")] if noted else []),
        )
    for name, why in skipped.items():
        table.add_row(name, "skipped", *blanks, why)
    console.print(table)


def profile(steps: int, name: str = "premade") -> int:
    """The functions that take the time in a Trainer epoch, and the share of zae-engine's own frames."""
    torch.set_num_threads(1)
    workload = WORKLOADS[name]
    loader = workload.loader(steps)
    model = workload.model()
    trainer = BenchTrainer(model, "cpu", "train", make_optimizer(model), log_bar=False)
    trainer.run(1, loader)  # warm-up
    profiler = cProfile.Profile()
    profiler.runcall(trainer.run, 1, loader)
    stats = pstats.Stats(profiler)
    own = sum(row[2] for func, row in stats.stats.items() if os.sep + "zae_engine" + os.sep in func[0])
    stats.sort_stats("tottime").print_stats(20)
    print(f"zae_engine's own frames: {own / stats.total_tt:.1%} of the profiled time ({steps} steps)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=[*WORKLOADS, "all"], default="all")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds (the median is taken over them)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--steps", type=int, default=None, help="batches per round (default: per workload)")
    parser.add_argument("--quick", action="store_true", help="5 steps, 1 round, no warm-up: only checks it runs")
    parser.add_argument("--profile", action="store_true", help="instead: cProfile the Trainer on one premade epoch")
    args = parser.parse_args(argv)
    if args.profile:
        return profile(args.steps or WORKLOADS["premade"].steps)
    if args.quick:
        args.rounds, args.warmup, args.steps = 1, 0, args.steps or 5
    if args.rounds < 1 or args.warmup < 0 or (args.steps is not None and args.steps < 1):
        parser.error("--rounds and --steps must be >= 1, --warmup >= 0")

    torch.set_num_threads(1)
    console = Console(highlight=False, width=max(Console().width, 110))
    report: dict[str, Any] = {"benchmark": "overhead", "machine": machine(), "workloads": {}}
    console.print(
        "machine: {cpu}, {cores} cores; python {python}; torch {torch} ({torch_threads} thread); "
        "zae-engine {zae_engine}".format(**report["machine"])
    )
    with tempfile.TemporaryDirectory(prefix="zae-bench-") as workdir:
        found = contenders(workdir)
        skipped = {c.name: c.skipped for c in found if c.build is None}
        for name in WORKLOADS if args.workload == "all" else [args.workload]:
            workload = WORKLOADS[name]
            steps = args.steps or workload.steps
            results = summarise(measure(workload, found, args.rounds, args.warmup, steps))
            title = (
                f"{name}: layers {workload.layers}, batch {workload.batch_size}, "
                f"{steps} steps per round, {args.rounds} rounds after {args.warmup} warm-up"
            )
            print_table(console, title, results, skipped)
            report["workloads"][name] = {
                "layers": list(workload.layers),
                "batch_size": workload.batch_size,
                "steps_per_round": steps,
                "rounds": args.rounds,
                "warmup": args.warmup,
                "contenders": results,
                "skipped": skipped,
            }
    print(json.dumps(report), flush=True)
    failed = any("error" in row for w in report["workloads"].values() for row in w["contenders"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
