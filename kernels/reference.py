"""The readable PyTorch reference of the rank-gated LoRA operation (plain autograd).

Every other path (the CPU fast path, the Triton kernels) is tested against this file, outputs
and gradients. It favours clarity over speed: dense ``z``, dense gate, concatenated banks.

    y = x W0ᵀ + b + (g ⊙ z) Bᵀ,    z = x Aᵀ,    g = gate(z)

with ``A = [A_frozen; A_train]`` and ``B = [B_frozen, s · B_train]`` (``s`` = ``train_scale``).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from clbench.kernels.gates import DenseGate, Gate, RankMaskGate, StaticGate, TopKMagnitudeGate, TopKSoftmaxGate


def topk_softmax_gate(z: torch.Tensor, gate: TopKSoftmaxGate) -> torch.Tensor:
    """MoRA's gate values for responses ``z`` (``[M, R]``): see :class:`TopKSoftmaxGate`."""
    k = min(gate.k, z.shape[-1])
    s = z / z.norm(dim=-1, keepdim=True).clamp_min(gate.eps)
    kept, idx = s.topk(k, dim=-1)
    weights = torch.softmax(kept / gate.temperature, dim=-1)
    if gate.threshold is not None:
        weights = weights * (kept >= gate.threshold).to(weights.dtype)
    return torch.zeros_like(z).scatter(-1, idx, weights)


def topk_magnitude_gate(z: torch.Tensor, gate: TopKMagnitudeGate) -> torch.Tensor:
    """FlyLoRA's 0/1 gate: top-k of ``|z + bias|`` per token."""
    k = min(gate.k, z.shape[-1])
    score = z.detach().abs() if gate.bias is None else (z.detach() + gate.bias.to(z.dtype)).abs()
    idx = score.topk(k, dim=-1).indices
    return torch.zeros_like(z).scatter(-1, idx, 1.0)


def gate_values(z: torch.Tensor, gate: Gate) -> torch.Tensor:
    """The gate ``g`` (``[M, R]``) for responses ``z`` (``[M, R]``), differentiable where the gate is."""
    if isinstance(gate, TopKSoftmaxGate):
        return topk_softmax_gate(z, gate)
    if isinstance(gate, TopKMagnitudeGate):
        return topk_magnitude_gate(z, gate)
    if isinstance(gate, StaticGate):
        return gate.weights.to(z.dtype).expand_as(z)
    if isinstance(gate, RankMaskGate):
        return gate.mask.to(z.dtype).expand_as(z)
    if isinstance(gate, DenseGate):
        return gate.values.to(z.dtype).reshape(z.shape)
    raise TypeError(f"unknown gate type {type(gate).__name__}")


def concat_banks(
    a_frozen: torch.Tensor | None,
    b_frozen: torch.Tensor | None,
    a_train: torch.Tensor,
    b_train: torch.Tensor,
    train_scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``A = [A_frozen; A_train]`` (``[R, d_in]``) and ``B = [B_frozen, s·B_train]`` (``[d_out, R]``)."""
    scaled = b_train * train_scale if train_scale != 1.0 else b_train
    if a_frozen is None or a_frozen.shape[0] == 0:
        return a_train, scaled
    assert b_frozen is not None
    return torch.cat([a_frozen, a_train], dim=0), torch.cat([b_frozen, scaled], dim=1)


def rank_gated_lora_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    a_frozen: torch.Tensor | None,
    b_frozen: torch.Tensor | None,
    a_train: torch.Tensor,
    b_train: torch.Tensor,
    gate: Gate,
    *,
    train_scale: float = 1.0,
    usage: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference forward (autograd gives the backward).

    Args:
        x: inputs ``[..., d_in]``.
        weight, bias: the frozen base layer (``[d_out, d_in]``, ``[d_out]`` or ``None``).
        a_frozen, b_frozen: frozen ranks (``[R_f, d_in]``, ``[d_out, R_f]``) or ``None``; they take
            part in gating but receive no gradient.
        a_train, b_train: trainable ranks (``[R_t, d_in]``, ``[d_out, R_t]``).
        gate: how responses become gate values (:mod:`clbench.kernels.gates`).
        train_scale: factor on the trainable ranks' values (LoRA's alpha / r).
        usage: optional ``[R]`` buffer; adds, per rank, the number of tokens whose gate is nonzero.

    Returns:
        ``[..., d_out]`` outputs.
    """
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    a, b = concat_banks(a_frozen, b_frozen, a_train, b_train, train_scale)
    z = x2 @ a.t()
    g = gate_values(z, gate)
    if usage is not None:
        usage.add_((g.detach() != 0).sum(dim=0).to(usage.dtype))
    y = F.linear(x2, weight, bias) + (g * z) @ b.t()
    return y.reshape(*shape[:-1], weight.shape[0])
