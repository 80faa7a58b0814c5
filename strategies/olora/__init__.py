"""``olora``: O-LoRA, orthogonal subspace learning with one LoRA per task (Wang et al., 2023).

The method is in :mod:`.strategy`, its settings in :mod:`.config`.
"""

from clbench.strategies.olora.config import OLoRAConfig
from clbench.strategies.olora.strategy import DEFAULT_TARGETS, OLoRA, l2_loss, orthogonality_loss

__all__ = ["DEFAULT_TARGETS", "OLoRA", "OLoRAConfig", "l2_loss", "orthogonality_loss"]
