"""``lora``: sequential LoRA, one adapter trained across tasks or merged and restarted per task.

The method is in :mod:`.strategy`, its settings in :mod:`.config`.
"""

from clbench.lazy import lazy_exports

__all__ = ["LoRAConfig", "SequentialLoRA"]
__getattr__, __dir__ = lazy_exports(__name__, {"LoRAConfig": "config", "SequentialLoRA": "strategy"})
