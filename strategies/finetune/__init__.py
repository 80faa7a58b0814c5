"""``finetune``: sequential full fine-tuning, the lower reference every CL method must beat."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clbench.api import Backbone, Strategy, StrategyConfig


@dataclass(frozen=True, kw_only=True)
class FineTuneConfig(StrategyConfig):
    """Sequential fine-tuning trains every parameter with the benchmark's settings.

    LLM backbones default to TRACE's full-parameter learning rate, 1e-5 (``BeyonderXX/TRACE``
    ``scripts/train_seq_naive.sh``: lr 1e-5, cosine, no warm-up, weight decay 0): full fine-tuning
    at the LoRA rates destroys a pretrained model in a few steps. Other kinds train with the
    benchmark's settings.

    Attributes:
        llm_lr: learning rate used on LLM backbones when ``lr`` is not given (TRACE: 1e-5).
    """

    llm_lr: float = 1e-5

    DEPARTURES = {
        "lr": "classic, CLIP and ViT: the benchmark's (sequential fine-tuning is a baseline with no paper of its own); "
              "LLM cosine/weight decay: the benchmark's, not TRACE's cosine and 0; not measured",
    }

    def train_overrides(self, backbone_kind: str) -> dict[str, Any]:
        overrides = super().train_overrides(backbone_kind)
        if backbone_kind == "llm" and overrides["lr"] is None:
            overrides["lr"] = self.llm_lr
        return overrides


class FineTune(Strategy):
    """Train all parameters on each task in turn, with no mechanism against forgetting."""

    Config = FineTuneConfig

    def setup(self, backbone: Backbone) -> None:
        super().setup(backbone)
        for p in backbone.model.parameters():
            p.requires_grad_(True)
