"""``lora``: sequential LoRA, one adapter trained across tasks or merged and restarted per task.

Two variants appear in the literature (TRACE, arXiv 2310.06762; CoDyRA, arXiv 2412.01004): TRACE's SeqLoRA keeps training one
adapter on every task (``merge_after_task=false``, the default); CoDyRA's naive "LoRA r=16"
baseline merges the adapter into the weights after each task and starts a fresh one
(``merge_after_task=true``). Either way nothing protects old tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from clbench.api import Backbone, Experience, Strategy, StrategyConfig
from clbench.nn import LoRALinear, apply_lora
from clbench.strategies.lora.defaults import LORA_DEPARTURES, resolve_lora


@dataclass(frozen=True, kw_only=True)
class LoRAConfig(StrategyConfig):
    """Sequential LoRA.

    Unset (``None``) adapter settings take the paper value for the backbone kind
    (``strategies/lora/defaults.py``): LLM r=8, alpha 32, dropout 0.1 on q,v (TRACE's peft
    LoraConfig); CLIP r=16, alpha 16 (scale 1), no dropout, every weight of both encoders
    (CoDyRA's naive LoRA baseline); classic and ViT r=8, alpha 16, no dropout (ours).

    Attributes:
        rank: adapter rank r (default: per kind, as above).
        alpha: scaling numerator (update scaled by alpha / rank; default: per kind).
        dropout: dropout on the adapter input (default: per kind).
        targets: generic layer names to adapt (q, k, v, o, fc, proj, head) or module-name
            globs; empty = the backbone kind's default (classic: fc; llm: q, v; clip: all six;
            vit: qkv).
        merge_after_task: merge the adapter into the weights after each task and restart it.
        train_head: also train the classifier head fully (classic backbones, whose head has no
            pretrained weights).
    """

    rank: int | None = None
    alpha: float | None = None
    dropout: float | None = None
    targets: tuple[str, ...] = ()
    merge_after_task: bool = False
    train_head: bool = True

    DEPARTURES = LORA_DEPARTURES

    def __post_init__(self) -> None:
        if self.rank is not None and self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def kind_settings(self, backbone_kind: str) -> dict[str, Any]:
        """rank, alpha, dropout and targets as they apply on ``backbone_kind``."""
        return resolve_lora(self, backbone_kind)


class SequentialLoRA(Strategy):
    """Freeze the backbone, wrap the target layers with LoRA and train only the adapters."""

    Config = LoRAConfig
    config: LoRAConfig

    def setup(self, backbone: Backbone) -> None:
        super().setup(backbone)
        for p in backbone.model.parameters():
            p.requires_grad_(False)
        resolved = resolve_lora(self.config, backbone.kind)
        targets = self.config.targets or backbone.default_targets(resolved["targets"], "lora")
        layers = backbone.adapter_targets(targets)
        self.adapters = apply_lora(backbone.model, layers, resolved["rank"], resolved["alpha"], resolved["dropout"])
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

    def adapter_layers(self) -> dict[str, LoRALinear]:
        return self.adapters
