"""Building blocks several strategies share (LoRA layers, per-task LoRA banks), so no strategy imports another.

Layers one method owns live in that strategy's folder (``strategies/mora/layer.py``, ...).
"""

from clbench.nn.lora import LoRALinear, apply_lora, unwrap_lora
from clbench.nn.multi_lora import TaskLoRALinear, apply_task_lora

__all__ = ["LoRALinear", "TaskLoRALinear", "apply_lora", "apply_task_lora", "unwrap_lora"]
