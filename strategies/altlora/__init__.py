"""``altlora``: AltLoRA, LoRA trained by alternating projections of the full gradient (arXiv 2505.12455).

The forward is plain LoRA; the method is an optimizer. Each step first moves A by the
least-squares best approximation of the full-weight gradient inside the column space of B
(the gradient preconditioned by (BᵀB + λI)⁻¹), then B inside the row space of the new A
(preconditioned by (AAᵀ + λI)⁻¹). Momentum is kept per factor in low-rank form and carried into
each new subspace by an r × r transport, so memory stays at LoRA + Adam level. AltLoRA+ adds an
Adam-style second moment. See ``docs/strategies/altlora.md``; official code: LucasXinYu/AltLoRA.

Modules: :mod:`.config` (settings), :mod:`.optimizer` (``AltLoRAOptimizer``), :mod:`.strategy`
(the strategy hooks and factor telemetry).
"""

from clbench.lazy import lazy_exports

__all__ = ["AltLoRA", "AltLoRAConfig", "AltLoRAOptimizer"]
__getattr__, __dir__ = lazy_exports(__name__, {"AltLoRA": "strategy", "AltLoRAConfig": "config", "AltLoRAOptimizer": "optimizer"})
