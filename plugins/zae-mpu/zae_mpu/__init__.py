"""zae-mpu: the `mpu` add-on of zae-engine, data-parallel training with torch DDP or FSDP2.

Names load on first use, so `zae_mpu.config` (the options) can be read without importing torch.
"""

import importlib
from typing import Any

__all__ = ["MultiGPUAddon", "MultiGPUConfig", "RankFailedError"]
__version__ = "0.2.0"

_WHERE = {"MultiGPUAddon": "zae_mpu.addon", "MultiGPUConfig": "zae_mpu.config", "RankFailedError": "zae_mpu.failures"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
