"""``sara``: SaRA, progressive sparse fine-tuning of the smallest-magnitude weights (arXiv 2409.06633).

Pretrained weights with the smallest magnitudes barely affect the output, so SaRA trains only
those (|w| below a global threshold θ), as a sparse update written into the frozen weights:
gradients and optimizer state exist only for the selected entries, nothing is merged, inference
is unchanged. Halfway through training the selection shrinks to the entries still below θ; in
clbench it is also re-computed at every task start, so weights that earlier tasks made
"effective" freeze. A nuclear-norm penalty keeps the update low-rank. See
``docs/strategies/sara.md``; official code: sjtuplayer/SaRA.

Modules: :mod:`.config` (settings), :mod:`.sparse` (the sparse-update parametrization, threshold
and nuclear gradient), :mod:`.optimizer` (``SaRAAdamW``), :mod:`.strategy` (the strategy hooks).
"""

from clbench.lazy import lazy_exports

__all__ = ["SaRA", "SaRAAdamW", "SaRAConfig", "SparseUpdate", "selection_threshold"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "SaRA": "strategy",
    "SaRAAdamW": "optimizer",
    "SaRAConfig": "config",
    "SparseUpdate": "sparse",
    "selection_threshold": "sparse",
})
