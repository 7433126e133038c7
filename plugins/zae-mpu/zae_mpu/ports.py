"""The rendezvous address of a spawned run: checked before any worker starts, so a busy port never hangs.

Only `tcp://host:port` addresses on this machine can be checked; `env://`, `file://` and remote hosts are
passed through untouched (the process-group timeout bounds them).
"""

from __future__ import annotations

import errno
import socket
import sys
from urllib.parse import urlsplit

from zae_engine.errors import ConfigError


def port_is_free(host: str, port: int) -> bool | None:
    """True/False when `host` is local and the port can/cannot be listened on; None when it cannot be told."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return None
    answer = None
    for family, kind, proto, _, address in infos:
        try:
            probe = socket.socket(family, kind, proto)
        except OSError:  # an address family this machine does not offer (e.g. IPv6 switched off)
            continue
        with probe:
            # c10d's TCPStore listens with SO_REUSEADDR: a port in TIME_WAIT is free for it, so it is for us
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return False
                if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                    continue  # not an address of this machine (a remote master), or not usable here
                raise
            answer = True
    return answer


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now, picked by the operating system."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host if host != "localhost" else "127.0.0.1", 0))
        return probe.getsockname()[1]


def resolve_init_method(init_method: str, strict_port: bool) -> str:
    """`init_method` ready for the workers: a busy port is swapped for a free one, or refused when `strict_port`."""
    parts = urlsplit(init_method)
    if parts.scheme != "tcp":
        return init_method
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or port is None:
        raise ConfigError(
            f"MultiGPUAddon: init_method {init_method!r} is not 'tcp://HOST:PORT'; e.g. 'tcp://localhost:12355'"
        )
    if port == 0:  # "any free port"
        return f"tcp://{_bracketed(host)}:{free_port(host)}"
    if port_is_free(host, port) is not False:
        return init_method
    if strict_port:
        raise ConfigError(
            f"MultiGPUAddon: port {port} of init_method {init_method!r} is already in use (another run, or a "
            f"process still holding it: `lsof -i :{port}` shows which). Stop that process, choose another port, "
            "or set strict_port=False to let zae-mpu pick a free one"
        )
    chosen = free_port(host)
    print(
        f"zae-mpu: port {port} is in use; using free port {chosen} instead (strict_port=True refuses instead)",
        file=sys.stderr,
    )
    return f"tcp://{_bracketed(host)}:{chosen}"


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host
