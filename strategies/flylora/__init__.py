"""``flylora``: FlyLoRA, LoRA with a frozen sparse random A as an implicit rank router (NeurIPS 2025).

The method is in :mod:`.strategy`, its settings in :mod:`.config`.
"""

from clbench.lazy import lazy_exports

__all__ = ["FlyLoRA", "FlyLoRAConfig"]
__getattr__, __dir__ = lazy_exports(__name__, {"FlyLoRA": "strategy", "FlyLoRAConfig": "config"})
