"""One checkpoint written at a time by a background thread, while the training thread goes on.

The thread only writes what it was handed (a host copy of the state, see `staging`); the store's atomic write
is unchanged: temporary folder, every file fsynced, rename, then the manifest. A process killed while the
thread writes therefore leaves the previous checkpoint whole and listed. A failure in the thread is kept and
raised in the training thread at the next save or at the end of the run, as a synchronous save would have.
The thread is a daemon: an interpreter that exits without waiting abandons the write (never half-lists it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from time import monotonic


class BackgroundWriter:
    """Runs one write job at a time in its own thread; `busy` while it runs."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self.what: str | None = None  # the checkpoint being written, for messages
        self.started = 0.0
        self.seconds: float | None = None  # how long the last finished write took

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, job: Callable[[], None], what: str) -> None:
        """Start writing; the caller made sure nothing is in flight (`wait()` first, or skip)."""
        if self.busy:
            raise RuntimeError(f"a checkpoint ({self.what}) is still being written")
        self.raise_failure()
        self.what, self.started = what, monotonic()
        self._thread = threading.Thread(target=self._run, args=(job,), name="zae-checkpoint-writer", daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the write in flight (at most `timeout` seconds); True when nothing is in flight any more."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                return False
            self._thread = None
        return True

    def raise_failure(self) -> None:
        """Raise, once, what made the last background write fail."""
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def _run(self, job: Callable[[], None]) -> None:
        try:
            job()
            self.seconds = monotonic() - self.started
        except BaseException as exc:  # handed to the training thread; a thread has nobody else to tell
            self._failure = exc
