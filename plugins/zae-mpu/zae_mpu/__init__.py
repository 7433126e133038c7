"""zae-mpu: the `mpu` add-on of zae-engine, data-parallel training with torch DDP."""

from zae_mpu.addon import MultiGPUAddon, MultiGPUConfig
from zae_mpu.failures import RankFailedError

__all__ = ["MultiGPUAddon", "MultiGPUConfig", "RankFailedError"]
__version__ = "0.1.0"
