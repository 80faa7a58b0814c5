"""``zeroshot``: evaluate the backbone as loaded, never train it (the row-0 reference for every task)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch.utils.data import Dataset

from clbench.api import Experience, Strategy, TaskLoop, TaskStats
from clbench.strategies.zeroshot.config import ZeroShotConfig


class ZeroShot(Strategy):
    """No training: every row of the accuracy matrix equals row 0.

    For pretrained backbones (CLIP, LLMs) this is the zero-shot reference the MTIL and X-TAIL
    tables print; for randomly initialised classic models it is chance level.
    """

    Config = ZeroShotConfig
    trains: ClassVar[bool] = False
    evaluates_as_loaded: ClassVar[bool] = True  # rows 1..T are copies of row 0, not evaluations

    def fit_task(self, data: Dataset[Any], experience: Experience, loop: TaskLoop) -> TaskStats:
        """No training: the task's record says 0 steps on 0 examples."""
        return TaskStats()
