"""``codyra``: CoDyRA, continual dynamic rank-selective LoRA (arXiv 2412.01004; official code ``Artificer-AI-Lab/CoDyRA``).

Each task trains a fresh LoRA with a per-rank gate, ``y = W x + B diag(w) A x``. After every
optimizer step of the sparse phase the gates are soft-thresholded with a κ that ramps to
``kappa_max``, so ranks the task does not need reach exactly zero. At the task boundary the zero
ranks are dropped and ``B diag(w) A`` is merged into the frozen weights: the model stays the
original architecture, with no inference overhead and a small per-task update.
"""

from clbench.lazy import lazy_exports

__all__ = ["CoDyRA", "CoDyRAConfig", "KappaSchedule"]
__getattr__, __dir__ = lazy_exports(__name__, {"CoDyRA": "strategy", "CoDyRAConfig": "config", "KappaSchedule": "schedule"})
