"""Settings of ``replay``: the documented config dataclass (``-S`` keys)."""

from __future__ import annotations

from dataclasses import dataclass

from clbench.api import FullModelConfig


@dataclass(frozen=True, kw_only=True)
class ReplayConfig(FullModelConfig):
    """Experience replay with a reservoir memory.

    Attributes:
        buffer_size: memory capacity in examples (avalanche's Replay default: 200).
        replay_batch_size: memory examples added to every training batch (0 = the batch size,
            so half of each step's examples are replayed once the memory is full enough).
    """

    buffer_size: int = 200
    replay_batch_size: int = 0

    DEPARTURES = {
        "replay_batch_size": "as many memory examples as the batch size once the memory is full enough (ours); not measured",
    }

    def __post_init__(self) -> None:
        if self.buffer_size < 0 or self.replay_batch_size < 0:
            raise ValueError("buffer_size and replay_batch_size must be >= 0")
