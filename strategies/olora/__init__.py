"""``olora``: O-LoRA, orthogonal subspace learning with one LoRA per task (Wang et al., 2023).

The method is in :mod:`.strategy`, its settings in :mod:`.config`.
"""

from clbench.lazy import lazy_exports

__all__ = ["OLoRA", "OLoRAConfig", "l2_loss", "orthogonality_loss"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "OLoRA": "strategy",
    "OLoRAConfig": "config",
    "l2_loss": "strategy",
    "orthogonality_loss": "strategy",
})
