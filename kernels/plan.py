"""Argument normalisation shared by the fast paths: one :class:`GatePlan` per call.

The fast paths (CPU and Triton) do not interpret gate objects directly; they read a small plan
that says which routing rule to apply and carries the gate's tensors. Gates the fast paths do not
know (for instance a gate class added later) get ``plan = None`` and the dispatcher uses the
reference, so a new gate kind works everywhere before anyone writes a fast path for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import torch

from clbench.kernels.gates import DenseGate, Gate, RankMaskGate, StaticGate, TopKMagnitudeGate, TopKSoftmaxGate


class GateKind(IntEnum):
    """Routing rules the fast paths implement (the numbers are the Triton ``GATE`` constexpr)."""

    TOPK_SOFTMAX = 0  # MoRA / SMoRA-style signed normalised top-k + softmax(τ), optional δ
    TOPK_MAGNITUDE = 1  # FlyLoRA: top-k of |z + bias|, gate 1
    STATIC = 2  # CoDyRA: one weight per rank, same for all tokens (may be trainable)
    PER_TOKEN = 3  # per-token gate values [M, R]: a rank mask, or caller-given values (DenseGate)


@dataclass(frozen=True)
class GatePlan:
    """How a fast path must gate, derived from a gate description for ``R`` ranks and ``M`` tokens.

    Attributes:
        kind: the routing rule.
        k: ranks kept per token (top-k kinds; clamped to ``[1, R]``).
        temperature: softmax τ (TOPK_SOFTMAX).
        threshold: δ or ``None`` (TOPK_SOFTMAX).
        eps: floor on the row norm (TOPK_SOFTMAX).
        vector: ``[R]`` static weights (STATIC; 0/1 masks are STATIC too) or magnitude bias, else ``None``.
        matrix: ``[M, R]`` per-token gate values (PER_TOKEN), else ``None``.
        tensor_requires_grad: whether the STATIC weights or PER_TOKEN values want a gradient.
    """

    kind: GateKind
    k: int = 0
    temperature: float = 1.0
    threshold: float | None = None
    eps: float = 1e-12
    vector: torch.Tensor | None = None
    matrix: torch.Tensor | None = None
    tensor_requires_grad: bool = False

    @property
    def gate_tensor(self) -> torch.Tensor | None:
        """The gate tensor that must receive a gradient (static weights or per-token values), if any."""
        if not self.tensor_requires_grad:
            return None
        return self.vector if self.kind == GateKind.STATIC else self.matrix


def plan_gate(gate: Gate, num_ranks: int, num_tokens: int) -> GatePlan | None:
    """The fast-path plan for ``gate``, or ``None`` when only the reference handles it.

    Raises:
        ValueError: when a gate tensor's shape does not match the bank (``R``) or the tokens (``M``).
    """
    if isinstance(gate, TopKSoftmaxGate):
        return GatePlan(GateKind.TOPK_SOFTMAX, k=min(gate.k, num_ranks), temperature=float(gate.temperature),
                        threshold=None if gate.threshold is None else float(gate.threshold), eps=float(gate.eps))
    if isinstance(gate, TopKMagnitudeGate):
        if gate.bias is not None:
            _check_vector(gate.bias, num_ranks, "TopKMagnitudeGate.bias")
        return GatePlan(GateKind.TOPK_MAGNITUDE, k=min(gate.k, num_ranks),
                        vector=None if gate.bias is None else gate.bias.detach())
    if isinstance(gate, StaticGate):
        _check_vector(gate.weights, num_ranks, "StaticGate.weights")
        return GatePlan(GateKind.STATIC, vector=gate.weights, tensor_requires_grad=gate.weights.requires_grad)
    if isinstance(gate, RankMaskGate):
        mask = gate.mask.detach()
        if mask.dim() == 1:
            _check_vector(mask, num_ranks, "RankMaskGate.mask")
            return GatePlan(GateKind.STATIC, vector=mask)
        if mask.dim() == 2 and mask.shape == (num_tokens, num_ranks):
            return GatePlan(GateKind.PER_TOKEN, matrix=mask)
        raise ValueError(f"RankMaskGate.mask must be [R]={num_ranks} or [M, R]=[{num_tokens}, {num_ranks}], "
                         f"got {list(mask.shape)}")
    if isinstance(gate, DenseGate):
        if gate.values.numel() != num_tokens * num_ranks or gate.values.shape[-1] != num_ranks:
            raise ValueError(f"DenseGate.values must hold [M, R]=[{num_tokens}, {num_ranks}] values, "
                             f"got {list(gate.values.shape)}")
        return GatePlan(GateKind.PER_TOKEN, matrix=gate.values.reshape(num_tokens, num_ranks),
                        tensor_requires_grad=gate.values.requires_grad)
    return None


def _check_vector(vector: torch.Tensor, num_ranks: int, what: str) -> None:
    if vector.shape != (num_ranks,):
        raise ValueError(f"{what} must have shape [{num_ranks}] (one value per rank), got {list(vector.shape)}")


def join_banks(a_frozen: torch.Tensor | None, b_frozen: torch.Tensor | None, a_train: torch.Tensor,
               b_train: torch.Tensor, train_scale: float) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Detached ``A_all`` (``[R, d_in]``), ``B_all`` (``[d_out, R]``, trainable slice scaled) and ``R_frozen``.

    The banks are small (``R × d``) next to the activations, so one concatenation per call is cheaper
    than carrying two pointers through every GEMM.
    """
    a_t = a_train.detach()
    b_t = b_train.detach() * train_scale if train_scale != 1.0 else b_train.detach()
    if a_frozen is None or a_frozen.shape[0] == 0:
        return a_t, b_t, 0
    if b_frozen is None:
        raise ValueError("a_frozen is given but b_frozen is None")
    return torch.cat([a_frozen.detach(), a_t], dim=0), torch.cat([b_frozen.detach(), b_t], dim=1), a_frozen.shape[0]
