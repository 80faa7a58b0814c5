"""``coso``: Continuous Subspace Optimization (arXiv 2505.11816, NeurIPS 2025).

CoSO fine-tunes full weight matrices (by default the attention output projections) with an
optimizer that works in a sequence of low-rank subspaces taken from each step"s gradient SVD,
after projecting every gradient off a historical subspace that holds the important gradient
directions of earlier tasks (found with a Frequent Directions sketch). See
``docs/strategies/coso.md``; paper arXiv 2505.11816, official code ``quinn-ch/CoSO``.

Modules: :mod:`.config` (settings and official presets), :mod:`.projector` (deflation, SVD,
energy selection), :mod:`.frequent_directions` (the sketch), :mod:`.optimizer` (``CoSOAdamW``),
:mod:`.strategy` (the strategy hooks).
"""

from clbench.lazy import lazy_exports

__all__ = ["PRESETS", "CoSO", "CoSOAdamW", "CoSOConfig", "FrequentDirections"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "PRESETS": "config",
    "CoSO": "strategy",
    "CoSOAdamW": "optimizer",
    "CoSOConfig": "config",
    "FrequentDirections": "frequent_directions",
})
