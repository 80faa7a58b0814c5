"""Settings of ``lora``: the documented config dataclass (``-S`` keys)."""

from __future__ import annotations

from dataclasses import dataclass

from clbench.api import StrategyConfig


@dataclass(frozen=True, kw_only=True)
class LoRAConfig(StrategyConfig):
    """Sequential LoRA.

    Attributes:
        rank: adapter rank r.
        alpha: scaling numerator (update scaled by alpha / rank).
        dropout: dropout on the adapter input.
        targets: generic layer names to adapt (q, k, v, o, fc, proj, head) or module-name
            globs; empty = the backbone kind's default (classic: fc; llm: q, v; clip: all six).
        merge_after_task: merge the adapter into the weights after each task and restart it.
        train_head: also train the classifier head fully (classic backbones, whose head has no
            pretrained weights).
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ()
    merge_after_task: bool = False
    train_head: bool = True

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
