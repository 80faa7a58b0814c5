"""``ewc``: Elastic Weight Consolidation, online variant (Kirkpatrick et al. 2017; Schwarz et al. 2018).

The method is in :mod:`.strategy`, its settings in :mod:`.config`.
"""

from clbench.lazy import lazy_exports

__all__ = ["EWC", "EWCConfig", "empirical_fisher", "ewc_penalty", "select_parameters"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "EWC": "strategy",
    "EWCConfig": "config",
    "empirical_fisher": "strategy",
    "ewc_penalty": "strategy",
    "select_parameters": "strategy",
})
