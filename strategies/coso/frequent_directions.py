"""Frequent Directions (Liberty 2013; Ghashami et al. 2016) over the columns of CoSO's gradients.

The sketch ``S`` (m × ℓ) summarises every block of columns ``A = [G_1, G_2, …]`` fed to it so
that ``0 ⪯ A Aᵀ − S Sᵀ`` and ``‖A Aᵀ − S Sᵀ‖₂ ≤ Σ_t δ_t ≤ (‖A‖_F² − ‖A_k‖_F²) / (ℓ − k)`` for
every k < ℓ, where δ_t is the squared singular value each shrink removes. CoSO feeds it one
block per projector refresh: the block is itself the gradient's top-ℓ SVD, shrunk by its
(ℓ+1)-th squared singular value (the newer official code), then merged with the decayed sketch
and shrunk again (``quinn-ch/CoSO`` ``coso/coso_projector.py``).

The sketch is kept as its left singular vectors and values (``S = U diag(σ)``), which is what
CoSO needs at the end of a task (the directions and their energies).
"""

from __future__ import annotations

import torch


def shrink(sigma: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shrink the first ``keep`` values by the (keep+1)-th squared value (along the last dimension).

    Returns:
        ``(sqrt(max(σ_i² − σ_{keep+1}², 0)))_{i ≤ keep}`` and the removed ``δ = σ_{keep+1}²``
        (0 when there is no (keep+1)-th value); for a batch ``[L, q]``, ``[L, keep]`` and ``[L]``.
    """
    delta = sigma[..., keep].pow(2) if sigma.shape[-1] > keep else sigma.new_zeros(sigma.shape[:-1])
    shrunk = torch.sqrt(torch.clamp(sigma[..., :keep].pow(2) - delta.unsqueeze(-1), min=0.0))
    return shrunk, delta


def merge_batch(basis: torch.Tensor, sigma: torch.Tensor, block_u: torch.Tensor, block_sigma: torch.Tensor, decay: float,
                rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Frequent Directions merge of ``L`` sketches with ``L`` blocks at once, from small eigenproblems.

    ``M = [β U diag(σ), V diag(s)]`` with orthonormal ``U`` (m × a, the sketch) and ``V`` (m × b,
    the block): in the orthonormal basis ``W = [U, Q₂]`` of both spans (``Q₂ R₂ = qr(V − U UᵀV)``)
    ``M = W K`` with the small ``K = [[β diag σ, UᵀV diag s], [0, R₂ diag s]]`` ((a+b) × (a+b)), so
    the left singular pairs of ``M`` are ``W`` times the eigenvectors of ``K Kᵀ``. Same result as
    the SVD of ``M`` up to round-off: the eigenvectors are orthonormal to working precision, and
    the squared values carry an absolute error of order ``eps · σ_max²`` — a relative error in the
    values only for those below ~1e-3 of the largest, whose energy (σ²) is under 1e-6 of the
    sketch's, far below any energy threshold. Costs an m × b QR and an (a+b)-sized eigenproblem
    instead of an m × (a+b) QR and SVD. Needs ``a + b ≤ m``.

    Args:
        basis, sigma: ``[L, m, a]`` and ``[L, a]``, the sketches.
        block_u, block_sigma: ``[L, m, b]`` and ``[L, b]``, the (already shrunk) blocks.
        decay: β.
        rank: ℓ.

    Returns:
        ``(basis [L, m, keep], sigma [L, keep], delta [L])`` with keep = min(ℓ, a + b).
    """
    a, b = basis.shape[-1], block_u.shape[-1]
    overlap = basis.transpose(1, 2) @ block_u
    q2, r2 = torch.linalg.qr(block_u - basis @ overlap)
    core = torch.zeros(basis.shape[0], a + b, a + b, dtype=basis.dtype, device=basis.device)
    core[:, :a, :a] = torch.diag_embed(decay * sigma)
    core[:, :a, a:] = overlap * block_sigma.unsqueeze(1)
    core[:, a:, a:] = r2 * block_sigma.unsqueeze(1)
    eigenvalues, vectors = torch.linalg.eigh(core @ core.transpose(1, 2))
    values = eigenvalues.flip(-1).clamp_min(0.0).sqrt()
    keep = min(rank, a + b)
    new_sigma, delta = shrink(values, keep)
    top = vectors.flip(-1)[:, :, :keep]
    new_basis = torch.cat([basis, q2], dim=2) @ top
    return new_basis, new_sigma, delta


class FrequentDirections:
    """A Frequent Directions sketch of ℓ columns in R^m.

    Args:
        dim: m, the length of every column.
        rank: ℓ, the number of sketch columns (at most m are ever non-zero).
        decay: β, applied to the sketch before each merge (1.0 in every CoSO config).

    Attributes:
        basis: U (m × ℓ'), the sketch's left singular vectors (ℓ' ≤ ℓ; 0 columns when empty).
        sigma: σ (ℓ',), the sketch's singular values, descending.
        shrinkage: Σ_t δ_t, the total squared singular value removed so far (the error bound);
            a 0-d tensor, so feeding the sketch never synchronises with the device.
    """

    def __init__(self, dim: int, rank: int, decay: float = 1.0, *, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> None:
        if rank < 1:
            raise ValueError(f"sketch rank must be >= 1, got {rank}")
        self.dim = dim
        self.rank = rank
        self.decay = decay
        self.basis = torch.zeros(dim, 0, device=device, dtype=dtype)
        self.sigma = torch.zeros(0, device=device, dtype=dtype)
        self.shrinkage = torch.zeros((), device=device, dtype=dtype)

    @property
    def sketch(self) -> torch.Tensor:
        """``S = U diag(σ)`` (m × ℓ')."""
        return self.basis * self.sigma

    def is_empty(self) -> bool:
        return self.sigma.numel() == 0

    def update_from_svd(self, u: torch.Tensor, s: torch.Tensor, block_rank: int | None = None) -> None:
        """Feed one block given by its SVD (``G = U diag(S) Vᵀ``; only U and S are needed).

        ``u`` must hold at least the top ℓ singular vectors and ``s`` the top ℓ+1 values when
        they exist (fewer means the block has lower rank and nothing is shrunk off it).
        ``block_rank`` k < ℓ feeds only the top k directions, shrunk by the (k+1)-th squared value
        (not CoSO's block: ``perf/coso_sketch_block.py`` measures what that truncation changes).
        """
        keep = min(self.rank if block_rank is None else block_rank, self.rank, s.numel())
        block_sigma, delta = shrink(s[: keep + 1], keep)
        self.shrinkage = self.shrinkage + delta
        block = u[:, : block_sigma.numel()] * block_sigma
        if self.is_empty():
            self.basis, self.sigma = u[:, : block_sigma.numel()].clone(), block_sigma
            return
        self._merge(block)

    def update(self, block: torch.Tensor) -> None:
        """Feed a block of columns (m × b) directly (its exact SVD is taken here)."""
        u, s, _ = torch.linalg.svd(block, full_matrices=False)
        self.update_from_svd(u[:, : self.rank + 1], s[: self.rank + 1])

    def _merge(self, block: torch.Tensor) -> None:
        """SVD of ``[β S, block]`` as a QR plus a small SVD, then shrink to ℓ columns."""
        merged = torch.cat([self.decay * self.sketch, block], dim=1)
        q, r = torch.linalg.qr(merged, mode="reduced")
        u_small, s, _ = torch.linalg.svd(r, full_matrices=False)
        u = q @ u_small
        keep = min(self.rank, s.numel())
        self.sigma, delta = shrink(s, keep)
        self.shrinkage = self.shrinkage + delta
        self.basis = u[:, :keep]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(basis, sigma, shrinkage)``: the whole sketch state as tensors (for optimizer state)."""
        return self.basis, self.sigma, self.shrinkage

    def load_tensors(self, basis: torch.Tensor, sigma: torch.Tensor, shrinkage: torch.Tensor) -> FrequentDirections:
        """Restore the state :meth:`tensors` returned; returns ``self``."""
        self.basis, self.sigma, self.shrinkage = basis, sigma, shrinkage
        return self
