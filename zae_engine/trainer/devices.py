"""Turning the `device` argument (string, torch.device or a list of them) into torch.devices."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from zae_engine.errors import ConfigError

DeviceLike = str | torch.device


def parse_devices(device: DeviceLike | Sequence[DeviceLike]) -> list[torch.device]:
    """Every device the trainer may use, validated; CUDA asked for on a machine without it is an error."""
    items = list(device) if isinstance(device, (list, tuple)) else [device]
    if not items:
        raise ConfigError("Trainer: 'device' is an empty list; give 'cpu', 'cuda', 'cuda:1' or a list of them")
    devices = []
    for item in items:
        if not isinstance(item, (str, torch.device)):
            raise ConfigError(f"Trainer: 'device' entries must be strings or torch.device, got {item!r}")
        try:
            parsed = torch.device(item)
        except (RuntimeError, ValueError):
            raise ConfigError(
                f"Trainer: 'device' {item!r} is not a device; use 'cpu', 'cuda', 'cuda:1' or a list of them"
            ) from None
        if parsed.type == "cuda":
            if not torch.cuda.is_available():
                raise ConfigError(f"Trainer: 'device' {item!r} asks for CUDA, which this machine lacks; use 'cpu'")
            if parsed.index is not None and parsed.index >= torch.cuda.device_count():
                raise ConfigError(
                    f"Trainer: 'device' {item!r} does not exist; {torch.cuda.device_count()} CUDA device(s) visible"
                )
        devices.append(parsed)
    return devices
