"""``olora``: O-LoRA, orthogonal subspace learning with one LoRA per task (Wang et al., 2023).

The method is in :mod:`.strategy`, its settings in :mod:`.config`.
"""

from clbench.strategies.olora.config import OLoRAConfig
from clbench.strategies.olora.strategy import OLoRA, l2_loss, orthogonality_loss

__all__ = ["OLoRA", "OLoRAConfig", "l2_loss", "orthogonality_loss"]
