"""``lora``: sequential LoRA, one adapter trained across tasks or merged and restarted per task.

Two variants appear in the literature (TRACE, arXiv 2310.06762; CoDyRA, arXiv 2412.01004): TRACE's SeqLoRA keeps training one
adapter on every task (``merge_after_task=false``, the default); CoDyRA's naive "LoRA r=16"
baseline merges the adapter into the weights after each task and starts a fresh one
(``merge_after_task=true``). Either way nothing protects old tasks.
"""

from __future__ import annotations

from typing import Any

import torch

from clbench.api import Backbone, Experience, Strategy, inject_adapters
from clbench.api.adapters import ALL_LINEAR, QV
from clbench.nn import LoRALinear
from clbench.strategies.lora.config import LoRAConfig


class SequentialLoRA(Strategy):
    """Freeze the backbone, wrap the target layers with LoRA and train only the adapters."""

    Config = LoRAConfig
    config: LoRAConfig
    fsdp = True  # adapters on a frozen model; merge_after_task writes through AdapterLinear.add_to_base_weight_
    adapter_placement = QV  # LoRA's W_q, W_v (TRACE's SeqLoRA on LLMs)
    adapter_placement_by_kind = {"clip": ALL_LINEAR}  # CoDyRA's LoRA baseline adapts every CLIP weight

    def setup(self, backbone: Backbone) -> None:
        super().setup(backbone)
        cfg = self.config
        kind = cfg.kind_settings(backbone.kind)  # rank, alpha, dropout: the paper's for the kind unless set
        self.adapters = inject_adapters(backbone, self.resolve_targets(cfg.targets, "lora"),
                                        lambda _, layer: LoRALinear(layer, kind["rank"], kind["alpha"], kind["dropout"]), heads=cfg.train_head)

    def after_task(self, experience: Experience) -> None:
        if self.config.merge_after_task:
            for layer in self.adapters.values():
                layer.merge_()

    def telemetry(self) -> dict[str, Any]:
        """Frobenius norm of the current adapter update, summed over layers."""
        with torch.no_grad():
            total = sum(float(layer.delta_weight().norm()) for layer in self.adapters.values())
        return {"adapter_update_norm": total, "adapted_layers": len(self.adapters)}
