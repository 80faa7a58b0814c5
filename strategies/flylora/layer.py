"""The FlyLoRA layer: a frozen sparse random down-projection acting as an implicit router.

FlyLoRA (NeurIPS 2025) and the official ``gfyddha/FlyLoRA`` ``flylora.py``:

* ``A`` (``r × d_in``) is frozen, sparse and random: each row has ``p = max(1, ⌊ρ·d_in⌋)``
  nonzeros at random columns, drawn from ``N(0, 1/r²)``; ρ = k/r by default;
* ``B`` (``d_out × r``) is trainable and starts at zero; the scaling is ``α/r`` (α = 2r);
* per token, the k ranks with the largest ``|A x + d|`` are active (magnitude, not sign);
* ``d`` (``[r]``) is a non-trainable load-balancing bias, updated after every optimizer step
  by ``d ← d + u · sign(mean_i c_i − c_i)`` with ``c_i`` the tokens rank ``i`` served (u = 1e-3);
* ``y = W0 x + b + (α/r) · B (mask ⊙ A x)``.

The computation is one call of the shared rank-gated operation
(:func:`clbench.kernels.rank_gated_lora` with a :class:`~clbench.kernels.TopKMagnitudeGate`):
the frozen ``A`` goes in as the "trainable" slice with ``requires_grad=False``, so only ``B``
gets a gradient, and the op's ``usage`` buffer counts the ranks each token selected.
"""

from __future__ import annotations

import torch
from torch import nn

from clbench.api.adapters import AdapterLinear
from clbench.kernels import TopKMagnitudeGate, rank_gated_lora


def sparse_random_projection(rank: int, in_features: int, density: float, generator: torch.Generator) -> torch.Tensor:
    """FlyLoRA's frozen ``A``: each row has ``max(1, int(density·d_in))`` entries ~ ``N(0, 1/r²)``.

    Args:
        rank: r, the number of rows.
        in_features: d_in, the number of columns.
        density: ρ, the fraction of nonzeros per row.
        generator: the random source (seeded by the caller, so runs are reproducible).
    """
    nonzeros = max(1, int(in_features * density))
    a = torch.zeros(rank, in_features)
    for row in range(rank):
        columns = torch.randperm(in_features, generator=generator)[:nonzeros]
        a[row, columns] = torch.randn(nonzeros, generator=generator) / rank
    return a


class FlyLoRALinear(AdapterLinear):
    """A frozen linear layer plus a FlyLoRA adapter.

    Args:
        base: the wrapped layer (frozen).
        rank: r, total ranks (experts).
        k: ranks active per token.
        alpha: scaling numerator (``None`` = 2r); the update is scaled by ``alpha / rank``.
        density: ρ, nonzeros per row of A as a fraction of d_in (``None`` = k / r).
        bias_lr: u, the step of the load-balancing bias update.
        generator: random source for A.

    Attributes:
        A: the frozen sparse projection ``[r, d_in]`` (buffer).
        B: the trainable up-projection ``[d_out, r]``.
        routing_bias: d, the load-balancing bias ``[r]`` (buffer, not trained by gradients).
        usage: per-rank token counts since the last bias update (buffer, not saved).
    """

    A: torch.Tensor
    routing_bias: torch.Tensor
    usage: torch.Tensor

    def __init__(self, base: nn.Linear, rank: int, k: int, alpha: float | None, density: float | None, bias_lr: float,
                 generator: torch.Generator) -> None:
        if not 1 <= k <= rank:
            raise ValueError(f"FlyLoRA needs 1 <= k <= rank, got k={k}, rank={rank}")
        super().__init__(base)  # holds the frozen layer as ``base``
        self.rank = rank
        self.k = k
        self.alpha = 2.0 * rank if alpha is None else float(alpha)
        self.scaling = self.alpha / rank
        self.density = k / rank if density is None else float(density)
        self.bias_lr = bias_lr
        device, dtype = base.weight.device, base.weight.dtype
        self.register_buffer("A", sparse_random_projection(rank, base.in_features, self.density, generator).to(device, dtype))
        self.B = nn.Parameter(torch.zeros(base.out_features, rank, device=device, dtype=dtype))
        self.register_buffer("routing_bias", torch.zeros(rank, device=device, dtype=dtype))
        self.register_buffer("usage", torch.zeros(rank, device=device, dtype=torch.float64), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = TopKMagnitudeGate(self.k, bias=self.routing_bias)
        return rank_gated_lora(x, self.base.weight, self.base.bias, None, None, self.A, self.B, gate,
                               train_scale=self.scaling, usage=self.usage if self.training else None)

    @torch.no_grad()
    def update_routing_bias_(self) -> torch.Tensor:
        """Apply ``d ← d + u · sign(mean(c) − c)`` with the counts since the last call; reset them.

        Returns:
            The counts used (``[r]``), for telemetry.
        """
        counts = self.usage.clone()
        if counts.sum() > 0:
            self.routing_bias.add_(self.bias_lr * torch.sign(counts.mean() - counts).to(self.routing_bias.dtype))
        self.usage.zero_()
        return counts
