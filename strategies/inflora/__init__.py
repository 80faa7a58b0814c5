"""``inflora``: InfLoRA, interference-free low-rank adaptation (Liang & Li, CVPR 2024).

The method is in :mod:`.strategy`, its settings in :mod:`.config`.
"""

from clbench.lazy import lazy_exports

__all__ = ["InfLoRA", "InfLoRAConfig", "InputMoments", "key_value_outputs"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "InfLoRA": "strategy",
    "InfLoRAConfig": "config",
    "InputMoments": "strategy",
    "key_value_outputs": "strategy",
})
