"""Settings of ``lora``: the documented config dataclass (``-S`` keys)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clbench.api import StrategyConfig
from clbench.nn.lora_defaults import LORA_DEPARTURES, resolve_lora


@dataclass(frozen=True, kw_only=True)
class LoRAConfig(StrategyConfig):
    """Sequential LoRA.

    Unset (``None``) adapter settings take the paper value for the backbone kind
    (``clbench/nn/lora_defaults.py``): LLM r=8, alpha 32, dropout 0.1 on q,v (TRACE's peft
    LoraConfig); CLIP r=16, alpha 16 (scale 1), no dropout, every weight of both encoders
    (CoDyRA's naive LoRA baseline); classic and ViT r=8, alpha 16, no dropout (ours).

    Attributes:
        rank: adapter rank r (default: per kind, as above).
        alpha: scaling numerator (update scaled by alpha / rank; default: per kind).
        dropout: dropout on the adapter input (default: per kind).
        targets: generic layer names to adapt (q, k, v, o, fc, proj, head) or module-name
            globs; empty = the backbone kind's default (classic: fc; llm: q, v; clip: all six).
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
        """rank, alpha and dropout as they apply on ``backbone_kind``."""
        return resolve_lora(self, backbone_kind)
