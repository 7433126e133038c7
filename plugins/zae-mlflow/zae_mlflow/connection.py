"""Where the tracking store is, and MLflow's HTTP retries bounded so an outage costs seconds, not minutes.

MLflow's REST client retries a failed request 7 times with exponential backoff and waits up to 120 s for an
answer: about four minutes before `create_run` on a refused connection gives up. Its only knobs are environment
variables read at every request, so while a run is open the add-on sets them (each one the user has not set
already) and puts them back when the run closes. Other MLflow calls in the same process see them meanwhile.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from zae_mlflow.config import DEFAULT_TRACKING_URI

#: at most 3 attempts, 0 s then 2 s apart, 10 s for an answer: a refused connection fails in about 2 s
BOUNDED_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def tracking_uri(configured: str | None) -> str:
    """The add-on's `tracking_uri`, else MLFLOW_TRACKING_URI, else the local SQLite file (its folder made).

    A relative SQLite path is made absolute here: MLflow keeps one store per URI for the life of the process, so
    `sqlite:///runs/mlflow.db` would keep writing into the first working folder it was opened from."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///"):
        path, _, query = uri.removeprefix("sqlite:///").partition("?")
        if path and path != ":memory:":
            file = Path(path).expanduser().absolute()
            file.parent.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{file}" + (f"?{query}" if query else "")
    return uri


_lock = threading.Lock()
_holders = 0  # open runs that rely on the bounds
_added: list[str] = []  # the variables the first of them set


def bound_http_retries() -> Callable[[], None]:
    """Set the bounds the user has not set; return the function that puts the environment back.

    Counted, so two trainers with runs open at once (two add-ons) leave the bounds in place until both closed."""
    global _holders, _added
    with _lock:
        if _holders == 0:
            _added = [name for name in BOUNDED_HTTP if name not in os.environ]
            for name in _added:
                os.environ[name] = BOUNDED_HTTP[name]
        _holders += 1
    released = False

    def restore() -> None:
        global _holders
        nonlocal released
        with _lock:
            if released:
                return
            released = True
            _holders -= 1
            if _holders == 0:
                for name in _added:
                    if os.environ.get(name) == BOUNDED_HTTP[name]:
                        del os.environ[name]

    return restore
