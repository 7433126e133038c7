"""`MetricSender`: metrics go out in batches from a background thread, so the training loop never waits on MLflow.

The loop only appends to a buffer (at log points and epoch ends). The thread sends what is buffered with
`log_batch` (at most 1000 metrics a request, MLflow's limit) when woken at an epoch end, every few seconds while
anything waits, and once more when the run closes; at most once every `MIN_GAP_S` unless someone waits for it
(`flush`, `close`), so epochs of a fraction of a second do not each pay for a request (a SQLite store's commit
alone takes 20-40 ms). If the store cannot be reached the metrics stay buffered
(at most `max_pending`; the oldest are dropped past that) and are tried again later; whatever is still unsent
when the run closes (after a bounded wait) is counted as lost, with the steps it covered, for the warning.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from zae_engine.trainer.addons.tracking import first_line

MAX_METRICS_PER_BATCH = 1000
#: while metrics wait, send at least this often (long epochs still show progress)
SEND_EVERY_S = 5.0
#: and at most this often, unless `flush` or `close` waits for the send
MIN_GAP_S = 2.0
#: after a failed send, wait this long before the next try (unless the run closes first)
RETRY_AFTER_S = 10.0


@dataclass
class Loss:
    """What a run could not send."""

    metrics: int = 0
    first_step: int | None = None
    last_step: int | None = None
    error: str = ""

    def add(self, batch: Iterable[Any]) -> None:
        for metric in batch:
            self.metrics += 1
            self.first_step = metric.step if self.first_step is None else min(self.first_step, metric.step)
            self.last_step = metric.step if self.last_step is None else max(self.last_step, metric.step)

    def describe(self) -> str:
        steps = "" if self.first_step is None else f" (steps {self.first_step}-{self.last_step})"
        return f"{self.metrics} metric value{'s' if self.metrics != 1 else ''}{steps}"


class MetricSender:
    """One per open MLflow run. `send_batch(metrics)` is the client call; `lock` serialises every client call."""

    def __init__(
        self, send_batch: Callable[[list[Any]], None], lock: threading.Lock, max_pending: int = 100_000
    ) -> None:
        self._send_batch = send_batch
        self._client_lock = lock
        self._pending: deque[Any] = deque()
        self._max_pending = max_pending
        self._state = threading.Condition()
        self._wake = threading.Event()
        self._urgent = threading.Event()  # someone waits: skip the minimum gap
        self._closing = False
        self._in_flight: list[Any] = []
        self._retry_at = 0.0
        self._failures = 0
        self.loss = Loss()
        #: the last send's error (None once a send succeeds again)
        self.error: str | None = None
        self._thread = threading.Thread(target=self._work, name="zae-mlflow-sender", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the training loop's side
    def add(self, metrics: list[Any]) -> None:
        with self._state:
            self._pending.extend(metrics)
            overflow = len(self._pending) - self._max_pending
            if overflow > 0:
                self.loss.add(self._pending.popleft() for _ in range(overflow))

    def wake(self) -> None:
        """Send now (in the background)."""
        self._wake.set()

    def flush(self, timeout: float) -> bool:
        """Wait until everything added so far is sent; False if it was not within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._state:
            failures = self._failures
            self._retry_at = 0.0
            self._urgent.set()
            self._wake.set()
            while self._pending or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0 or self._failures != failures:
                    return False
                self._state.wait(left)
        return True

    def close(self, timeout: float) -> Loss:
        """One last send, waiting at most `timeout` seconds; what is left (or still in flight) is lost."""
        with self._state:
            self._closing = True
            self._retry_at = 0.0
        self._urgent.set()
        self._wake.set()
        self._thread.join(timeout)
        with self._state:
            self.loss.add(self._in_flight)
            self.loss.add(self._pending)
            self._pending.clear()
            self._in_flight = []
            if self.loss.metrics and not self.loss.error:
                self.loss.error = self.error or "the store did not answer in time"
        return self.loss

    @property
    def down(self) -> bool:
        """The last send failed (the store is unreachable, or refused the request)."""
        return self.error is not None

    # ------------------------------------------------------------------ the thread
    def _work(self) -> None:
        while True:
            self._wake.wait(SEND_EVERY_S)
            self._wake.clear()
            self._urgent.clear()
            if self._closing or time.monotonic() >= self._retry_at:
                self._send_pending()
            if self._closing:
                return
            self._urgent.wait(MIN_GAP_S)

    def _send_pending(self) -> None:
        while True:
            with self._state:
                count = min(len(self._pending), MAX_METRICS_PER_BATCH)
                if count == 0:
                    self._state.notify_all()
                    return
                self._in_flight = [self._pending.popleft() for _ in range(count)]
            try:
                with self._client_lock:
                    self._send_batch(self._in_flight)
            except Exception as exc:
                with self._state:
                    self._pending.extendleft(reversed(self._in_flight))
                    self._in_flight = []
                    self.error = f"{type(exc).__name__}: {first_line(exc)}"
                    self._failures += 1
                    self._retry_at = time.monotonic() + RETRY_AFTER_S
                    self._state.notify_all()
                return
            with self._state:
                self._in_flight = []
                self.error = None
