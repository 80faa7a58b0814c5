"""``finetune``: sequential full fine-tuning, the lower reference every CL method must beat.

The method is in :mod:`.strategy`, its settings in :mod:`.config`.
"""

from clbench.lazy import lazy_exports

__all__ = ["FineTune", "FineTuneConfig"]
__getattr__, __dir__ = lazy_exports(__name__, {"FineTune": "strategy", "FineTuneConfig": "config"})
