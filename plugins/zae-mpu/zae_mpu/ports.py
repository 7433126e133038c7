"""Where the workers of a spawned run meet: a rendezvous the launcher owns before any worker starts.

For `tcp://HOST:PORT` the launching process itself listens on the port: it hosts the run's c10d `TCPStore`
from before the first worker starts until the last one is gone, and the workers join it as clients. Taking
the port *is* the check, so two runs started at the same moment with the same address can never meet in one
process group: the second finds the port taken and moves to a free one (or stops, with `strict_port`).
`env://` and `file://` addresses are the user's to manage and go to the workers untouched.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

import torch.distributed as dist

from zae_engine.errors import ConfigError


@dataclass(frozen=True)
class Rendezvous:
    """What the workers are told: the address, and whether the launcher serves the store behind it."""

    init_method: str
    hosted: bool  # True: a TCPStore in the launcher listens at init_method; workers connect as clients


def store_address(init_method: str) -> tuple[str, int]:
    """('localhost', 12355) from 'tcp://localhost:12355'; a ConfigError naming the expected form otherwise."""
    parts = urlsplit(init_method)
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if parts.scheme != "tcp" or not host or port is None:
        raise ConfigError(
            f"MultiGPUAddon: init_method {init_method!r} is not 'tcp://HOST:PORT'; e.g. 'tcp://localhost:12355'"
        )
    return host, port


@contextmanager
def hosted_rendezvous(init_method: str, strict_port: bool, timeout_s: float) -> Iterator[Rendezvous]:
    """Listen on `init_method`'s port (or a free one) for as long as the run lasts; other schemes pass through."""
    if urlsplit(init_method).scheme != "tcp":
        yield Rendezvous(init_method, hosted=False)
        return
    host, port = store_address(init_method)
    store = _listen(init_method, host, port, strict_port, timedelta(seconds=timeout_s))
    try:
        yield Rendezvous(f"tcp://{_bracketed(host)}:{store.port}", hosted=True)
    finally:
        del store  # the last reference: the store's server stops and the port is free again


def join_hosted_store(init_method: str, timeout_s: float) -> dist.Store:
    """A worker's client connection to the store its launcher serves."""
    host, port = store_address(init_method)
    return dist.TCPStore(host, port, is_master=False, timeout=timedelta(seconds=timeout_s))


class _PortTaken(Exception):
    """Someone else listens on the port."""


def _listen(init_method: str, host: str, port: int, strict_port: bool, timeout: timedelta) -> dist.TCPStore:
    if port == 0:  # "any free port": the operating system picks one as the store binds it
        return _store(init_method, host, 0, timeout)
    try:
        return _store(init_method, host, port, timeout)
    except _PortTaken:
        pass
    if strict_port:
        raise ConfigError(
            f"MultiGPUAddon: port {port} of init_method {init_method!r} is already in use (another run, or a "
            f"process still holding it: `lsof -i :{port}` shows which). Stop that process, choose another port, "
            "or set strict_port=False to let zae-mpu pick a free one"
        )
    store = _store(init_method, host, 0, timeout)
    print(
        f"zae-mpu: port {port} is in use; using free port {store.port} instead (strict_port=True refuses instead)",
        file=sys.stderr,
    )
    return store


def _store(init_method: str, host: str, port: int, timeout: timedelta) -> dist.TCPStore:
    try:
        return dist.TCPStore(host, port, None, True, timeout, wait_for_workers=False)
    except RuntimeError as exc:  # DistNetworkError on torch >= 2.1
        text = str(exc)
        if "EADDRINUSE" in text or "address already in use" in text.lower():
            raise _PortTaken from None
        raise ConfigError(
            f"MultiGPUAddon: cannot listen on port {port} for init_method {init_method!r}: {text}. Choose another "
            "port, or port 0 for any free one"
        ) from None


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now, picked by the operating system (for launchers other than ours)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host if host != "localhost" else "127.0.0.1", 0))
        return probe.getsockname()[1]


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host
