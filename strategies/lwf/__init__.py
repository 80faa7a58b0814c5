"""``lwf``: Learning without Forgetting (Li & Hoiem 2016).

The method is in :mod:`.strategy`, its settings in :mod:`.config`.
"""

from clbench.lazy import lazy_exports

__all__ = ["LwF", "LwFConfig", "distillation_kl"]
__getattr__, __dir__ = lazy_exports(__name__, {"LwF": "strategy", "LwFConfig": "config", "distillation_kl": "strategy"})
