"""``zeroshot``: evaluate the backbone as loaded, never train it (the row-0 reference for every task).

The method is in :mod:`.strategy`, its settings in :mod:`.config`.
"""

from clbench.lazy import lazy_exports

__all__ = ["ZeroShot", "ZeroShotConfig"]
__getattr__, __dir__ = lazy_exports(__name__, {"ZeroShot": "strategy", "ZeroShotConfig": "config"})
