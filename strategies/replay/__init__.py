"""``replay``: experience replay from a reservoir buffer (Chaudhry et al. 2019).

The method is in :mod:`.strategy`, its settings in :mod:`.config`.
"""

from clbench.lazy import lazy_exports

__all__ = ["Replay", "ReplayConfig", "ReplayMixDataset", "gather_examples"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "Replay": "strategy",
    "ReplayConfig": "config",
    "ReplayMixDataset": "strategy",
    "gather_examples": "strategy",
})
