"""Building blocks shared by strategies (adapters), so no strategy imports another."""

from clbench.nn.codyra import CoDyRALinear, apply_codyra, merge_codyra
from clbench.nn.lora import LoRALinear, apply_lora, unwrap_lora
from clbench.nn.mora import MoRALinear, MoRASettings, apply_mora, unwrap_mora
from clbench.nn.multi_lora import TaskLoRALinear, apply_task_lora

__all__ = ["LoRALinear", "MoRALinear", "MoRASettings", "apply_lora", "apply_mora", "unwrap_lora", "unwrap_mora"]
__all__ += ["CoDyRALinear", "apply_codyra", "merge_codyra"]
__all__ += ["TaskLoRALinear", "apply_task_lora"]
