"""Gate descriptions for the rank-gated LoRA operation.

A gate turns the rank responses ``z = x Aᵀ`` of each token (``[M, R]``) into gate values ``g``
(``[M, R]``, most entries zero) so that the adapter output is ``(g ⊙ z) Bᵀ``. The gate objects
are plain descriptions (hyperparameters plus, for static gates, tensors); every path of the
operation (reference, CPU, Triton) interprets them identically.

Rank indices run over the frozen ranks first and the trainable ranks after them, so
``R = R_frozen + R_train``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TopKSoftmaxGate:
    """MoRA / MoRAM routing: signed top-k of L2-normalised responses, softmax at temperature τ.

    Per token: ``s = z / max(‖z‖₂, eps)``; keep the ``k`` largest *signed* ``s``; ``g = softmax(s_I / τ)``
    on the kept entries (zero elsewhere); when ``threshold`` is set (MoRA's δ, inference only),
    ``g_i ← g_i · 1[s_i ≥ δ]`` with no renormalisation.

    Attributes:
        k: ranks kept per token (clamped to ``[1, R]`` by the operation; MoRA's ``max(topk, 2)``
            floor is the caller's business).
        temperature: softmax temperature τ (> 0).
        threshold: δ, or ``None`` for no threshold (training).
        eps: added floor on the norm (``F.normalize`` uses 1e-12; MoRA's LLM code 1e-8).
    """

    k: int
    temperature: float
    threshold: float | None = None
    eps: float = 1e-12

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"top-k gate needs k >= 1, got {self.k}")
        if not self.temperature > 0:
            raise ValueError(f"softmax temperature must be > 0, got {self.temperature}")


@dataclass(frozen=True)
class TopKMagnitudeGate:
    """FlyLoRA routing: top-k of ``|z + bias|`` per token, gate value 1 on the kept ranks.

    Attributes:
        k: ranks kept per token.
        bias: optional non-trainable ``[R]`` load-balancing bias added to the score only.
    """

    k: int
    bias: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"top-k gate needs k >= 1, got {self.k}")


@dataclass(frozen=True)
class StaticGate:
    """An input-independent per-rank gate ``g = weights`` (CoDyRA's importance vector ``w``).

    ``weights`` (``[R]``) may require grad; the operation then returns its gradient.
    """

    weights: torch.Tensor


@dataclass(frozen=True)
class RankMaskGate:
    """A 0/1 rank mask: ``[R]`` for the whole batch or ``[M, R]`` per token (per-task masks)."""

    mask: torch.Tensor


@dataclass(frozen=True)
class DenseGate:
    """Gate values given per token by the caller: ``g = values`` (``[M, R]``).

    For routers computed outside the operation, e.g. SMoRA's normalised top-k of a learned
    ``sigmoid(x W_g)`` router. ``values`` may require grad; the operation then returns its
    gradient ``∂L/∂g = (∂L/∂y B) ⊙ z`` (so the router trains).
    """

    values: torch.Tensor


Gate = TopKSoftmaxGate | TopKMagnitudeGate | StaticGate | RankMaskGate | DenseGate
