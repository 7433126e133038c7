"""A real `mlflow server` for the tests: its own process group, a free loopback port, SQLite, a local artifact root.

Start-up takes seconds (imports, database migrations), so test modules share one server (a module-scoped fixture).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 120.0


@dataclass
class Server:
    uri: str  # http://127.0.0.1:PORT
    backend_uri: str  # the server's SQLite store, readable without the server
    artifacts: Path
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        """End the server and every process it started (uvicorn, its job runner): they share its process group."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(3)  # uvicorn may wait on idle keep-alive connections; nothing here needs that
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(30)
        _kill_group_leftovers(self.process.pid)

    def kill(self) -> None:
        """As a crash would: SIGKILL to the whole group, no clean shutdown."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        _kill_group_leftovers(self.process.pid)


def start_server(folder: Path, attempts: int = 3) -> Server:
    """Start `mlflow server` on a free port of 127.0.0.1 and wait until /health answers."""
    folder.mkdir(parents=True, exist_ok=True)
    last = ""
    for attempt in range(attempts):
        port = _free_port()
        log = folder / f"server-{attempt}.log"
        db = folder / "mlflow.db"
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{db}",
            "--artifacts-destination", str(folder / "artifacts"),
        ]  # fmt: skip
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, cwd=folder, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env=_server_env(),
            )  # fmt: skip
        server = Server(f"http://127.0.0.1:{port}", f"sqlite:///{db}", folder / "artifacts", process, log)
        if _wait_healthy(server):
            return server
        server.stop()
        last = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"mlflow server did not start in {attempts} attempts; last log:\n{last}")


def _server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return env


def _wait_healthy(server: Server) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False  # e.g. the port was taken meanwhile
        try:
            with urllib.request.urlopen(server.uri + "/health", timeout=2) as answer:
                if answer.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.25)
    return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _kill_group_leftovers(group: int) -> None:
    try:
        os.killpg(group, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
