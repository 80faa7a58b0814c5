"""Settings of ``finetune``: the documented config dataclass (``-S`` keys)."""

from __future__ import annotations

from dataclasses import dataclass

from clbench.api import FullModelConfig


@dataclass(frozen=True, kw_only=True)
class FineTuneConfig(FullModelConfig):
    """Sequential fine-tuning trains every parameter with the benchmark's settings.

    LLM backbones default to TRACE's full-parameter learning rate (``llm_lr``, 1e-5): full fine-tuning at the
    LoRA rates destroys a pretrained model in a few steps.
    """

    DEPARTURES = {
        "lr": "classic, CLIP and ViT: the benchmark's (sequential fine-tuning is a baseline with no paper of its own); "
              "LLM cosine/weight decay: the benchmark's, not TRACE's cosine and 0; not measured",
    }
