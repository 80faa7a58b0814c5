"""Rank-gated LoRA operation (imported as ``clbench.kernels``; imports nothing else from clbench).

``rank_gated_lora(x, weight, bias, a_frozen, b_frozen, a_train, b_train, gate, *, train_scale=1.0,
usage=None)`` computes ``y = x W0ᵀ + b + (g ⊙ z) Bᵀ`` with ``z = x Aᵀ`` over a bank of frozen ranks
followed by trainable ranks, where the gate ``g`` is one of :mod:`clbench.kernels.gates`. It is the
one operation MoRA, SMoRA, FlyLoRA and CoDyRA share.

Three paths sit behind it (see ``docs/kernels.md``): the readable reference
(:mod:`clbench.kernels.reference`), a torch fast path with a hand-written backward
(:mod:`clbench.kernels.cpu`) and Triton kernels for CUDA (:mod:`clbench.kernels.triton_path`,
imported only when a CUDA tensor arrives). ``CLBENCH_KERNELS=reference|cpu|triton`` forces one.
"""

from clbench.kernels.gates import DenseGate, Gate, RankMaskGate, StaticGate, TopKMagnitudeGate, TopKSoftmaxGate
from clbench.kernels.dispatch import BACKENDS, rank_gated_lora, resolve_backend
from clbench.kernels.reference import gate_values, rank_gated_lora_reference

__all__ = [
    "BACKENDS",
    "DenseGate",
    "Gate",
    "RankMaskGate",
    "StaticGate",
    "TopKMagnitudeGate",
    "TopKSoftmaxGate",
    "gate_values",
    "rank_gated_lora",
    "rank_gated_lora_reference",
    "resolve_backend",
]
