"""``replay``: experience replay from a reservoir buffer (Chaudhry et al. 2019).

The method is in :mod:`.strategy`, its settings in :mod:`.config`.
"""

from clbench.strategies.replay.config import ReplayConfig
from clbench.strategies.replay.strategy import Replay, ReplayMixDataset, gather_examples

__all__ = ["Replay", "ReplayConfig", "ReplayMixDataset", "gather_examples"]
