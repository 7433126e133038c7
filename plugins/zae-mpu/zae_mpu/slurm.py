"""Joining a run that `srun` started: SLURM's environment says which task this is and where rank 0 lives.

srun starts every task itself (one per GPU with `--ntasks-per-node`), so nothing is spawned here and no torchrun
is needed: the task's global rank is SLURM_PROCID, the world SLURM_NTASKS, its device SLURM_LOCALID, and rank 0
is the first host of SLURM_NODELIST (compact form, `gpu[01-04,07]`), which listens for the others.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from zae_engine.errors import ConfigError

#: set by srun for every task it starts (SLURM_STEP_ID is absent in a batch script or an salloc shell)
REQUIRED = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NODELIST", "SLURM_STEP_ID")
_PORT_BASE, _PORT_SPAN = 15000, 20000  # ports derived from the job id: the same on every task, apart per job
_MAX_HOSTS = 1_000_000
_RANGE = re.compile(r"(\d+)(?:-(\d+))?")


@dataclass(frozen=True)
class SlurmTask:
    """Where this task sits in the run, and where it meets the others."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int

    @property
    def init_method(self) -> str:
        host = f"[{self.master_addr}]" if ":" in self.master_addr else self.master_addr
        return f"tcp://{host}:{self.master_port}"


def slurm_task(environ: Mapping[str, str], fallback_port: int) -> SlurmTask | None:
    """This process's task in an srun step of two or more tasks; None when srun did not start it so.

    MASTER_ADDR / MASTER_PORT, when exported, win over the node list and the port derived from SLURM_JOB_ID.
    """
    if any(name not in environ for name in REQUIRED):
        return None
    world = _number(environ, "SLURM_NTASKS")
    if world < 2:
        return None  # one task (e.g. `srun -n1`): the add-on spawns a worker per device as it would anywhere
    rank, local_rank = _number(environ, "SLURM_PROCID"), _number(environ, "SLURM_LOCALID")
    if not 0 <= rank < world:
        raise ConfigError(f"MultiGPUAddon: SLURM_PROCID={rank} is outside 0..{world - 1} (SLURM_NTASKS={world})")
    master = environ.get("MASTER_ADDR") or first_host(environ["SLURM_NODELIST"])
    return SlurmTask(rank, world, local_rank, master, _port(environ, fallback_port))


def _port(environ: Mapping[str, str], fallback: int) -> int:
    if environ.get("MASTER_PORT"):
        return _number(environ, "MASTER_PORT")
    if environ.get("SLURM_JOB_ID", "").isdigit():
        return _PORT_BASE + int(environ["SLURM_JOB_ID"]) % _PORT_SPAN
    return fallback


def _number(environ: Mapping[str, str], name: str) -> int:
    text = environ[name].strip()
    if not text.isdigit():
        raise ConfigError(f"MultiGPUAddon: {name}={environ[name]!r} is not a whole number; is this an srun task?")
    return int(text)


# ---------------------------------------------------------------------------------------------- node lists
def first_host(nodelist: str) -> str:
    """The first host of a compact SLURM node list: 'gpu[07-09,12],cpu01' -> 'gpu07'."""
    for host in hosts(nodelist):
        return host
    raise ConfigError(f"MultiGPUAddon: SLURM_NODELIST={nodelist!r} names no host")


def expand_nodelist(nodelist: str, limit: int = _MAX_HOSTS) -> list[str]:
    """Every host of a compact node list, in order (as `scontrol show hostnames` prints them)."""
    out = []
    for host in hosts(nodelist):
        if len(out) == limit:
            raise ConfigError(f"MultiGPUAddon: SLURM_NODELIST={nodelist[:80]!r} names more than {limit} hosts")
        out.append(host)
    return out


def hosts(nodelist: str) -> Iterator[str]:
    """The hosts of a node list, one at a time (a list of a million nodes is never held in memory)."""
    for item in _split_top_level(nodelist):
        yield from _expand(_parts(item, nodelist))


def _split_top_level(nodelist: str) -> list[str]:
    items, depth, start = [], 0, 0
    for i, char in enumerate(nodelist):
        if char == "[":
            depth += 1
            if depth > 1:
                raise _bad(nodelist, "nested '['")
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise _bad(nodelist, "']' without '['")
        elif char == "," and depth == 0:
            items.append(nodelist[start:i])
            start = i + 1
    if depth:
        raise _bad(nodelist, "'[' without ']'")
    items.append(nodelist[start:])
    return [item.strip() for item in items if item.strip()]


def _parts(item: str, nodelist: str) -> list[str | list[tuple[int, int, int]]]:
    """'rack[1-2]-n[01-03]' -> ['rack', [(1, 2, 1)], '-n', [(1, 3, 2)]]: text and bracket groups of ranges."""
    parts: list[str | list[tuple[int, int, int]]] = []
    for text, group in re.findall(r"([^\[]*)(?:\[([^\]]*)\])?", item):
        if text:
            parts.append(text)
        if group:
            ranges = []
            for piece in group.split(","):
                match = _RANGE.fullmatch(piece.strip())
                if not match:
                    raise _bad(nodelist, f"'{piece}' in [{group}] is not N or N-M")
                low, high = match.group(1), match.group(2) or match.group(1)
                if int(high) < int(low):
                    raise _bad(nodelist, f"range {piece} runs backwards")
                ranges.append((int(low), int(high), len(low)))
            parts.append(ranges)
    return parts


def _expand(parts: list[str | list[tuple[int, int, int]]]) -> Iterator[str]:
    if not parts:
        yield ""
        return
    head, rest = parts[0], parts[1:]
    if isinstance(head, str):
        for tail in _expand(rest):
            yield head + tail
        return
    for low, high, width in head:
        for number in range(low, high + 1):
            for tail in _expand(rest):
                yield f"{number:0{width}d}{tail}"


def _bad(nodelist: str, why: str) -> ConfigError:
    return ConfigError(
        f"MultiGPUAddon: cannot read SLURM_NODELIST={nodelist[:120]!r} ({why}); export MASTER_ADDR with the first "
        "host's address to bypass it"
    )
