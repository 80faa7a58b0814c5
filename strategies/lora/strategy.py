"""``lora``: sequential LoRA, one adapter trained across tasks or merged and restarted per task.

Two variants appear in the literature (TRACE, arXiv 2310.06762; CoDyRA, arXiv 2412.01004): TRACE's SeqLoRA keeps training one
adapter on every task (``merge_after_task=false``, the default); CoDyRA's naive "LoRA r=16"
baseline merges the adapter into the weights after each task and starts a fresh one
(``merge_after_task=true``). Either way nothing protects old tasks.
"""

from __future__ import annotations

from typing import Any

import torch

from clbench.api import Backbone, Experience, Strategy
from clbench.nn import apply_lora
from clbench.strategies.lora.config import LoRAConfig

DEFAULT_TARGETS = {"classic": ("fc",), "llm": ("q", "v"), "clip": ("q", "k", "v", "o", "fc", "proj"), "vit": ("qkv",)}


class SequentialLoRA(Strategy):
    """Freeze the backbone, wrap the target layers with LoRA and train only the adapters."""

    Config = LoRAConfig
    config: LoRAConfig

    def setup(self, backbone: Backbone) -> None:
        super().setup(backbone)
        for p in backbone.model.parameters():
            p.requires_grad_(False)
        targets = self.config.targets or backbone.default_targets(DEFAULT_TARGETS.get(backbone.kind, ("fc",)), "lora")
        layers = backbone.adapter_targets(targets)
        self.adapters = apply_lora(backbone.model, layers, self.config.rank, self.config.alpha, self.config.dropout)
        if self.config.train_head and backbone.kind in ("classic", "vit"):  # heads without pretrained weights
            for head in backbone.head_layers(layers).values():
                for p in head.parameters():
                    p.requires_grad_(True)

    def after_task(self, experience: Experience) -> None:
        if self.config.merge_after_task:
            for layer in self.adapters.values():
                layer.merge_()

    def telemetry(self) -> dict[str, Any]:
        """Frobenius norm of the current adapter update, summed over layers."""
        with torch.no_grad():
            total = sum(float(layer.delta_weight().norm()) for layer in self.adapters.values())
        return {"adapter_update_norm": total, "adapted_layers": len(self.adapters)}
