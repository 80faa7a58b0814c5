"""Settings of ``finetune``: the documented config dataclass (``-S`` keys)."""

from __future__ import annotations

from dataclasses import dataclass

from clbench.api import FullModelConfig


@dataclass(frozen=True, kw_only=True)
class FineTuneConfig(FullModelConfig):
    """Sequential fine-tuning trains every parameter with the benchmark's settings.

    LLM backbones default to a small learning rate (``llm_lr``, 2e-5): full fine-tuning at the
    LoRA rates destroys a pretrained model in a few steps.
    """
