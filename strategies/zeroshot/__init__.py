"""``zeroshot``: evaluate the backbone as loaded, never train it (the row-0 reference for every task)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from clbench.api import Strategy, StrategyConfig


@dataclass(frozen=True, kw_only=True)
class ZeroShotConfig(StrategyConfig):
    """Zero-shot has no hyperparameters of its own."""


class ZeroShot(Strategy):
    """No training: every row of the accuracy matrix equals row 0.

    For pretrained backbones (CLIP, LLMs) this is the zero-shot reference the MTIL and X-TAIL
    tables print; for randomly initialised classic models it is chance level.
    """

    Config = ZeroShotConfig
    trains: ClassVar[bool] = False
    evaluates_as_loaded: ClassVar[bool] = True  # rows 1..T are copies of row 0, not evaluations
