"""The SMoRA layer: every rank of a LoRA is an expert chosen per token by a learned router.

arXiv 2501.15103 and the official ``StyxXuan/smora`` (``packages/peft/src/peft/tuners/srmole/
layer.py``), per token ``x`` (after adapter dropout):

* router scores ``s = sigmoid(x W_gᵀ)`` (``W_g``: ``[r/p, d_in]``, repeated ``p`` times when the
  ranks are partitioned into groups of ``p``), plus a non-trainable per-rank bias ``b``;
* keep the top-k of ``s + b``; the gate of a kept rank is its (biased) score divided by the sum
  of the kept scores, times k, so the gates sum to k; other ranks get 0;
* ``y = W0 x + bias + (α/k) · B (g ⊙ A x)``;
* after every optimizer step, ``b ← b + u · sign(mean_i c_i − c_i)`` with ``c_i`` the tokens
  that selected rank ``i`` (u = 1e-5): load balancing without an auxiliary loss.

The adapter part is one call of the shared rank-gated operation with a
:class:`~clbench.kernels.DenseGate` (the router runs outside the op, and the gate values
carry the router's gradient). Dropout applies to the adapter's input only; since the op takes
one input for both the base layer and the adapter, training with dropout calls it on the
dropped input and adds the base layer's response to the difference ``x − dropout(x)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from clbench.api.adapters import AdapterLinear
from clbench.kernels import DenseGate, rank_gated_lora


def smora_gates(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised top-k gates from biased router scores (``[M, R]``).

    Returns:
        ``(gates, indices)``: gates ``[M, R]`` (kept scores / their sum · k, zero elsewhere) and
        the kept ranks ``[M, k]``.
    """
    kept, indices = scores.topk(k, dim=-1)
    sparse = torch.zeros_like(scores).scatter(-1, indices, kept)
    return sparse / sparse.sum(dim=-1, keepdim=True) * k, indices


class SMoRALinear(AdapterLinear):
    """A frozen linear layer plus a single-rank mixture-of-experts LoRA.

    Args:
        base: the wrapped layer (frozen).
        rank: r, number of rank-1 experts.
        k: experts active per token.
        alpha: scaling numerator; the update is scaled by ``alpha / k``.
        dropout: dropout on the adapter's (and router's) input.
        partition: p, ranks sharing one router output (r must be divisible by p).
        bias_lr: u, step of the load-balancing bias update.

    Attributes:
        lora_A: ``[r, d_in]`` (Kaiming-uniform), lora_B: ``[d_out, r]`` (zeros),
        router: ``[r/p, d_in]`` (``nn.Linear`` default init, no bias), all trainable.
        routing_bias: b, ``[r]`` buffer; usage: per-rank selection counts since the last update.
    """

    routing_bias: torch.Tensor
    usage: torch.Tensor

    def __init__(self, base: nn.Linear, rank: int, k: int, alpha: float, dropout: float = 0.0, partition: int = 1,
                 bias_lr: float = 1e-5) -> None:
        if not 1 <= k <= rank:
            raise ValueError(f"SMoRA needs 1 <= k <= rank, got k={k}, rank={rank}")
        if partition < 1 or rank % partition:
            raise ValueError(f"rank {rank} must be divisible by partition {partition}")
        super().__init__(base)  # holds the frozen layer as ``base``
        self.rank = rank
        self.k = k
        self.scaling = alpha / k
        self.partition = partition
        self.bias_lr = bias_lr
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, **factory))
        self.router = nn.Parameter(torch.empty(rank // partition, base.in_features, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.router, a=math.sqrt(5))  # nn.Linear's default, as the official router
        self.register_buffer("routing_bias", torch.zeros(rank, **factory))
        self.register_buffer("usage", torch.zeros(rank, device=base.weight.device, dtype=torch.float64), persistent=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gates ``[M, r]`` and kept ranks ``[M, k]`` for adapter inputs ``x`` (``[M, d_in]``)."""
        scores = torch.sigmoid(x @ self.router.t())
        if self.partition > 1:
            scores = scores.repeat_interleave(self.partition, dim=-1)
        return smora_gates(scores + self.routing_bias.to(scores.dtype), self.k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        dropping = self.training and isinstance(self.dropout, nn.Dropout)
        dropped = self.dropout(flat) if dropping else flat
        gates, indices = self.route(dropped)
        if self.training:
            with torch.no_grad():
                self.usage += torch.bincount(indices.reshape(-1), minlength=self.rank).to(self.usage.dtype)
        y = rank_gated_lora(dropped, self.base.weight, self.base.bias, None, None, self.lora_A, self.lora_B, DenseGate(gates),
                            train_scale=self.scaling)
        if dropping:
            # The op applied the base layer to the dropped input; correct it to the clean one.
            y = y + F.linear(flat - dropped, self.base.weight)
        return y.reshape(*shape[:-1], y.shape[-1])

    @torch.no_grad()
    def update_routing_bias_(self) -> torch.Tensor:
        """Apply ``b ← b + u · sign(mean(c) − c)`` with the counts since the last call; reset them."""
        counts = self.usage.clone()
        if counts.sum() > 0:
            self.routing_bias.add_(self.bias_lr * torch.sign(counts.mean() - counts).to(self.routing_bias.dtype))
        self.usage.zero_()
        return counts
