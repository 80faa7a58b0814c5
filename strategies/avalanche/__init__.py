"""``avalanche:<Strategy>``: run any avalanche-lib supervised strategy inside clbench's runner.

The strategy is in :mod:`.strategy`, configs built from avalanche's constructors in :mod:`.config`.
"""

from clbench.strategies.avalanche.config import AvalancheConfig
from clbench.strategies.avalanche.strategy import MASKED_LOGIT, AvalancheStrategy, supervised_strategies

__all__ = ["MASKED_LOGIT", "AvalancheConfig", "AvalancheStrategy", "supervised_strategies"]
