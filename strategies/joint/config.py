"""Settings of ``joint``: the documented config dataclass (``-S`` keys)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clbench.api import StrategyConfig


@dataclass(frozen=True, kw_only=True)
class JointConfig(StrategyConfig):
    """Joint training on all data seen so far, with every parameter trainable.

    Attributes:
        restart: before each task, reset the model to its initial weights, so row t is a model
            trained jointly on tasks 1..t from scratch (the standard upper reference); with
            ``false`` training continues from the previous row's model (cheaper, nearly equal).
        llm_lr: learning rate on LLM backbones when ``lr`` is not given.
    """

    restart: bool = True
    llm_lr: float = 2e-5

    def train_overrides(self, backbone_kind: str) -> dict[str, Any]:
        overrides = super().train_overrides(backbone_kind)
        if backbone_kind == "llm" and overrides["lr"] is None:
            overrides["lr"] = self.llm_lr
        return overrides
