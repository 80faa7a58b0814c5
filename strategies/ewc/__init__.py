"""``ewc``: Elastic Weight Consolidation, online variant (Kirkpatrick et al. 2017; Schwarz et al. 2018).

The method is in :mod:`.strategy`, its settings in :mod:`.config`.
"""

from clbench.strategies.ewc.config import EWCConfig
from clbench.strategies.ewc.strategy import EWC, empirical_fisher, ewc_penalty, select_parameters

__all__ = ["EWC", "EWCConfig", "empirical_fisher", "ewc_penalty", "select_parameters"]
