"""Where a run happens: package versions, the git commit, the host. Read once, at the start of a run.

Versions come from installed metadata (importlib.metadata), so recording them imports neither torch nor any
plugin. Git is asked with a time limit and with repository hooks that could run commands switched off.
"""

from __future__ import annotations

import copy
import os
import platform
import re
import socket
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

from zae_engine.runs.record import GitState

GIT_TIMEOUT_S = 5.0
_PLUGIN = re.compile(r"^zae[-_.]")


def _version(distribution: str) -> str | None:
    from importlib import metadata  # here, not at the top: readers of run records never need it

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, Any]:
    """zae-engine, torch, Python, and every installed zae-* plugin distribution (a copy; callers may change it)."""
    return copy.deepcopy(_versions())


@lru_cache(maxsize=1)
def _versions() -> dict[str, Any]:  # what is imported cannot change within a process; scanning takes ~20 ms
    from importlib import metadata

    plugins: dict[str, str] = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").strip()
        if _PLUGIN.match(name.lower()) and name.lower().replace("_", "-") != "zae-engine":
            plugins[name] = dist.version
    return {
        "zae-engine": _version("zae-engine"),
        "torch": _version("torch"),
        "python": platform.python_version(),
        "plugins": dict(sorted(plugins.items())),
    }


def git_state(cwd: str | os.PathLike | None = None) -> GitState | None:
    """The commit checked out in `cwd` and whether tracked files differ from it; None outside a repository."""
    commit = _git(["rev-parse", "--verify", "HEAD"], cwd)
    if commit is None or not re.fullmatch(r"[0-9a-f]{40,64}", commit):
        return None
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    return GitState(commit=commit, dirty=bool(status))


def _git(args: list[str], cwd: str | os.PathLike | None) -> str | None:
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    command = ["git", "-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null", *args]
    try:
        done = subprocess.run(
            command,
            cwd=Path(cwd) if cwd else None,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError):  # no git, an unreadable folder, or too slow
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def host() -> str:
    return socket.gethostname()
