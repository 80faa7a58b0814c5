"""Building blocks several strategies share (LoRA layers, per-task LoRA banks), so no strategy imports another.

Layers one method owns live in that strategy's folder (``strategies/mora/layer.py``, ...). Names
are imported on first use, so that a strategy config reading :mod:`clbench.nn.lora_defaults`
does not import torch.
"""

from clbench.lazy import lazy_exports

__all__ = ["LoRALinear", "TaskLoRALinear", "apply_lora", "apply_task_lora", "unwrap_lora"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "LoRALinear": "lora", "apply_lora": "lora", "unwrap_lora": "lora", "TaskLoRALinear": "multi_lora", "apply_task_lora": "multi_lora",
})
