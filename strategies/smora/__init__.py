"""``smora``: SMoRA, "Each Rank Could be an Expert" — single-rank mixture-of-experts LoRA.

The method is in :mod:`.strategy`, its settings in :mod:`.config`.
"""

from clbench.strategies.smora.config import SMoRAConfig
from clbench.strategies.smora.strategy import SMoRA

__all__ = ["SMoRA", "SMoRAConfig"]
