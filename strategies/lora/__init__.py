"""``lora``: sequential LoRA, one adapter trained across tasks or merged and restarted per task.

The method is in :mod:`.strategy`, its settings in :mod:`.config`.
"""

from clbench.strategies.lora.config import LoRAConfig
from clbench.strategies.lora.strategy import SequentialLoRA

__all__ = ["LoRAConfig", "SequentialLoRA"]
