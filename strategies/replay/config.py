"""Settings of ``replay``: the documented config dataclass (``-S`` keys)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clbench.api import StrategyConfig


@dataclass(frozen=True, kw_only=True)
class ReplayConfig(StrategyConfig):
    """Experience replay with a reservoir memory.

    Attributes:
        buffer_size: memory capacity in examples (avalanche's Replay default: 200).
        replay_batch_size: memory examples added to every training batch (0 = the batch size,
            so half of each step's examples are replayed once the memory is full enough).
        llm_lr: learning rate on LLM backbones when ``lr`` is not given (full fine-tuning).
    """

    buffer_size: int = 200
    replay_batch_size: int = 0
    llm_lr: float = 2e-5

    def __post_init__(self) -> None:
        if self.buffer_size < 0 or self.replay_batch_size < 0:
            raise ValueError("buffer_size and replay_batch_size must be >= 0")

    def train_overrides(self, backbone_kind: str) -> dict[str, Any]:
        overrides = super().train_overrides(backbone_kind)
        if backbone_kind == "llm" and overrides["lr"] is None:
            overrides["lr"] = self.llm_lr
        return overrides
