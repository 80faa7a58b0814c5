"""``avalanche:<Strategy>``: run any avalanche-lib supervised strategy inside clbench"s runner.

The strategy is in :mod:`.strategy`, configs built from avalanche"s constructors in :mod:`.config`.
"""

from clbench.lazy import lazy_exports

__all__ = ["MASKED_LOGIT", "AvalancheConfig", "AvalancheStrategy", "supervised_strategies"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "MASKED_LOGIT": "strategy",
    "AvalancheConfig": "config",
    "AvalancheStrategy": "strategy",
    "supervised_strategies": "strategy",
})
