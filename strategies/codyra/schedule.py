"""CoDyRA's proximal threshold schedule: a dense phase, then κ ramped over discrete levels.

Exactly the official training loop (``Artificer-AI-Lab/CoDyRA`` ``main.py``), with ``T`` optimizer steps per task and
steps counted from 0:

* the levels are ``linspace(0, κ_max, L)`` (L = 50), so level 0 is κ = 0 and level L−1 is κ_max;
* the dense phase covers ``d = dense_fraction · T`` steps (a float, 250 for T = 500);
* before step ``i`` the level index grows by one whenever ``i ≥ d`` and ``i`` is a multiple of the
  interval ``int((T − d) // L)`` (5 for T = 500), and is capped at L−1;
* after the optimizer step ``i`` the gate is soft-thresholded with the current κ iff ``i > d``
  (strictly: the official loop skips the step at which the first level is entered).

For T = 500 this thresholds steps 251–499 at κ = κ_max·k/49 for k = 1 (steps 251–254), 2
(255–259), …, 49 (490–499): a total shrinkage of 130·κ_max ≈ 0.65 per gate.

The official interval is 0 when the sparse phase has fewer steps than levels, and its loop then
never leaves level 0 (no sparsification at all). clbench then uses as many levels as there are
sparse steps (at least 2), one per step, so short tasks still ramp to κ_max.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class KappaSchedule:
    """The per-step threshold κ_t of one task.

    Attributes:
        total_steps: optimizer steps in the task (T).
        kappa_max: the last level's threshold, applied as is (not scaled by the learning rate).
        dense_fraction: fraction of the steps with no thresholding.
        levels: number of κ levels L, including the initial level κ = 0.
    """

    total_steps: int
    kappa_max: float = 0.005
    dense_fraction: float = 0.5
    levels: int = 50

    def __post_init__(self) -> None:
        if self.total_steps < 0:
            raise ValueError(f"total_steps must be >= 0, got {self.total_steps}")
        if self.kappa_max < 0:
            raise ValueError(f"kappa_max must be >= 0, got {self.kappa_max}")
        if not 0 <= self.dense_fraction <= 1:
            raise ValueError(f"dense_fraction must be in [0, 1], got {self.dense_fraction}")
        if self.levels < 2:
            raise ValueError(f"levels must be >= 2, got {self.levels}")

    @property
    def dense_steps(self) -> float:
        """``d = dense_fraction · T`` (a float, compared with step indices as the official loop does)."""
        return self.dense_fraction * self.total_steps

    @property
    def effective_levels(self) -> int:
        """L, or the number of sparse steps (≥ 2) when there are fewer sparse steps than levels."""
        sparse = self.total_steps - self.dense_steps
        if sparse // self.levels >= 1:
            return self.levels
        return max(2, int(sparse))

    @property
    def interval(self) -> int:
        """Steps per level: ``int((T − d) // L)`` (at least 1 under the short-task fallback)."""
        return max(1, int((self.total_steps - self.dense_steps) // self.effective_levels))

    def level(self, step: int) -> int:
        """The level index in force at ``step`` (0 during the dense phase, capped at L−1)."""
        first = math.ceil(self.dense_steps)  # the first integer step with i >= d
        if step < first:
            return 0
        k = self.interval
        raised = step // k - (first - 1) // k  # multiples of k in [first, step]
        return min(self.effective_levels - 1, raised)

    def kappa(self, step: int) -> float:
        """κ in force at ``step``: ``κ_max · level / (L − 1)``."""
        return self.kappa_max * self.level(step) / (self.effective_levels - 1)

    def applies(self, step: int) -> bool:
        """Whether the gate is thresholded after ``step`` (strictly after the dense phase)."""
        return step > self.dense_steps and step < self.total_steps

    def total_shrinkage(self) -> float:
        """Σ κ_t over the thresholded steps: how far the task can move a gate towards zero."""
        return sum(self.kappa(i) for i in range(self.total_steps) if self.applies(i))

    def rescaled(self, reference_steps: int) -> KappaSchedule:
        """This schedule with κ_max scaled so its total shrinkage equals that of ``reference_steps``.

        The paper's κ_max is per step and tuned for 500-step tasks; a 12-step task would barely
        shrink a gate. Rescaling keeps the method's total pull on each gate instead.
        """
        if reference_steps == self.total_steps:
            return self
        reference = KappaSchedule(reference_steps, self.kappa_max, self.dense_fraction, self.levels).total_shrinkage()
        mine = KappaSchedule(self.total_steps, 1.0, self.dense_fraction, self.levels).total_shrinkage()
        if mine == 0 or reference == 0:
            return self
        return KappaSchedule(self.total_steps, reference / mine, self.dense_fraction, self.levels)
