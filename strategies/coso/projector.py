"""Subspace arithmetic CoSO needs per weight: deflation, top singular pairs, energy selection.

Every function works on one gradient-shaped matrix ``G`` (m × n, m = d_out): CoSO always works on
the *left* (output / column) side of the gradient, whatever its shape (``quinn-ch/CoSO`` ``coso/coso_projector.py``), so the
bases here are m × k matrices with orthonormal columns.
"""

from __future__ import annotations

import torch

SVD_METHODS = ("full", "randomized")


def deflate(grad: torch.Tensor, history: torch.Tensor | None) -> torch.Tensor:
    """Remove the historical subspace from the gradient's column space: ``G − M (Mᵀ G)``.

    Args:
        grad: the gradient (m × n).
        history: the historical basis ``M`` (m × h, orthonormal columns), or ``None`` / h = 0.

    Returns:
        The deflated gradient (a new tensor unless there is nothing to remove).
    """
    if history is None or history.shape[1] == 0:
        return grad
    return grad - history @ (history.t() @ grad)


def top_singular(matrix: torch.Tensor, k: int, method: str = "full", oversample: int = 10, power_iters: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """The top ``k`` left singular vectors and values of ``matrix``.

    ``full`` is the exact thin SVD (``torch.linalg.svd``), as the CoSO code computes it every
    refresh. ``randomized`` is the opt-in speed option: Halko et al.'s randomized range finder
    with ``power_iters`` subspace iterations and ``oversample`` extra columns
    (``torch.svd_lowrank``); it approximates the leading pairs and costs O(m·n·(k+p)) instead of
    a full SVD.

    Returns:
        ``(U, S)``: U (m × k') with orthonormal columns and S (k',) descending, with
        k' = min(k, m, n).
    """
    m, n = matrix.shape
    k = min(k, m, n)
    if method == "full":
        u, s, _ = torch.linalg.svd(matrix, full_matrices=False)
        return u[:, :k], s[:k]
    if method == "randomized":
        q = min(k + oversample, m, n)
        u, s, _ = torch.svd_lowrank(matrix, q=q, niter=power_iters)
        return u[:, :k], s[:k]
    raise ValueError(f"unknown SVD method {method!r}; valid: {', '.join(SVD_METHODS)}")


def energy_rank(sigma: torch.Tensor, threshold: float) -> int:
    """How many leading directions CoSO keeps: ``#{i : cumsum(σ²/Σσ²)_i < threshold}``.

    Strictly below, as in the official code, so the direction that crosses the threshold is
    left out. A zero spectrum (no gradient reached the layer) keeps nothing.
    """
    energy = sigma.double().pow(2)
    total = float(energy.sum())
    if total <= 0.0:
        return 0
    return int((torch.cumsum(energy / total, dim=0) < threshold).sum())


def captured_energy(sigma: torch.Tensor, k: int) -> float:
    """Fraction of the spectrum's energy ``Σσ²`` held by its first ``k`` directions."""
    energy = sigma.double().pow(2)
    total = float(energy.sum())
    return float(energy[:k].sum()) / total if total > 0 else 0.0


def append_basis(history: torch.Tensor, directions: torch.Tensor, orthonormalize: bool = False) -> torch.Tensor:
    """``M ← [M, U_k]``: concatenate new directions to the historical basis.

    The CoSO code concatenates without re-orthonormalising: the sketch was built from gradients
    already deflated against ``M``, so the new columns are orthogonal to it up to round-off.
    ``orthonormalize`` (off by default) first removes any residual ``M`` component from the new
    directions and re-orthonormalises them with a QR, which keeps the old columns bit-exact.
    """
    if directions.shape[1] == 0:
        return history
    if orthonormalize:
        directions = deflate(directions, history)
        directions, _ = torch.linalg.qr(directions, mode="reduced")
    return torch.cat([history, directions.to(history.dtype)], dim=1)
