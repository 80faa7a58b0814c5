"""``lwf``: Learning without Forgetting (Li & Hoiem 2016).

The method is in :mod:`.strategy`, its settings in :mod:`.config`.
"""

from clbench.strategies.lwf.config import LwFConfig
from clbench.strategies.lwf.strategy import LwF, distillation_kl

__all__ = ["LwF", "LwFConfig", "distillation_kl"]
