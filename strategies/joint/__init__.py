"""``joint``: train on the union of every task seen so far, the multitask upper reference.

The method is in :mod:`.strategy`, its settings in :mod:`.config`.
"""

from clbench.strategies.joint.config import JointConfig
from clbench.strategies.joint.strategy import Joint

__all__ = ["Joint", "JointConfig"]
