"""``flylora``: FlyLoRA, LoRA with a frozen sparse random A as an implicit rank router (NeurIPS 2025).

The method is in :mod:`.strategy`, its settings in :mod:`.config`.
"""

from clbench.strategies.flylora.config import FlyLoRAConfig
from clbench.strategies.flylora.strategy import FlyLoRA

__all__ = ["FlyLoRA", "FlyLoRAConfig"]
