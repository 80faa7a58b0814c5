"""Settings of ``zeroshot``: the documented config dataclass (``-S`` keys)."""

from __future__ import annotations

from dataclasses import dataclass

from clbench.api import StrategyConfig


@dataclass(frozen=True, kw_only=True)
class ZeroShotConfig(StrategyConfig):
    """Zero-shot has no hyperparameters of its own."""
