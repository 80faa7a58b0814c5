"""Subspace arithmetic CoSO needs per weight: deflation, top singular pairs, energy selection.

Every function works on one gradient-shaped matrix ``G`` (m × n, m = d_out): CoSO always works on
the *left* (output / column) side of the gradient, whatever its shape (``quinn-ch/CoSO`` ``coso/coso_projector.py``), so the
bases here are m × k matrices with orthonormal columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clbench.hardware import bf16_is_native

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
    refresh. ``randomized`` is :func:`randomized_svd` from a Gaussian start with ``power_iters``
    subspace iterations and ``oversample`` extra columns: it approximates the leading pairs and
    costs O(m·n·(k+p)) instead of a full SVD.

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
        found = randomized_svd(matrix.unsqueeze(0), k, oversample, power_iters)
        return found.u[0, :, :k], found.sigma[0, :k]
    raise ValueError(f"unknown SVD method {method!r}; valid: {', '.join(SVD_METHODS)}")


@dataclass
class RangeSVD:
    """The SVD of ``Q Qᵀ G`` for a batch of gradients (``L`` layers of one shape, m × n), q columns.

    Attributes:
        u: ``[L, m, q]`` left singular vectors (orthonormal columns), by descending value.
        sigma: ``[L, q]`` singular values, descending.
        rotation: ``[L, q, q]`` the orthogonal ``E`` with ``u = Q E``, so ``uᵀ G = Eᵀ b``.
        b: ``[L, q, n]``, ``Qᵀ G``.
        next_test: ``[L, n, q]``, ``bᵀ = Gᵀ Q``, whose columns span the estimate of G's leading
            right singular vectors: the warm start of the next refresh.
    """

    u: torch.Tensor
    sigma: torch.Tensor
    rotation: torch.Tensor
    b: torch.Tensor
    next_test: torch.Tensor

    def projected(self, rank: int) -> torch.Tensor:
        """``u[:, :, :rank]ᵀ G`` (``[L, rank, n]``) from the small factors, without touching G again."""
        return self.rotation[:, :, :rank].transpose(1, 2) @ self.b


def fast_sketch_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where its matrix products are native (CUDA with bf16, CPUs with AVX512-BF16 or AMX), else float32.

    The range finder's products only have to find the subspace; bf16 perturbs it by ~4e-3, which
    moves the Rayleigh–Ritz values (taken in fp32 from ``Qᵀ G``) only at second order, ~1e-5.
    Measured on an AVX512-BF16 CPU: a 768×768 × 768×131 product in 0.39 ms (bf16) vs 2.0 ms
    (fp32). Where bf16 is emulated it is far slower (80 ms vs 2.7 ms on an AVX2 CPU), hence fp32 there.
    """
    return torch.bfloat16 if bf16_is_native(device) else torch.float32


def randomized_svd(grads: torch.Tensor, k: int, oversample: int, power_iters: int, start: torch.Tensor | None = None,
                   generator: torch.Generator | None = None, sketch_dtype: torch.dtype | None = None,
                   histories: list[torch.Tensor | None] | None = None) -> RangeSVD:
    """Randomized SVD (Halko, Martinsson & Tropp 2011, Alg. 4.4 + 5.1) of a batch ``grads`` (``[L, m, n]``).

    The range finder takes ``q = min(k + oversample, m, n)`` columns ``Y = G Ω``, runs
    ``power_iters`` subspace iterations (re-orthonormalised each half-step), orthonormalises
    ``Q = qr(Y)`` and forms ``B = Qᵀ G`` (q × n). The small SVD of ``B`` is taken from the
    eigendecomposition of ``B Bᵀ`` (q × q): its vectors are orthonormal to working precision and
    the squared values carry an absolute error of order ``q · eps · σ₁²``, so values above ~1e-2 σ₁
    keep fp32-level relative accuracy (the projector's; measured 3e-7 on the top 50 at 768×768)
    and the smaller ones, which only feed the sketch, an error far below their energy's share.
    ``Bᵀ`` (whose columns span the right vectors) warm-starts the next call.

    Args:
        grads: ``[L, m, n]`` gradients of layers of one shape.
        k: pairs wanted (the range finder adds ``oversample``).
        oversample: extra columns, p.
        power_iters: subspace iterations after ``Y = G Ω``.
        start: ``[L, n, q]`` test matrix Ω — a previous call's ``next_test`` (a warm start, as in
            PowerSGD: consecutive gradients share their leading subspace, so the previous right
            vectors are a far better start than a Gaussian); ``None`` draws one Gaussian n × q
            matrix for every layer of the batch.
        generator: the generator of the Gaussian start (on ``grads``' device).
        sketch_dtype: dtype of the range finder's products ``G Ω`` and ``Gᵀ Q`` (``None``: the
            gradients'); ``B = Qᵀ G`` and everything after it stay in the gradients' dtype.
        histories: per layer, the orthonormal basis ``M`` the gradient was deflated against (or
            ``None``). Rounding ``G − M MᵀG`` to a low-precision sketch puts ~bf16-sized components
            along ``M`` back into the range, and through ``Q`` into the projector; the range is
            deflated against ``M`` again in the gradients' dtype, so ``Mᵀ P`` stays at round-off.
    """
    batch, m, n = grads.shape
    q = min(k + oversample, m, n)
    if start is None or start.shape != (batch, n, q):
        # One draw shared by the batch: each layer then sees the same Ω whatever it is batched with.
        start = torch.randn(n, q, generator=generator, device=grads.device, dtype=grads.dtype).expand(batch, n, q)
    low = grads if sketch_dtype in (None, grads.dtype) else grads.to(sketch_dtype)
    y = (low @ start.to(low.dtype)).to(grads.dtype)
    for _ in range(power_iters):
        z = (low.transpose(1, 2) @ torch.linalg.qr(y).Q.to(low.dtype)).to(grads.dtype)
        y = (low @ torch.linalg.qr(z).Q.to(low.dtype)).to(grads.dtype)
    if low is not grads:
        for i, history in enumerate(histories or ()):
            if history is not None and history.shape[1]:
                y[i] -= history @ (history.t() @ y[i])
    q_basis = torch.linalg.qr(y).Q
    b = q_basis.transpose(1, 2) @ grads
    eigenvalues, vectors = torch.linalg.eigh(b @ b.transpose(1, 2))
    sigma = eigenvalues.flip(-1).clamp_min(0.0).sqrt()
    rotation = vectors.flip(-1)
    # bᵀ = Gᵀ Q spans the Ritz right vectors (bᵀ E Σ⁻¹): the same subspace, so the same next range,
    # without a product or a division by small σ.
    return RangeSVD(u=q_basis @ rotation, sigma=sigma, rotation=rotation, b=b, next_test=b.transpose(1, 2))


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
