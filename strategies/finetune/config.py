"""Settings of ``finetune``: the documented config dataclass (``-S`` keys)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clbench.api import StrategyConfig


@dataclass(frozen=True, kw_only=True)
class FineTuneConfig(StrategyConfig):
    """Sequential fine-tuning trains every parameter with the benchmark's settings.

    LLM backbones default to a small learning rate (2e-5): full fine-tuning at the LoRA rates
    destroys a pretrained model in a few steps.

    Attributes:
        llm_lr: learning rate used on LLM backbones when ``lr`` is not given.
    """

    llm_lr: float = 2e-5

    def train_overrides(self, backbone_kind: str) -> dict[str, Any]:
        overrides = super().train_overrides(backbone_kind)
        if backbone_kind == "llm" and overrides["lr"] is None:
            overrides["lr"] = self.llm_lr
        return overrides
