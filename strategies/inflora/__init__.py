"""``inflora``: InfLoRA, interference-free low-rank adaptation (Liang & Li, CVPR 2024).

The method is in :mod:`.strategy`, its settings in :mod:`.config`.
"""

from clbench.strategies.inflora.config import InfLoRAConfig
from clbench.strategies.inflora.strategy import InfLoRA, InputMoments, key_value_outputs

__all__ = ["InfLoRA", "InfLoRAConfig", "InputMoments", "key_value_outputs"]
