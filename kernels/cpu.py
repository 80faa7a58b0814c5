"""The CPU fast path: the kernels' math written with a few large torch calls and a hand-written backward.

Forward (design: ``docs/kernels.md``): one GEMM for ``z = x A_allᵀ`` (all ranks: the score needs them), the
row-local gate on the small ``[M, k]`` selection, the gated responses scattered into a zero
``[M, R]`` tensor (no mask multiply over ``[M, R]``), then one in-place ``addmm_`` of
``Gz B_allᵀ`` into the base output, so no ``[M, d_out]`` temporary is written or added. A static
gate with zero entries (a rank mask) drops the unused ranks from both GEMMs instead of masking.

Backward reads ``dy`` for ``U = dy B_all`` and ``dB = dyᵀ Gz``, runs the gate backward on the
``[M, R]`` tensors (the hand-derived backward of MoRAM's gate: value path, softmax Jacobian over the selection, and the dense
normalisation term), then ``dA = dZᵀ x`` and ``dx = dy W0 + dZ A_all`` with ``addmm_``. Only the
inputs that require grad get a gradient; the frozen bank never does.

The same functions run on CUDA tensors (they are plain torch), which is the fallback when Triton
is unavailable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from clbench.kernels.plan import GateKind, GatePlan, join_banks


@dataclass
class Routing:
    """Gate values of one forward, in the form each gate kind needs.

    Top-k kinds: ``idx`` ``[M, k]`` selected ranks, ``p`` ``[M, k]`` gate before the δ threshold,
    ``g`` ``[M, k]`` gate after it, ``z_sel`` ``[M, k]`` selected responses, ``norm`` ``[M, 1]`` row
    norms (softmax kind only). Static kind: ``vector`` ``[R]``. Per-token values: ``matrix`` ``[M, R]``.
    """

    idx: torch.Tensor | None = None
    p: torch.Tensor | None = None
    g: torch.Tensor | None = None
    z_sel: torch.Tensor | None = None
    norm: torch.Tensor | None = None
    vector: torch.Tensor | None = None
    matrix: torch.Tensor | None = None


def route(z: torch.Tensor, plan: GatePlan) -> Routing:
    """Compute the gate for responses ``z`` (``[M, R]``) without building a dense ``[M, R]`` gate."""
    if plan.kind == GateKind.TOPK_SOFTMAX:
        norm = z.norm(dim=1, keepdim=True)
        # z/‖z‖ is a positive rescaling of each row, so the top-k of z is the top-k of the scores.
        z_sel, idx = z.topk(plan.k, dim=1)
        s_sel = z_sel / norm.clamp_min(plan.eps)
        p = torch.softmax(s_sel / plan.temperature, dim=1)
        g = p if plan.threshold is None else p * (s_sel >= plan.threshold).to(p.dtype)
        return Routing(idx=idx, p=p, g=g, z_sel=z_sel, norm=norm)
    if plan.kind == GateKind.TOPK_MAGNITUDE:
        score = z.abs() if plan.vector is None else (z + plan.vector.to(z.dtype)).abs()
        idx = score.topk(plan.k, dim=1).indices
        ones = torch.ones(idx.shape, dtype=z.dtype, device=z.device)
        return Routing(idx=idx, p=ones, g=ones, z_sel=z.gather(1, idx))
    if plan.kind == GateKind.STATIC:
        assert plan.vector is not None
        return Routing(vector=plan.vector.detach().to(z.dtype))
    assert plan.matrix is not None
    return Routing(matrix=plan.matrix.detach().to(z.dtype))


def gated_responses(z: torch.Tensor, routing: Routing) -> torch.Tensor:
    """``G ⊙ z`` as a dense ``[M, R]`` tensor (scattered, not masked, for the top-k kinds)."""
    if routing.idx is not None:
        assert routing.g is not None and routing.z_sel is not None
        return torch.zeros_like(z).scatter_(1, routing.idx, routing.g * routing.z_sel)
    if routing.vector is not None:
        return z * routing.vector
    assert routing.matrix is not None
    return z * routing.matrix


def usage_counts(routing: Routing, num_tokens: int, num_ranks: int) -> torch.Tensor:
    """Per rank, the number of tokens whose gate value is nonzero (``[R]``, int64)."""
    if routing.idx is not None:
        assert routing.g is not None
        return torch.bincount(routing.idx[routing.g != 0], minlength=num_ranks)
    if routing.vector is not None:
        return (routing.vector != 0).long() * num_tokens
    assert routing.matrix is not None
    return (routing.matrix != 0).sum(dim=0)


def response_grad(z: torch.Tensor, u: torch.Tensor, routing: Routing, plan: GatePlan) -> torch.Tensor:
    """``dL/dz`` (``[M, R]``) from ``u = dy B_all`` through the value path and, for MoRA, the routing path."""
    if routing.idx is None:
        scale = routing.vector if routing.vector is not None else routing.matrix
        return u * scale
    assert routing.g is not None and routing.p is not None and routing.z_sel is not None
    u_sel = u.gather(1, routing.idx)
    if plan.kind != GateKind.TOPK_SOFTMAX:
        return torch.zeros_like(z).scatter_(1, routing.idx, routing.g * u_sel)
    assert routing.norm is not None
    p = routing.p
    # dL/dp_j = z_j u_j on tokens that pass δ (the threshold mask is a constant factor).
    passed = routing.g != 0 if plan.threshold is not None else None
    dp = routing.z_sel * u_sel if passed is None else routing.z_sel * u_sel * passed.to(u.dtype)
    # Softmax Jacobian over the selection, folded with 1/τ: gradient w.r.t. the selected scores s_j.
    ds_sel = p / plan.temperature * (dp - (p * dp).sum(dim=1, keepdim=True))
    clamped = routing.norm.clamp_min(plan.eps)
    # Normalisation s = z / max(‖z‖, eps): dz = (ds − s (s·ds)) / ‖z‖, dense over all R ranks.
    s_dot_ds = (routing.z_sel / clamped * ds_sel).sum(dim=1, keepdim=True)
    coupling = torch.where(routing.norm > plan.eps, s_dot_ds / clamped, torch.zeros_like(s_dot_ds))
    dz = z * (-coupling / clamped)
    dz.scatter_add_(1, routing.idx, routing.g * u_sel + ds_sel / clamped)
    return dz


def _active_ranks(plan: GatePlan, num_ranks: int) -> torch.Tensor | None:
    """Indices of the nonzero static ranks when compacting the bank pays (a frozen static gate with zeros)."""
    if plan.kind != GateKind.STATIC or plan.tensor_requires_grad or plan.vector is None:
        return None
    active = torch.nonzero(plan.vector.detach() != 0).flatten()
    return None if active.numel() == num_ranks else active


class CpuRankGatedLora(torch.autograd.Function):
    """Autograd function of the fast path. Inputs after ``plan`` are tensors that may get gradients."""

    @staticmethod
    def forward(ctx: Any, plan: GatePlan, train_scale: float, usage: torch.Tensor | None, x2: torch.Tensor,
                weight: torch.Tensor, bias: torch.Tensor | None, a_frozen: torch.Tensor | None,
                b_frozen: torch.Tensor | None, a_train: torch.Tensor, b_train: torch.Tensor,
                gate_tensor: torch.Tensor | None) -> torch.Tensor:
        a_all, b_all, frozen = join_banks(a_frozen, b_frozen, a_train, b_train, train_scale)
        y = F.linear(x2, weight, bias)
        active = _active_ranks(plan, a_all.shape[0])
        if active is not None:
            # Rank mask: drop unused ranks from both GEMMs rather than multiplying by zeros.
            z_active = x2 @ a_all.index_select(0, active).t()
            y.addmm_(z_active * plan.vector.to(y.dtype).index_select(0, active), b_all.index_select(1, active).t())
            z = x2.new_zeros(x2.shape[0], a_all.shape[0]).index_copy_(1, active, z_active)
        else:
            z = x2 @ a_all.t()
        routing = route(z, plan)
        if active is None:
            y.addmm_(gated_responses(z, routing), b_all.t())
        if usage is not None:
            usage.add_(usage_counts(routing, x2.shape[0], a_all.shape[0]).to(usage.dtype))
        ctx.plan, ctx.train_scale, ctx.frozen, ctx.routing = plan, train_scale, frozen, routing
        ctx.save_for_backward(x2, weight, z, a_all, b_all)
        return y

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x2, weight, z, a_all, b_all = ctx.saved_tensors
        plan, routing, frozen = ctx.plan, ctx.routing, ctx.frozen
        need = ctx.needs_input_grad  # (plan, scale, usage, x, W, b, A_f, B_f, A_t, B_t, gate_tensor)
        dy = dy.contiguous()
        grad_x = grad_w = grad_b = grad_a = grad_bt = grad_vec = None
        if need[9]:
            gz_train = gated_responses(z, routing)[:, frozen:]
            grad_bt = (dy.t() @ gz_train).mul_(ctx.train_scale).to(b_all.dtype)
        if need[3] or need[8] or need[10]:
            u = dy @ b_all
            if need[10]:
                # dL/dg = z ⊙ u per token; a static gate sums it over tokens.
                gate_tensor = plan.gate_tensor
                grad_vec = z * u if plan.kind == GateKind.PER_TOKEN else (z * u).sum(dim=0)
                grad_vec = grad_vec.to(gate_tensor.dtype)
            if need[3] or need[8]:
                dz = response_grad(z, u, routing, plan)
                if need[8]:
                    grad_a = dz[:, frozen:].t() @ x2
                if need[3]:
                    grad_x = (dy @ weight).addmm_(dz, a_all)
        if need[4]:
            grad_w = dy.t() @ x2
        if need[5]:
            grad_b = dy.sum(dim=0)
        return None, None, None, grad_x, grad_w, grad_b, None, None, grad_a, grad_bt, grad_vec
