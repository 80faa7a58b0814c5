"""``smora``: SMoRA, "Each Rank Could be an Expert" — single-rank mixture-of-experts LoRA.

The method is in :mod:`.strategy`, its settings in :mod:`.config`.
"""

from clbench.lazy import lazy_exports

__all__ = ["SMoRA", "SMoRAConfig"]
__getattr__, __dir__ = lazy_exports(__name__, {"SMoRA": "strategy", "SMoRAConfig": "config"})
