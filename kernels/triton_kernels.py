"""Triton kernels of the rank-gated LoRA operation (design: ``docs/kernels.md``). Imported lazily, CUDA only.

This module imports Triton at import time, so only :mod:`clbench.kernels.triton_path` imports it,
and only when a CUDA tensor (or a test under ``TRITON_INTERPRET=1``, which must be set before this
import) asks for it.

Kernels (fp32 accumulation, fp64 for fp64 inputs: the accumulator type follows the ``z`` buffer; the ``GATE`` constexpr follows :class:`~clbench.kernels.plan.GateKind`):

* :func:`shrink_route_kernel` (K1): per block of tokens, ``z = x A_allᵀ`` over all ``R`` ranks, then the
  whole gate in registers (row norm, top-k by ``k`` rounds of ``argmax``, softmax at τ, δ), writing
  ``z`` and the pre-threshold gate ``p`` (fp32), per-rank usage counts (``atomic_add``) and one flag per
  16-wide rank block saying whether any token of the block selected a rank in it.
* :func:`gated_gemm_kernel` (K2, and K5 with ``GATE = -1``): ``out = (g ⊙ z) Rᵀ + x Wᵀ (+ bias)``; the
  accumulator starts from the low-rank term, rank blocks nobody in the tile selected are skipped, then
  the base GEMM's K loop runs and ``out`` is written once. In the backward the same kernel computes
  ``dx = dZ A_all + dy W0``.
* :func:`dy_pass_kernel` (K3): reads ``dy`` once per block of tokens for ``U = dy B_all`` and
  ``dB_train += dyᵀ (g ⊙ z)`` (fp32 atomics), then the gate backward in registers (value path, softmax
  Jacobian, dense normalisation term) writing ``dZ``, and the gradient of a trainable gate tensor.
"""

from __future__ import annotations

import triton
import triton.language as tl

RANK_BLOCK = 16  # rank-block width: tl.dot needs K >= 16, and it is the unit of rank-block skipping


@triton.jit
def _gate_tile(p_ptr, norm_ptr, vec_ptr, mat_ptr, z, rows, cols, row_ok, col_ok, stride_pm, stride_matm,
               threshold, eps, GATE: tl.constexpr, HAS_THRESHOLD: tl.constexpr):
    """Gate before (``p``) and after (``g``) the δ threshold for a ``[rows, cols]`` tile of responses ``z``."""
    valid = row_ok[:, None] & col_ok[None, :]
    if GATE == 2:
        vec = tl.load(vec_ptr + cols, mask=col_ok, other=0.0).to(z.dtype)
        p = tl.zeros_like(z) + vec[None, :]
    elif GATE == 3:
        p = tl.load(mat_ptr + rows[:, None] * stride_matm + cols[None, :], mask=valid, other=0.0).to(z.dtype)
    else:
        p = tl.load(p_ptr + rows[:, None] * stride_pm + cols[None, :], mask=valid, other=0.0)
    g = p
    if GATE == 0:
        if HAS_THRESHOLD:
            norm = tl.load(norm_ptr + rows, mask=row_ok, other=1.0)
            s = z / tl.maximum(norm, eps)[:, None]
            g = tl.where(s >= threshold, p, 0.0)
    g = tl.where(valid, g, 0.0)
    return p, g


@triton.jit
def shrink_route_kernel(
    x_ptr, a_ptr, z_ptr, p_ptr, norm_ptr, usage_ptr, flags_ptr, vec_ptr, mat_ptr,
    M, K, R, k_sel, inv_tau, threshold, eps,
    stride_xm, stride_xk, stride_ar, stride_ak, stride_zm, stride_matm,
    GATE: tl.constexpr, HAS_VEC: tl.constexpr, HAS_THRESHOLD: tl.constexpr, COUNT_USAGE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """K1: responses and routing for one block of ``BLOCK_M`` tokens (all ranks in one tile)."""
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_R)
    row_ok = rows < M
    col_ok = cols < R
    valid = row_ok[:, None] & col_ok[None, :]
    z = tl.zeros((BLOCK_M, BLOCK_R), dtype=z_ptr.dtype.element_ty)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < K
        x = tl.load(x_ptr + rows[:, None] * stride_xm + ks[None, :] * stride_xk,
                    mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        a = tl.load(a_ptr + cols[None, :] * stride_ar + ks[:, None] * stride_ak,
                    mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        z = tl.dot(x, a, z, input_precision=DOT_PRECISION)
    tl.store(z_ptr + rows[:, None] * stride_zm + cols[None, :], z, mask=valid)

    if GATE <= 1:
        if GATE == 0:
            # Signed top-k of z/‖z‖ is the top-k of z: the norm is a positive per-row factor.
            score = z
        else:
            score = z
            if HAS_VEC:
                score = z + tl.load(vec_ptr + cols, mask=col_ok, other=0.0).to(z.dtype)[None, :]
            score = tl.abs(score)
        score = tl.where(col_ok[None, :], score, float("-inf"))
        selected = tl.zeros((BLOCK_M, BLOCK_R), dtype=z.dtype)
        for _ in range(k_sel):
            best = tl.argmax(score, axis=1)
            hit = cols[None, :] == best[:, None]
            selected = tl.where(hit, 1.0, selected)
            score = tl.where(hit, float("-inf"), score)
        if GATE == 0:
            norm = tl.sqrt(tl.sum(z * z, axis=1))
            tl.store(norm_ptr + rows, norm, mask=row_ok)
            s = z / tl.maximum(norm, eps)[:, None]
            logits = tl.where(selected > 0, s * inv_tau, float("-inf"))
            top = tl.max(logits, axis=1)
            e = tl.where(selected > 0, tl.exp(logits - top[:, None]), 0.0)
            p = e / tl.sum(e, axis=1)[:, None]
            g = p
            if HAS_THRESHOLD:
                g = tl.where(s >= threshold, p, 0.0)
        else:
            p = selected
            g = selected
        tl.store(p_ptr + rows[:, None] * stride_zm + cols[None, :], p, mask=valid)
    else:
        p, g = _gate_tile(p_ptr, norm_ptr, vec_ptr, mat_ptr, z, rows, cols, row_ok, col_ok, stride_zm, stride_matm,
                          threshold, eps, GATE, False)
    used = tl.where(valid & (g != 0), 1, 0)
    if COUNT_USAGE:
        tl.atomic_add(usage_ptr + cols, tl.sum(used, axis=0), mask=col_ok)
    # One flag per rank block: did any token of this block select a rank in it?
    col_used = tl.max(used, axis=0)
    blocks = tl.arange(0, BLOCK_R // 16)
    member = (cols[None, :] // 16) == blocks[:, None]
    block_used = tl.max(tl.where(member, col_used[None, :], 0), axis=1)
    tl.store(flags_ptr + pid * (BLOCK_R // 16) + blocks, block_used)


@triton.jit
def gated_gemm_kernel(
    left_ptr, p_ptr, norm_ptr, vec_ptr, mat_ptr, flags_ptr, r_ptr, x_ptr, w_ptr, bias_ptr, out_ptr,
    M, N, K, R, num_flag_tiles, threshold, eps,
    stride_lm, stride_matm, stride_rr, stride_rn, stride_xm, stride_xk, stride_wk, stride_wn, stride_om, stride_on,
    GATE: tl.constexpr, HAS_THRESHOLD: tl.constexpr, HAS_BIAS: tl.constexpr, SKIP_BLOCKS: tl.constexpr,
    FLAG_GROUP: tl.constexpr, NUM_RANK_BLOCKS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """K2/K5: ``out = (g ⊙ left) Rᵀ + x W (+ bias)`` for one output tile; ``GATE = -1`` uses ``left`` as is."""
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    # Grouped tile order so consecutive programs share W tiles in L2.
    per_group = GROUP_M * num_pid_n
    first_m = (pid // per_group) * GROUP_M
    group_rows = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_rows
    pid_n = (pid % per_group) // group_rows
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < M
    col_ok = cols < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=left_ptr.dtype.element_ty)

    for rb in range(0, NUM_RANK_BLOCKS):
        run = True
        if SKIP_BLOCKS:
            # K1 wrote one flag per (K1 token block, rank block); this tile covers FLAG_GROUP K1 blocks.
            tiles = pid_m * FLAG_GROUP + tl.arange(0, FLAG_GROUP)
            flags = tl.load(flags_ptr + tiles * NUM_RANK_BLOCKS + rb, mask=tiles < num_flag_tiles, other=0)
            run = tl.max(flags, axis=0) != 0
        if run:
            ranks = rb * 16 + tl.arange(0, 16)
            rank_ok = ranks < R
            left = tl.load(left_ptr + rows[:, None] * stride_lm + ranks[None, :],
                           mask=row_ok[:, None] & rank_ok[None, :], other=0.0).to(acc.dtype)
            if GATE >= 0:
                p, g = _gate_tile(p_ptr, norm_ptr, vec_ptr, mat_ptr, left, rows, ranks, row_ok, rank_ok, stride_lm,
                                  stride_matm, threshold, eps, GATE, HAS_THRESHOLD)
                left = g * left
            right = tl.load(r_ptr + ranks[:, None] * stride_rr + cols[None, :] * stride_rn,
                            mask=rank_ok[:, None] & col_ok[None, :], other=0.0)
            acc = tl.dot(left.to(right.dtype), right, acc, input_precision=DOT_PRECISION)

    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < K
        x = tl.load(x_ptr + rows[:, None] * stride_xm + ks[None, :] * stride_xk,
                    mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_ptr + ks[:, None] * stride_wk + cols[None, :] * stride_wn,
                    mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        acc = tl.dot(x, w, acc, input_precision=DOT_PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(acc.dtype)[None, :]
    tl.store(out_ptr + rows[:, None] * stride_om + cols[None, :] * stride_on, acc.to(out_ptr.dtype.element_ty),
             mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def dy_pass_kernel(
    dy_ptr, b_ptr, z_ptr, p_ptr, norm_ptr, vec_ptr, mat_ptr, dz_ptr, db_ptr, dgate_ptr,
    M, N, R, R_frozen, inv_tau, threshold, eps, train_scale,
    stride_dym, stride_dyn, stride_bn, stride_br, stride_zm, stride_matm, stride_dbn,
    GATE: tl.constexpr, HAS_THRESHOLD: tl.constexpr, NEED_DB: tl.constexpr, NEED_U: tl.constexpr,
    NEED_DZ: tl.constexpr, NEED_DGATE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """K3: one read of ``dy`` per block of tokens gives ``U = dy B_all``, ``dB_train`` and, in registers, ``dZ``."""
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_R)
    row_ok = rows < M
    col_ok = cols < R
    valid = row_ok[:, None] & col_ok[None, :]
    z = tl.load(z_ptr + rows[:, None] * stride_zm + cols[None, :], mask=valid, other=0.0)
    p, g = _gate_tile(p_ptr, norm_ptr, vec_ptr, mat_ptr, z, rows, cols, row_ok, col_ok, stride_zm, stride_matm,
                      threshold, eps, GATE, HAS_THRESHOLD)
    gz = g * z
    train_col = cols - R_frozen
    train_ok = col_ok & (cols >= R_frozen)
    u = tl.zeros((BLOCK_M, BLOCK_R), dtype=z.dtype)
    for n0 in range(0, N, BLOCK_N):
        ns = n0 + tl.arange(0, BLOCK_N)
        n_ok = ns < N
        dy = tl.load(dy_ptr + rows[:, None] * stride_dym + ns[None, :] * stride_dyn,
                     mask=row_ok[:, None] & n_ok[None, :], other=0.0)
        if NEED_U:
            b = tl.load(b_ptr + ns[:, None] * stride_bn + cols[None, :] * stride_br,
                        mask=n_ok[:, None] & col_ok[None, :], other=0.0)
            u = tl.dot(dy, b, u, input_precision=DOT_PRECISION)
        if NEED_DB:
            part = tl.dot(tl.trans(dy), gz.to(dy.dtype), input_precision=DOT_PRECISION, out_dtype=z.dtype)
            tl.atomic_add(db_ptr + ns[:, None] * stride_dbn + train_col[None, :], part * train_scale,
                          mask=n_ok[:, None] & train_ok[None, :])
    if NEED_DGATE:
        zu = tl.where(valid, z * u, 0.0)
        if GATE == 2:
            tl.atomic_add(dgate_ptr + cols, tl.sum(zu, axis=0), mask=col_ok)
        else:
            tl.store(dgate_ptr + rows[:, None] * stride_zm + cols[None, :], zu, mask=valid)
    if NEED_DZ:
        dz = g * u
        if GATE == 0:
            dp = z * u
            if HAS_THRESHOLD:
                dp = tl.where(g != 0, dp, 0.0)
            # Softmax Jacobian over the selection (p is 0 elsewhere), folded with 1/τ.
            ds = p * inv_tau * (dp - tl.sum(p * dp, axis=1)[:, None])
            norm = tl.load(norm_ptr + rows, mask=row_ok, other=1.0)
            clamped = tl.maximum(norm, eps)
            s_dot_ds = tl.sum(z / clamped[:, None] * ds, axis=1)
            coupling = tl.where(norm > eps, s_dot_ds / clamped, 0.0)
            # Normalisation term, dense over all ranks: (ds − s (s·ds)) / ‖z‖.
            dz += ds / clamped[:, None] - z * (coupling / clamped)[:, None]
        tl.store(dz_ptr + rows[:, None] * stride_zm + cols[None, :], dz, mask=valid)
