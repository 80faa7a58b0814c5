"""``mora``: MoRA / MoRAM, a self-activated sparse mixture of rank-1 experts (arXiv 2506.21035; official code ``Artificer-AI-Lab/MoRAM``).

Each adapted linear layer keeps a growing bank of rank-1 atoms: ``r`` trainable atoms per task,
frozen at the next task boundary but still taking part in routing. A token"s gate over the atoms
comes from the atoms" own normalised responses (signed top-k, softmax at temperature τ, and an
inference-only threshold δ); there is no router and no auxiliary loss. The layer lives in
:mod:`clbench.strategies.mora.layer` and runs on :func:`clbench.kernels.rank_gated_lora`.
"""

from clbench.lazy import lazy_exports

__all__ = ["ADAPTER_DEFAULTS", "TRAIN_DEFAULTS", "MoRA", "MoRAConfig"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "ADAPTER_DEFAULTS": "config",
    "TRAIN_DEFAULTS": "config",
    "MoRA": "strategy",
    "MoRAConfig": "config",
})
