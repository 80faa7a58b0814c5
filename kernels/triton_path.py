"""The Triton path: launchers for the kernels of :mod:`clbench.kernels.triton_kernels` and their autograd function.

Imported only when the dispatcher sends CUDA tensors here (or a test forces ``backend="triton"``
under ``TRITON_INTERPRET=1``, where the kernels run on CPU tensors). Block sizes are pinned per
device class rather than autotuned: autotuning under the interpreter would run every config, and
on a GPU the pinned configs are the starting point the benchmark reports against.

Saved for backward: ``x``, ``z`` (fp32, ``[M, R]``), the pre-threshold gate ``p`` (fp32, top-k gates
only) and the row norms; ``g ⊙ z`` is recomputed in the backward kernel, not stored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from clbench.kernels.plan import GateKind, GatePlan, join_banks


@dataclass(frozen=True)
class TileConfig:
    """Pinned block sizes: K1/K3 token block, K2 tile, reduction blocks, warps."""

    route_m: int
    gemm_m: int
    gemm_n: int
    gemm_k: int
    route_k: int
    dy_n: int
    group_m: int
    warps_route: int
    warps_gemm: int
    stages: int


def interpreted() -> bool:
    """Whether Triton runs in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def tile_config(block_r: int) -> TileConfig:
    """Block sizes for ``block_r`` (``R`` rounded up to a power of two, at least 16)."""
    if interpreted():
        # Small tiles keep the interpreter fast; gemm_m = 2 × route_m exercises the flag grouping.
        return TileConfig(16, 32, 32, 32, 32, 32, 2, 1, 1, 1)
    # The [BM, BR] fp32 tiles of K1/K3 live in registers: halve the token block for wide banks.
    route_m = 64 if block_r <= 64 else 32
    return TileConfig(route_m, 128, 128, 64, 64, 64, 8, 4, 8, 3)


def _pow2_ranks(num_ranks: int) -> int:
    return max(16, 1 << (num_ranks - 1).bit_length())


def triton_cdiv(a: int, b: int) -> int:
    """Ceiling division."""
    return -(-a // b)


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 accumulation (and saved ``z``/``p``) for 16/32-bit inputs; fp64 for fp64 inputs (exact tests)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _dot_precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and not interpreted() and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


@dataclass
class Routed:
    """Outputs of K1: responses, pre-threshold gate, row norms, rank-block flags and their geometry."""

    z: torch.Tensor
    p: torch.Tensor
    norm: torch.Tensor
    flags: torch.Tensor
    block_r: int
    config: TileConfig


def _gate_operands(plan: GatePlan, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``vec_ptr`` and ``mat_ptr`` operands and the matrix row stride (dummies when the gate has none)."""
    vec = plan.vector.detach().contiguous() if plan.vector is not None else like
    mat = plan.matrix.detach().contiguous() if plan.matrix is not None else like
    return vec, mat, mat.stride(0) if plan.matrix is not None else 0


def shrink_route(x2: torch.Tensor, a_all: torch.Tensor, plan: GatePlan, usage: torch.Tensor | None) -> Routed:
    """K1: ``z = x A_allᵀ`` and the routing; adds per-rank usage counts to ``usage`` when given."""
    from clbench.kernels import triton_kernels as tk

    m, k_dim = x2.shape
    r = a_all.shape[0]
    block_r = _pow2_ranks(r)
    cfg = tile_config(block_r)
    acc = accumulator_dtype(x2.dtype)
    z = torch.empty(m, r, device=x2.device, dtype=acc)
    topk = plan.kind in (GateKind.TOPK_SOFTMAX, GateKind.TOPK_MAGNITUDE)
    p = torch.empty(m, r, device=x2.device, dtype=acc) if topk else z
    norm = torch.empty(m, device=x2.device, dtype=acc)
    tiles = triton_cdiv(m, cfg.route_m)
    flags = torch.empty(tiles, block_r // tk.RANK_BLOCK, device=x2.device, dtype=torch.int32)
    counts = torch.zeros(r, device=x2.device, dtype=torch.int32) if usage is not None else flags
    vec, mat, stride_mat = _gate_operands(plan, z)
    tk.shrink_route_kernel[(tiles,)](
        x2, a_all, z, p, norm, counts, flags, vec, mat,
        m, k_dim, r, plan.k, 1.0 / plan.temperature, 0.0 if plan.threshold is None else plan.threshold, plan.eps,
        x2.stride(0), x2.stride(1), a_all.stride(0), a_all.stride(1), z.stride(0), stride_mat,
        GATE=int(plan.kind), HAS_VEC=plan.vector is not None, HAS_THRESHOLD=plan.threshold is not None,
        COUNT_USAGE=usage is not None, BLOCK_M=cfg.route_m, BLOCK_K=cfg.route_k, BLOCK_R=block_r,
        DOT_PRECISION=_dot_precision(x2.dtype), num_warps=cfg.warps_route,
    )
    if usage is not None:
        usage.add_(counts.to(usage.dtype))
    return Routed(z, p, norm, flags, block_r, cfg)


def gated_gemm(left: torch.Tensor, right: torch.Tensor, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None,
               out: torch.Tensor, *, plan: GatePlan | None = None, routed: Routed | None = None,
               skip_blocks: bool = True) -> torch.Tensor:
    """K2/K5: ``out = (g ⊙ left) right + x w (+ bias)`` with ``right`` ``[R, N]`` and ``w`` ``[K, N]`` (views).

    With ``plan``/``routed`` the gate is applied to ``left`` (= ``z``) tile by tile and rank blocks
    nobody selected are skipped; without them ``left`` is used as is (the ``dx`` GEMM).
    """
    from clbench.kernels import triton_kernels as tk

    m, n = out.shape
    k_dim = x.shape[1]
    r = left.shape[1]
    block_r = routed.block_r if routed is not None else _pow2_ranks(r)
    cfg = routed.config if routed is not None else tile_config(block_r)
    gate = -1 if plan is None else int(plan.kind)
    skip = skip_blocks and routed is not None
    if skip:
        assert cfg.gemm_m % cfg.route_m == 0
    dummy = left
    vec, mat, stride_mat = _gate_operands(plan, dummy) if plan is not None else (dummy, dummy, 0)
    grid = (triton_cdiv(m, cfg.gemm_m) * triton_cdiv(n, cfg.gemm_n),)
    tk.gated_gemm_kernel[grid](
        left, routed.p if routed is not None else dummy, routed.norm if routed is not None else dummy, vec, mat,
        routed.flags if routed is not None else dummy, right, x, w, bias if bias is not None else dummy, out,
        m, n, k_dim, r, routed.flags.shape[0] if routed is not None else 0,
        0.0 if plan is None or plan.threshold is None else plan.threshold, 1e-12 if plan is None else plan.eps,
        left.stride(0), stride_mat, right.stride(0), right.stride(1), x.stride(0), x.stride(1), w.stride(0),
        w.stride(1), out.stride(0), out.stride(1),
        GATE=gate, HAS_THRESHOLD=plan is not None and plan.threshold is not None, HAS_BIAS=bias is not None,
        SKIP_BLOCKS=skip, FLAG_GROUP=cfg.gemm_m // cfg.route_m, NUM_RANK_BLOCKS=block_r // tk.RANK_BLOCK,
        BLOCK_M=cfg.gemm_m, BLOCK_N=cfg.gemm_n, BLOCK_K=cfg.gemm_k, GROUP_M=cfg.group_m,
        DOT_PRECISION=_dot_precision(x.dtype), num_warps=cfg.warps_gemm, num_stages=cfg.stages,
    )
    return out


def forward(plan: GatePlan, x2: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, a_all: torch.Tensor,
            b_all: torch.Tensor, usage: torch.Tensor | None, *, skip_blocks: bool = True) -> tuple[torch.Tensor, Routed]:
    """K1 then K2: the layer output (``[M, d_out]``, dtype of ``x``) and K1's routing."""
    x2 = x2.contiguous()
    routed = shrink_route(x2, a_all.contiguous(), plan, usage)
    y = torch.empty(x2.shape[0], weight.shape[0], device=x2.device, dtype=x2.dtype)
    gated_gemm(routed.z, b_all.t(), x2, weight.t(), bias, y, plan=plan, routed=routed, skip_blocks=skip_blocks)
    return y, routed


def dy_pass(plan: GatePlan, routed: Routed, dy: torch.Tensor, b_all: torch.Tensor, frozen: int, train_scale: float,
            *, need_db: bool, need_dz: bool, need_dgate: bool
            ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """K3: ``dB_train`` (``[d_out, R_t]``), ``dZ`` (``[M, R]``) and the gate tensor's gradient, in the accumulator dtype."""
    from clbench.kernels import triton_kernels as tk

    m, n = dy.shape
    r = routed.z.shape[1]
    cfg = routed.config
    z = routed.z
    db = torch.zeros(n, r - frozen, device=dy.device, dtype=z.dtype) if need_db else z
    dz = torch.empty_like(z) if need_dz else z
    dgate = z
    if need_dgate:
        dgate = torch.zeros(r, device=dy.device, dtype=z.dtype) if plan.kind == GateKind.STATIC \
            else torch.empty_like(z)
    vec, mat, stride_mat = _gate_operands(plan, z)
    tk.dy_pass_kernel[(triton_cdiv(m, cfg.route_m),)](
        dy, b_all, z, routed.p, routed.norm, vec, mat, dz, db, dgate,
        m, n, r, frozen, 1.0 / plan.temperature, 0.0 if plan.threshold is None else plan.threshold, plan.eps,
        train_scale,
        dy.stride(0), dy.stride(1), b_all.stride(0), b_all.stride(1), z.stride(0), stride_mat,
        db.stride(0) if need_db else 0,
        GATE=int(plan.kind), HAS_THRESHOLD=plan.threshold is not None, NEED_DB=need_db,
        NEED_U=need_dz or need_dgate, NEED_DZ=need_dz, NEED_DGATE=need_dgate,
        BLOCK_M=cfg.route_m, BLOCK_N=cfg.dy_n, BLOCK_R=routed.block_r, DOT_PRECISION=_dot_precision(dy.dtype),
        num_warps=cfg.warps_route,
    )
    return (db if need_db else None), (dz if need_dz else None), (dgate if need_dgate else None)


class TritonRankGatedLora(torch.autograd.Function):
    """Autograd function of the Triton path (same inputs as :class:`clbench.kernels.cpu.CpuRankGatedLora`)."""

    @staticmethod
    def forward(ctx: Any, plan: GatePlan, train_scale: float, usage: torch.Tensor | None, x2: torch.Tensor,
                weight: torch.Tensor, bias: torch.Tensor | None, a_frozen: torch.Tensor | None,
                b_frozen: torch.Tensor | None, a_train: torch.Tensor, b_train: torch.Tensor,
                gate_tensor: torch.Tensor | None) -> torch.Tensor:
        a_all, b_all, frozen = join_banks(a_frozen, b_frozen, a_train, b_train, train_scale)
        y, routed = forward(plan, x2, weight, bias, a_all, b_all, usage)
        ctx.plan, ctx.train_scale, ctx.frozen, ctx.routed = plan, train_scale, frozen, routed
        ctx.save_for_backward(x2, weight, a_all, b_all)
        return y

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x2, weight, a_all, b_all = ctx.saved_tensors
        plan, routed, frozen = ctx.plan, ctx.routed, ctx.frozen
        need = ctx.needs_input_grad  # (plan, scale, usage, x, W, b, A_f, B_f, A_t, B_t, gate_tensor)
        dy = dy.contiguous()
        db, dz, dgate = dy_pass(plan, routed, dy, b_all, frozen, ctx.train_scale, need_db=need[9],
                                need_dz=need[3] or need[8], need_dgate=need[10])
        grad_x = grad_a = None
        if need[8]:
            # dA_train = dZ_trainᵀ x: a plain GEMM (cuBLAS), as LoRAFusion keeps it.
            grad_a = (dz[:, frozen:].t() @ x2.to(dz.dtype)).to(a_all.dtype)
        if need[3]:
            grad_x = torch.empty_like(x2)
            gated_gemm(dz, a_all, dy, weight, None, grad_x)
        grad_w = dy.t() @ x2 if need[4] else None
        grad_b = dy.sum(dim=0) if need[5] else None
        grad_bt = db.to(b_all.dtype) if db is not None else None
        grad_gate = None
        if dgate is not None:
            grad_gate = dgate.to(plan.gate_tensor.dtype)
        return None, None, None, grad_x, grad_w, grad_b, None, None, grad_a, grad_bt, grad_gate
