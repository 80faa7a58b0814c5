"""``zeroshot``: evaluate the backbone as loaded, never train it (the row-0 reference for every task).

The method is in :mod:`.strategy`, its settings in :mod:`.config`.
"""

from clbench.strategies.zeroshot.config import ZeroShotConfig
from clbench.strategies.zeroshot.strategy import ZeroShot

__all__ = ["ZeroShot", "ZeroShotConfig"]
