"""CoDyRA's layer: LoRA with a per-rank importance gate, proximal sparsification, prune and merge.

``y = W x + b + B diag(w) A x`` (arXiv 2412.01004; official code ``Artificer-AI-Lab/CoDyRA``, ``loralib/codyra.py``) with ``A`` (r × d_in, Kaiming-uniform,
a=√5), ``B`` (d_out × r, zeros) and the gate ``w`` (r, drawn from N(0, 1) as the official code
does, so gates may be negative; signs are absorbed into B). Scaling is 1 and there is no dropout.
The forward pass goes through the shared rank-gated op with a static gate
(:class:`clbench.kernels.StaticGate`), which also returns the gradient of ``w``.

Rank minimisation is not a loss term: after optimizer steps the strategy calls
:meth:`CoDyRALinear.prox_`, which shrinks ``w`` towards 0: by default with the official code's
three in-place masks (:func:`official_threshold_`), or with the paper's written soft threshold
(:func:`soft_threshold_`, §2.2). At a task boundary ranks whose
gate is exactly zero are dropped, ``B diag(w) A`` is added into the frozen weight and the plain
``nn.Linear`` is put back (:func:`merge_codyra`), so the deployed model is the original
architecture with no inference overhead (§2.3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from clbench.kernels import StaticGate, rank_gated_lora
from clbench.api.adapters import AdapterLinear, replace_submodule, wrap_layers

PROX_RULES = ("soft", "official")


def soft_threshold_(weights: torch.Tensor, kappa: float) -> torch.Tensor:
    """In place ``w ← sign(w) · max(|w| − κ, 0)`` (the proximal operator of ``κ‖w‖₁``).

    Args:
        weights: the gate values (modified in place).
        kappa: threshold κ ≥ 0, applied as is (not scaled by a learning rate).

    Returns:
        ``weights``.
    """
    if kappa < 0:
        raise ValueError(f"threshold must be >= 0, got {kappa}")
    with torch.no_grad():
        shrunk = (weights.abs() - kappa).clamp_min_(0.0)
        weights.copy_(torch.sign(weights) * shrunk)
    return weights


def official_threshold_(weights: torch.Tensor, kappa: float) -> torch.Tensor:
    """The official code's three sequential in-place masks (the default prox).

    The official loop subtracts κ from entries above κ, adds κ to entries below −κ, and *then*
    zeroes every entry whose new magnitude is below κ. The last mask sees the already-shrunk
    values, so entries with ``κ < |w| < 2κ`` end at zero instead of ``|w| − κ``: a soft threshold
    with a ``2κ`` dead zone. Entries with ``|w| = κ`` exactly are left unchanged (every mask is
    strict). The paper's written proximal step is :func:`soft_threshold_`.

    Returns:
        ``weights``.
    """
    if kappa < 0:
        raise ValueError(f"threshold must be >= 0, got {kappa}")
    with torch.no_grad():
        weights[weights > kappa] -= kappa
        weights[weights < -kappa] += kappa
        weights[weights.abs() < kappa] = 0.0
    return weights


@dataclass(frozen=True)
class MergedUpdate:
    """What one module's task-boundary merge did.

    Attributes:
        kept_rank: ranks whose gate was nonzero (the module's effective rank for the task).
        scaled_b: ``B diag(w)`` over the kept ranks (``d_out × kept``), detached, float32, CPU.
        a: ``A`` over the kept ranks (``kept × d_in``), detached, float32, CPU.
        delta_fro: ``‖B diag(w) A‖_F``, the Frobenius norm of the merged update.
    """

    kept_rank: int
    scaled_b: torch.Tensor
    a: torch.Tensor
    delta_fro: float


class CoDyRALinear(AdapterLinear):
    """A frozen linear layer plus a rank-gated LoRA update ``B diag(w) A``.

    Args:
        base: the wrapped layer; its parameters are frozen.
        rank: initial adapter rank r (> 0).
    """

    def __init__(self, base: nn.Linear, rank: int) -> None:
        if rank < 1:
            raise ValueError(f"CoDyRA rank must be >= 1, got {rank}")
        super().__init__(base)  # holds the frozen layer as ``base``
        # Half-precision bases keep float32 adapters: a bf16 gate could not resolve the prox step
        # (κ = 0.005 is below bf16's resolution near 1) nor small AdamW updates.
        dtype = torch.float32 if base.weight.dtype in (torch.float16, torch.bfloat16) else base.weight.dtype
        device = base.weight.device
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.empty(base.out_features, rank, device=device, dtype=dtype))
        self.gate = nn.Parameter(torch.empty(rank, device=device, dtype=dtype))
        self.reset_adapter()

    @property
    def weight(self) -> torch.Tensor:
        """The frozen base weight (code that reads ``layer.weight``, e.g. for its dtype, still works)."""
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        """The frozen base bias."""
        return self.base.bias

    @property
    def rank(self) -> int:
        """Current number of ranks (r, or fewer after :meth:`prune_zero_ranks_`)."""
        return int(self.gate.shape[0])

    @torch.no_grad()
    def reset_adapter(self) -> None:
        """Fresh adapter at the current rank: Kaiming-uniform A, zero B, N(0, 1) gate."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)
        self.gate.normal_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, w = self.lora_A, self.lora_B, self.gate
        dtype = self.base.weight.dtype
        if a.dtype != dtype:  # float32 adapters on a half-precision base: compute in the base's dtype
            a, b, w = a.to(dtype), b.to(dtype), w.to(dtype)
        return rank_gated_lora(x, self.base.weight, self.base.bias, None, None, a, b, StaticGate(w))

    def effective_rank(self) -> int:
        """Ranks whose gate is nonzero (the rank of the update is at most this)."""
        return int(torch.count_nonzero(self.gate.detach()))

    def delta_weight(self) -> torch.Tensor:
        """The update ``B diag(w) A`` (d_out × d_in)."""
        return (self.lora_B * self.gate) @ self.lora_A

    def prox_(self, kappa: float, rule: str = "official") -> None:
        """Shrink the gate after an optimizer step (``official``: the code's masks; ``soft``: the paper's formula)."""
        if rule == "soft":
            soft_threshold_(self.gate.data, kappa)
        elif rule == "official":
            official_threshold_(self.gate.data, kappa)
        else:
            raise ValueError(f"unknown prox rule {rule!r}; valid: {', '.join(PROX_RULES)}")

    @torch.no_grad()
    def prune_zero_ranks_(self) -> int:
        """Drop the ranks whose gate is exactly zero (output unchanged); returns the ranks kept.

        The factors are replaced by new parameters, so an optimizer built before the call no
        longer updates them: call it at a task boundary only.
        """
        keep = self.gate.detach() != 0
        self.lora_A = nn.Parameter(self.lora_A.detach()[keep].clone(), requires_grad=self.lora_A.requires_grad)
        self.lora_B = nn.Parameter(self.lora_B.detach()[:, keep].clone(), requires_grad=self.lora_B.requires_grad)
        self.gate = nn.Parameter(self.gate.detach()[keep].clone(), requires_grad=self.gate.requires_grad)
        return self.rank

    @torch.no_grad()
    def merge_(self) -> MergedUpdate:
        """Prune zero ranks, add ``B diag(w) A`` into the base weight; the adapter is spent.

        The update is formed in float32 (whatever the base dtype) and added once. After the call
        the base layer alone computes what this layer computed before it.
        """
        kept = self.prune_zero_ranks_()
        scaled_b = self.lora_B.detach().float() * self.gate.detach().float()
        a = self.lora_A.detach().float()
        delta = scaled_b @ a
        self.add_to_base_weight_(delta)
        return MergedUpdate(kept_rank=kept, scaled_b=scaled_b.cpu().clone(), a=a.cpu().clone(), delta_fro=float(delta.norm()))


def apply_codyra(root: nn.Module, layers: dict[str, nn.Linear], rank: int) -> dict[str, CoDyRALinear]:
    """Wrap each named linear layer of ``root`` in a fresh :class:`CoDyRALinear`, in place.

    Adapters draw their initial values from torch's global generator, in the order of ``layers``.
    """
    return wrap_layers(root, layers, lambda _, layer: CoDyRALinear(layer, rank))


def merge_codyra(root: nn.Module, adapters: dict[str, CoDyRALinear]) -> dict[str, MergedUpdate]:
    """Merge every adapter into its base weight and put the plain base layers back.

    Returns:
        Per module name, what its merge did (kept rank, merged factors, ‖ΔW‖_F).
    """
    merged = {}
    for name, adapter in adapters.items():
        merged[name] = adapter.merge_()
        replace_submodule(root, name, adapter.base)
    return merged
