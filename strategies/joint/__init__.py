"""``joint``: train on the union of every task seen so far, the multitask upper reference.

The method is in :mod:`.strategy`, its settings in :mod:`.config`.
"""

from clbench.lazy import lazy_exports

__all__ = ["Joint", "JointConfig"]
__getattr__, __dir__ = lazy_exports(__name__, {"Joint": "strategy", "JointConfig": "config"})
