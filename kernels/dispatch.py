"""``rank_gated_lora``: one entry point that picks the reference, the CPU fast path or Triton.

Dispatch order: the ``backend=`` keyword, else the ``CLBENCH_KERNELS`` environment variable
(``reference``, ``cpu`` or ``triton``; ``auto`` or unset means automatic), else by device: Triton for
CUDA tensors when Triton imports, the torch fast path otherwise. Gate kinds no fast path knows
(``plan_gate`` returns ``None``) and empty batches always use the reference, so any new gate class
works before it has a fast path.
"""

from __future__ import annotations

import os
from functools import lru_cache

import torch

from clbench.kernels.cpu import CpuRankGatedLora
from clbench.kernels.gates import Gate
from clbench.kernels.plan import plan_gate
from clbench.kernels.reference import rank_gated_lora_reference

BACKENDS = ("auto", "reference", "cpu", "triton")
ENV_VAR = "CLBENCH_KERNELS"


def requested_backend(backend: str | None = None) -> str:
    """The backend asked for by the argument or the environment (``auto`` when neither says).

    Raises:
        ValueError: for a name outside :data:`BACKENDS`.
    """
    name = (backend if backend is not None else os.environ.get(ENV_VAR, "auto")).strip().lower() or "auto"
    if name not in BACKENDS:
        source = "backend=" if backend is not None else f"{ENV_VAR}="
        raise ValueError(f"{source}{name!r} is not a rank-gated LoRA backend; choose one of {', '.join(BACKENDS)}")
    return name


@lru_cache(maxsize=1)
def triton_available() -> bool:
    """Whether Triton imports (it is only imported here, lazily, and only for CUDA tensors)."""
    try:
        import triton  # noqa: F401
    except Exception:  # pragma: no cover - depends on the installation
        return False
    return True


def resolve_backend(x: torch.Tensor, backend: str | None = None) -> str:
    """The backend that will run for inputs on ``x.device`` (``reference``, ``cpu`` or ``triton``)."""
    name = requested_backend(backend)
    if name == "auto":
        return "triton" if x.is_cuda and triton_available() else "cpu"
    return name


def rank_gated_lora(
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
    backend: str | None = None,
) -> torch.Tensor:
    """``y = x W0ᵀ + b + (g ⊙ z) Bᵀ`` with ``z = x Aᵀ``, ``A = [A_frozen; A_train]``, ``B = [B_frozen, s·B_train]``.

    Same semantics on every backend as :func:`clbench.kernels.reference.rank_gated_lora_reference`:
    the frozen bank takes part in gating but never gets a gradient; ``train_scale`` (``s``) scales
    only the trainable ranks' values; ``usage`` (``[R]``) is increased by the number of tokens whose
    gate is nonzero per rank; gradients go to the inputs that require them (``x``, ``weight``,
    ``bias``, ``a_train``, ``b_train``, trainable ``StaticGate.weights`` or ``DenseGate.values``).

    Args:
        x: inputs ``[..., d_in]``.
        weight, bias: base layer ``[d_out, d_in]`` and ``[d_out]`` or ``None``.
        a_frozen, b_frozen: frozen ranks ``[R_f, d_in]`` / ``[d_out, R_f]`` or ``None``.
        a_train, b_train: trainable ranks ``[R_t, d_in]`` / ``[d_out, R_t]``.
        gate: a gate description from :mod:`clbench.kernels.gates`.
        train_scale: factor on the trainable ranks' values.
        usage: optional ``[R]`` per-rank usage counter, updated in place.
        backend: ``reference``, ``cpu``, ``triton`` or ``auto`` (default: ``CLBENCH_KERNELS`` or auto).

    Returns:
        ``[..., d_out]`` outputs.
    """
    name = resolve_backend(x, backend)
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    num_ranks = a_train.shape[0] + (0 if a_frozen is None else a_frozen.shape[0])
    plan = plan_gate(gate, num_ranks, x2.shape[0])
    if name == "reference" or plan is None or x2.shape[0] == 0 or num_ranks == 0:
        return rank_gated_lora_reference(x, weight, bias, a_frozen, b_frozen, a_train, b_train, gate,
                                         train_scale=train_scale, usage=usage)
    if name == "triton":
        from clbench.kernels.triton_path import TritonRankGatedLora

        function = TritonRankGatedLora
    else:
        function = CpuRankGatedLora
    gate_tensor = plan.gate_tensor
    device_type = x2.device.type
    if torch.is_autocast_enabled(device_type):
        # A custom autograd Function is not autocast-aware (its in-place GEMMs would meet bf16
        # activations and fp32 weights): run it in the autocast dtype, as autocast runs a linear
        # layer, with autocast off inside; the casts carry the gradients back to fp32 weights. The
        # gate tensor stays as it is: the kernels read the plan's copy and cast it where they use it.
        dtype = torch.get_autocast_dtype(device_type)
        x2, weight, bias, a_frozen, b_frozen, a_train, b_train = (
            t.to(dtype) if t is not None and t.is_floating_point() else t for t in (x2, weight, bias, a_frozen, b_frozen, a_train, b_train))
        with torch.autocast(device_type=device_type, enabled=False):
            y = function.apply(plan, float(train_scale), usage, x2, weight, bias, a_frozen, b_frozen, a_train, b_train, gate_tensor)
    else:
        y = function.apply(plan, float(train_scale), usage, x2, weight, bias, a_frozen, b_frozen, a_train, b_train, gate_tensor)
    return y.reshape(*shape[:-1], weight.shape[0])
