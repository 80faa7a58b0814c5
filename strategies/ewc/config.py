"""Settings of ``ewc``: the documented config dataclass (``-S`` keys)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clbench.api import StrategyConfig


@dataclass(frozen=True, kw_only=True)
class EWCConfig(StrategyConfig):
    """Online EWC.

    Attributes:
        ewc_lambda: λ, the weight of the quadratic penalty (tune per backbone). The default 1000 suits the digits MLP with per-example Fisher.
        gamma: decay of the accumulated Fisher at each task boundary (1 = plain sum).
        fisher_samples: training examples of a task used to estimate its Fisher (0 = all).
        fisher_batch_size: examples per squared gradient; 1 gives the exact per-example
            empirical Fisher, larger values the cheaper mini-batch approximation avalanche uses.
        train_params: globs over parameter names that are trained and regularised (empty =
            every parameter).
        llm_lr: learning rate on LLM backbones when ``lr`` is not given (full fine-tuning).
    """

    ewc_lambda: float = 1000.0
    gamma: float = 1.0
    fisher_samples: int = 512
    fisher_batch_size: int = 1
    train_params: tuple[str, ...] = ()
    llm_lr: float = 2e-5

    def __post_init__(self) -> None:
        if self.ewc_lambda < 0:
            raise ValueError(f"ewc_lambda must be >= 0, got {self.ewc_lambda}")
        if not 0 <= self.gamma <= 1:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if self.fisher_samples < 0 or self.fisher_batch_size < 1:
            raise ValueError("fisher_samples must be >= 0 and fisher_batch_size >= 1")

    def train_overrides(self, backbone_kind: str) -> dict[str, Any]:
        overrides = super().train_overrides(backbone_kind)
        if backbone_kind == "llm" and overrides["lr"] is None:
            overrides["lr"] = self.llm_lr
        return overrides
