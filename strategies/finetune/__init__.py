"""``finetune``: sequential full fine-tuning, the lower reference every CL method must beat.

The method is in :mod:`.strategy`, its settings in :mod:`.config`.
"""

from clbench.strategies.finetune.config import FineTuneConfig
from clbench.strategies.finetune.strategy import FineTune

__all__ = ["FineTune", "FineTuneConfig"]
