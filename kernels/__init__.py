"""Rank-gated LoRA operation (imported as ``clbench.kernels``; imports nothing else from clbench).

``rank_gated_lora(x, weight, bias, a_frozen, b_frozen, a_train, b_train, gate, *, train_scale=1.0,
usage=None)`` computes ``y = x W0ᵀ + b + (g ⊙ z) Bᵀ`` with ``z = x Aᵀ`` over a bank of frozen ranks
followed by trainable ranks, where the gate ``g`` is one of :mod:`clbench.kernels.gates`. It is the
one operation MoRA, SMoRA, FlyLoRA and CoDyRA share.
"""

from clbench.kernels.gates import Gate, RankMaskGate, StaticGate, TopKMagnitudeGate, TopKSoftmaxGate
from clbench.kernels.reference import gate_values, rank_gated_lora_reference

rank_gated_lora = rank_gated_lora_reference

__all__ = [
    "Gate",
    "RankMaskGate",
    "StaticGate",
    "TopKMagnitudeGate",
    "TopKSoftmaxGate",
    "gate_values",
    "rank_gated_lora",
    "rank_gated_lora_reference",
]
