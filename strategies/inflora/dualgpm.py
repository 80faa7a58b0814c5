"""InfLoRA's subspace bookkeeping: the DualGPM memory of old tasks' input subspace and the
design of the new task's down-projection ``A_t`` (arXiv 2404.00228; official code
``liangyanshuo/InfLoRA`` ``methods/inflora.py``).

Per adapted layer, DualGPM stores an orthonormal basis ``M`` (``[d, m]``) in one of two forms:

* ``remove``: ``M`` spans the inputs old tasks used; the new task's input matrix is projected
  onto its complement, ``C ← C − M Mᵀ C``;
* ``retain``: ``M`` spans what is still free (the complement of the used subspace); the input
  matrix is projected onto it, ``C ← M Mᵀ C``.

The form switches from ``remove`` to ``retain`` once the used subspace exceeds half the
dimension, so ``M`` always has at most about d/2 columns. Inputs are summarised by the
uncentred second moment ``C = mean_tokens(x xᵀ)`` (``d × d``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

REMOVE = "remove"
RETAIN = "retain"


def energy_threshold(task_index: int, total_tasks: int, start: float, end: float) -> float:
    """The DualGPM energy threshold after task ``task_index`` (0-based): a linear ramp.

    ``start + (end − start) · task_index / total_tasks``, as the official ``update_DualGPM``
    (``lamb`` → ``lame``; the last task stops one step short of ``end``).
    """
    if total_tasks < 1:
        raise ValueError(f"total_tasks must be >= 1, got {total_tasks}")
    return (end - start) * task_index / total_tasks + start


def design_down_projection(cov: torch.Tensor, memory: DualGPM | None, rank: int) -> torch.Tensor:
    """InfLoRA's ``A_t`` (``[rank, d]``): top-``rank`` left singular vectors of the input matrix
    after removing (or retaining) the old subspace, transposed and divided by √3.

    Args:
        cov: the new task's input second moment ``C`` (``[d, d]``) under the current model.
        memory: the layer's DualGPM memory, or ``None`` before the first task.
        rank: the adapter rank r (≤ d).
    """
    projected = cov if memory is None else memory.project(cov)
    u, _, _ = torch.linalg.svd(projected.double(), full_matrices=False)
    return (u[:, :rank].t() / math.sqrt(3)).to(cov.dtype)


@dataclass
class DualGPM:
    """One layer's DualGPM memory.

    Attributes:
        basis: orthonormal columns ``[d, m]`` (float64).
        mode: ``remove`` (basis = used subspace) or ``retain`` (basis = free subspace).
    """

    basis: torch.Tensor
    mode: str

    @property
    def dim(self) -> int:
        return int(self.basis.shape[0])

    @property
    def used_dims(self) -> int:
        """Dimension of the subspace old tasks occupy."""
        m = int(self.basis.shape[1])
        return m if self.mode == REMOVE else self.dim - m

    def project(self, matrix: torch.Tensor) -> torch.Tensor:
        """``C − M Mᵀ C`` (remove) or ``M Mᵀ C`` (retain), in float64."""
        m = self.basis
        c = matrix.double()
        inside = m @ (m.t() @ c)
        return c - inside if self.mode == REMOVE else inside

    @classmethod
    def first(cls, cov: torch.Tensor, threshold: float) -> DualGPM:
        """The memory after the first task: the top singular directions holding ``threshold``
        of the (squared-singular-value) energy of ``cov``, at least one.

        The official code stores the used directions even when it picks the ``retain`` form
        (so its own ``retain`` assertion would fail); here ``retain`` stores the complement,
        the form's meaning everywhere else (switch to retain past d/2).
        """
        u, s, _ = torch.linalg.svd(cov.double(), full_matrices=True)
        ratio = s**2 / (s**2).sum()
        r = int((torch.cumsum(ratio, 0) < threshold).sum())
        r = max(r, 1)
        if r < cov.shape[0] / 2:
            return cls(u[:, :r].contiguous(), REMOVE)
        return cls(u[:, r:].contiguous(), RETAIN)

    def update(self, cov: torch.Tensor, threshold: float) -> bool:
        """Add the directions a finished task needs; returns ``False`` when nothing was added.

        ``remove``: grow the used basis with the top directions of the input matrix outside it,
        until the kept energy reaches ``threshold``. ``retain``: shrink the free basis by the
        directions of the input matrix inside it, until the energy left in it is below
        ``1 − threshold``. Finally switch to ``retain`` when the used part exceeds d/2.
        """
        c = cov.double()
        total = float((torch.linalg.svdvals(c) ** 2).sum())
        if total == 0:
            return False
        hat = self.project(c)
        u, s, _ = torch.linalg.svd(hat, full_matrices=False)
        ratio = (s**2 / total).tolist()
        hat_energy = float((s**2).sum()) / total
        added = 0
        if self.mode == REMOVE:
            kept = 1.0 - hat_energy  # energy already inside the used subspace
            for value in ratio:
                if kept >= threshold:
                    break
                kept += value
                added += 1
            if added == 0:
                return False
            grown = torch.cat([self.basis, u[:, :added]], dim=1)
            self.basis = grown[:, : self.dim].contiguous()
        else:
            free = hat_energy  # energy still in the free subspace
            for value in ratio:
                if free < 1.0 - threshold:
                    break
                free -= value
                added += 1
            if added == 0:
                return False
            taken = u[:, :added]
            rest = self.basis - taken @ (taken.t() @ self.basis)
            left, _, _ = torch.linalg.svd(rest, full_matrices=True)
            self.basis = left[:, : self.basis.shape[1] - added].contiguous()
        self._maybe_switch()
        return True

    def _maybe_switch(self) -> None:
        if self.mode == REMOVE and self.basis.shape[1] > self.dim / 2:
            u, _, _ = torch.linalg.svd(self.basis, full_matrices=True)
            self.basis = u[:, self.basis.shape[1]:].contiguous()
            self.mode = RETAIN
