"""The CPU fast path: the kernels' math written with a few large torch calls and a hand-written backward.

Forward (design: ``docs/kernels.md``): one GEMM for ``z = x A_allᵀ`` (all ranks: the score needs them), the
row-local gate on the small ``[M, k]`` selection, then the adapter term and the base layer written
into one output without a ``[M, d_out]`` temporary being added:

* top-k gates pick their ranks with :func:`select_topk` (k vectorised max-passes over packed
  ``(value, rank)`` integer keys, 2–3× faster on one CPU thread than ``torch.topk``'s per-row
  selection at MoRA's shapes) and expand only the ``k`` selected ranks per token with
  ``embedding_bag`` (``M·k·d_out`` multiply-adds instead of the dense ``M·R·d_out`` expand GEMM);
  the base GEMM then accumulates into that output in place (``addmm_``);
* static and per-token gates expand densely with one in-place ``addmm_``; a static gate with zero
  entries (a rank mask) drops the unused ranks from both GEMMs instead of masking.

Backward reads ``dy`` once per GEMM: for top-k gates ``u_j = dy · B_all[:, j]`` is needed only at
the ``k`` selected ranks (the softmax Jacobian and the norm coupling use nothing else), so it is
computed as ``M·k`` dot products (the ``embedding_bag`` per-sample-weight gradient) instead of the
``[M, R]`` GEMM ``dy B_all``; ``dB = s · (Gzᵀ dy)ᵀ``; the gate backward (the hand-derived backward of MoRAM's gate: value
path, softmax Jacobian over the selection, and the dense normalisation term) gives ``dZ``; then
``dA = dZᵀ x`` and ``dx = dy W0 + dZ A_all`` with ``addmm_`` (an ``embedding_bag`` for the sparse
``dZ`` of the magnitude gate). Only the inputs that require grad get a gradient; the frozen bank
never does.

The same functions run on CUDA tensors (they are plain torch), which is the fallback when Triton
is unavailable; there the selection uses ``torch.topk``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from clbench.kernels.plan import GateKind, GatePlan, join_banks

# Packed top-k keys: the score's order-preserving int32 image in the high bits, the rank in the low
# ``_INDEX_BITS`` bits (so ranks up to 65535). One max-pass per selected rank is cheaper than the
# per-row selection of ``torch.topk`` only for small k and enough rows to vectorise over.
_INDEX_BITS = 16
_PACKED_TOPK_MAX_K = 16
# Below this many rows the fixed costs of the packed selection and of the sparse expand
# (embedding_bag) outweigh what they save: small batches keep torch.topk and the dense GEMMs.
_VECTORISED_MIN_ROWS = 256
_LOWEST_KEY = torch.iinfo(torch.int64).min


def select_topk(score: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, indices)`` (``[M, k]``, descending) of each row's ``k`` largest entries of ``score`` (``[M, R]``).

    On the CPU, for fp32/fp16/bf16 scores, small ``k`` and enough rows, each score becomes an int64
    key ``(ordered_bits(score) << 16) | rank`` in rank-major layout, and ``k`` passes of a vectorised
    ``amax`` over the ranks pick the best remaining key per token (the rank is read from its low
    bits and its key knocked out). The keys order exactly as the fp32 scores (equal scores: the
    higher rank first), so this is an exact top-k. Elsewhere (fp64, CUDA, large ``k``) it is
    ``torch.topk``.
    """
    rows, ranks = score.shape
    if (score.is_cuda or score.dtype == torch.float64 or k > _PACKED_TOPK_MAX_K or rows < _VECTORISED_MIN_ROWS
            or ranks >= 1 << _INDEX_BITS):
        values, indices = score.topk(k, dim=1)
        return values, indices
    bits = score.float().t().contiguous().view(torch.int32)
    # IEEE-754 bits order like sign-magnitude integers; flipping the magnitude of negatives makes
    # them order like two's-complement ones (so the int order is the float order).
    key = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).to(torch.int64)
    key.bitwise_left_shift_(_INDEX_BITS).bitwise_or_(torch.arange(ranks, device=score.device).unsqueeze(1))
    chosen = torch.empty(k, rows, dtype=torch.int64, device=score.device)
    low_bits = (1 << _INDEX_BITS) - 1
    for j in range(k):
        best = chosen[j : j + 1]
        torch.amax(key, dim=0, keepdim=True, out=best)
        best.bitwise_and_(low_bits)
        key.scatter_(0, best, _LOWEST_KEY)
    indices = chosen.t().contiguous()
    return score.gather(1, indices), indices


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
        z_sel, idx = select_topk(z, plan.k)
        s_sel = z_sel / norm.clamp_min(plan.eps)
        p = torch.softmax(s_sel / plan.temperature, dim=1)
        g = p if plan.threshold is None else p * (s_sel >= plan.threshold).to(p.dtype)
        return Routing(idx=idx, p=p, g=g, z_sel=z_sel, norm=norm)
    if plan.kind == GateKind.TOPK_MAGNITUDE:
        score = z.abs() if plan.vector is None else (z + plan.vector.to(z.dtype)).abs()
        idx = select_topk(score, plan.k)[1]
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
    """Per rank, the number of tokens whose gate is nonzero (``[R]``, int64)."""
    if routing.idx is not None:
        assert routing.g is not None
        return torch.bincount(routing.idx[routing.g != 0], minlength=num_ranks)
    if routing.vector is not None:
        return (routing.vector != 0).long() * num_tokens
    assert routing.matrix is not None
    return (routing.matrix != 0).sum(dim=0)


def sparse_rows_times(idx: torch.Tensor, values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``S @ rows`` for ``S`` (``[M, R]``) holding ``values`` (``[M, k]``) at columns ``idx``: ``M·k`` row reads."""
    return F.embedding_bag(idx, rows, per_sample_weights=values.to(rows.dtype), mode="sum")


def selected_dots(dy: torch.Tensor, rows: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``(dy @ rowsᵀ).gather(1, idx)`` (``[M, k]``) as ``M·k`` dot products, without the ``[M, R]`` GEMM.

    This is exactly ``embedding_bag``'s per-sample-weight gradient, so its (vectorised) ATen
    kernel is used; the GEMM-and-gather form is the fallback should that private op go away.
    """
    op = getattr(torch.ops.aten, "_embedding_bag_per_sample_weights_backward", None)
    if op is None:  # pragma: no cover - depends on the torch version
        return (dy @ rows.t()).gather(1, idx)
    tokens, k = idx.shape
    flat = idx.reshape(-1)
    offsets = torch.arange(0, tokens * k, k, device=idx.device)
    offset2bag = torch.arange(tokens, device=idx.device).repeat_interleave(k)
    return op(dy.contiguous(), rows, flat, offsets, offset2bag, 0, -1).view(tokens, k)


def selected_response_grad(z: torch.Tensor, u_sel: torch.Tensor, routing: Routing, plan: GatePlan) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``dL/dz`` of a top-k gate from ``u_sel = (dy B_all)`` at the selected ranks.

    MoRA's softmax gate returns the dense ``[M, R]`` gradient (its normalisation term couples every
    rank); the magnitude gate, whose gate is constant, returns the sparse ``(idx, values)`` form.
    """
    assert routing.idx is not None and routing.g is not None and routing.p is not None and routing.z_sel is not None
    if plan.kind != GateKind.TOPK_SOFTMAX:
        return routing.idx, routing.g * u_sel
    assert routing.norm is not None
    p = routing.p
    # dL/dp_j = z_j u_j on tokens that pass δ (the threshold mask is a constant factor).
    dp = routing.z_sel * u_sel if plan.threshold is None else routing.z_sel * u_sel * (routing.g != 0).to(u_sel.dtype)
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
        active = _active_ranks(plan, a_all.shape[0])
        b_rows = None
        if active is not None:
            # Rank mask: drop unused ranks from both GEMMs rather than multiplying by zeros.
            y = F.linear(x2, weight, bias)
            z_active = x2 @ a_all.index_select(0, active).t()
            y.addmm_(z_active * plan.vector.to(y.dtype).index_select(0, active), b_all.index_select(1, active).t())
            z = x2.new_zeros(x2.shape[0], a_all.shape[0]).index_copy_(1, active, z_active)
            routing = route(z, plan)
        else:
            z = x2 @ a_all.t()
            routing = route(z, plan)
            if routing.idx is not None and x2.shape[0] >= _VECTORISED_MIN_ROWS:
                # Only the k selected ranks of each token are expanded; the base GEMM accumulates into them.
                b_rows = b_all.t().contiguous()
                y = sparse_rows_times(routing.idx, routing.g * routing.z_sel, b_rows)
                if bias is not None:
                    y.add_(bias)
                y.addmm_(x2, weight.t())
            else:
                y = F.linear(x2, weight, bias)
                y.addmm_(gated_responses(z, routing), b_all.t())
        if usage is not None:
            usage.add_(usage_counts(routing, x2.shape[0], a_all.shape[0]).to(usage.dtype))
        ctx.plan, ctx.train_scale, ctx.frozen, ctx.routing = plan, train_scale, frozen, routing
        ctx.b_rows = b_rows
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
            gz_train = gated_responses(z, routing)[:, frozen:].contiguous()
            # (Gzᵀ dy)ᵀ: the skinny operand on the left keeps the GEMM on contiguous rows.
            grad_bt = (gz_train.t() @ dy).t().mul_(ctx.train_scale).to(b_all.dtype)
        if need[3] or need[8] or need[10]:
            dz: torch.Tensor | tuple[torch.Tensor, torch.Tensor]
            if routing.idx is not None and ctx.b_rows is not None:  # large batch: M·k dot products
                dz = selected_response_grad(z, selected_dots(dy, ctx.b_rows, routing.idx), routing, plan)
            elif routing.idx is not None:  # small batch: one GEMM, then the selected entries
                dz = selected_response_grad(z, (dy @ b_all).gather(1, routing.idx), routing, plan)
            else:
                u = dy @ b_all
                if need[10]:
                    # dL/dg = z ⊙ u per token; a static gate sums it over tokens.
                    gate_tensor = plan.gate_tensor
                    grad_vec = z * u if plan.kind == GateKind.PER_TOKEN else (z * u).sum(dim=0)
                    grad_vec = grad_vec.to(gate_tensor.dtype)
                scale = routing.vector if routing.vector is not None else routing.matrix
                dz = u * scale
            if isinstance(dz, tuple):  # sparse (idx, values): the magnitude gate
                idx, values = dz
                dense = torch.zeros_like(z).scatter_(1, idx, values) if need[8] or ctx.b_rows is None else None
                if need[8]:
                    grad_a = dense[:, frozen:].t() @ x2
                if need[3] and dense is None:
                    grad_x = (dy @ weight).add_(sparse_rows_times(idx, values, a_all))
                elif need[3]:
                    grad_x = (dy @ weight).addmm_(dense, a_all)
            else:
                if need[8]:
                    grad_a = dz[:, frozen:].t() @ x2
                if need[3]:
                    grad_x = (dy @ weight).addmm_(dz, a_all)
        if need[4]:
            grad_w = dy.t() @ x2
        if need[5]:
            grad_b = dy.sum(dim=0)
        return None, None, None, grad_x, grad_w, grad_b, None, None, grad_a, grad_bt, grad_vec
