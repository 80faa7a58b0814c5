"""Building blocks shared by strategies (adapters), so no strategy imports another."""

from clbench.nn.lora import LoRALinear, apply_lora, unwrap_lora

__all__ = ["LoRALinear", "apply_lora", "unwrap_lora"]
