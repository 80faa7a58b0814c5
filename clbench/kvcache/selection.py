"""The arithmetic of D2O's cache compression, as pure tensor functions (no transformers).

Shapes: ``b`` sequences, ``h`` cache heads (KV heads, or query heads when GQA is expanded), ``L``
cache slots, ``d`` head dim. Every slot carries ``valid`` (a real token, not padding and not
evicted), ``pos`` (its absolute position in the sequence, counting from the first real token) and
``score`` (cumulative attention received, H2O's heavy-hitter score). Budgets are per sequence.

Official code: ``AIoT-MLSys-Lab/D2O``, ``LLM_merge_new/LMEval_kv_token_merge/``
``modeling_llama3_7b_13b_d2o.py`` (density, eviction, merge) and ``modeling_llama3_new.py``
(layer allocation).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

RATIO_FLOOR = 0.01


def density_scores(attn: torch.Tensor, query_valid: torch.Tensor, key_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Column sums of prefill attention and the layer's density score per sequence.

    Args:
        attn: ``[b, H, q, k]`` softmax attention of the prompt (q = k).
        query_valid / key_valid: ``[b, q]`` / ``[b, k]`` bool, False at padding.

    Returns:
        ``col``: ``[b, H, k]`` attention mass each key received from the valid queries (0 at padding);
        ``density``: ``[b]``, the mean over heads of the min–max-normalised (across this layer's
        heads) unbiased variance of ``col`` over the valid keys. Low values mean dense attention.
    """
    a = attn.float() * query_valid[:, None, :, None].float()
    col = a.sum(dim=2) * key_valid[:, None, :].float()
    n = key_valid.sum(dim=-1).float().clamp(min=1.0)
    mean = col.sum(dim=-1) / n[:, None]
    var = ((col - mean[..., None]) ** 2 * key_valid[:, None, :].float()).sum(dim=-1) / (n - 1).clamp(min=1.0)[:, None]
    low, high = var.min(dim=1, keepdim=True).values, var.max(dim=1, keepdim=True).values
    return col, ((var - low) / (high - low + 1e-6)).mean(dim=1)


def layer_ratios(density: torch.Tensor, budget: float, allocation: str) -> torch.Tensor:
    """Per-layer cache ratios ``[b, L]`` from the layers' density scores ``[b, L]``.

    ``density``: ``r_l = clamp(L·ρ·softmax_l(−σ)_l, 0.01, max(1, ρ))`` (dense layers get more);
    ``uniform``: ``r_l = ρ``. The official upper clamp is 1; it is ``max(1, ρ)`` here so that a
    ratio above 1 (Python API only; the CLI maps ρ >= 1 to the full cache) never evicts.
    """
    if allocation == "uniform":
        return torch.full_like(density, float(budget))
    weights = torch.softmax(-density.float(), dim=-1)
    return (density.shape[-1] * budget * weights).clamp(RATIO_FLOOR, max(1.0, budget))


def keep_mask(score: torch.Tensor, valid: torch.Tensor, pos: torch.Tensor, n_heavy: torch.Tensor, n_recent: torch.Tensor,
              sinks: int) -> torch.Tensor:
    """Slots to keep ``[b, h, L]``: per head, the last ``n_recent`` valid slots (by position), plus the
    ``n_heavy`` highest-scoring other slots, where the first ``sinks`` positions count as +∞.

    Rows whose valid slots fit in ``n_heavy + n_recent`` keep all of them. Ties in the score go to
    the earlier slot (a stable sort); the official ``torch.topk`` leaves them unspecified.
    """
    slots = score.shape[-1]
    arange = torch.arange(slots, device=score.device).expand_as(score)
    newest_first = torch.where(valid, pos, torch.full_like(pos, -1)).argsort(dim=-1, descending=True, stable=True)
    recency = torch.empty_like(newest_first).scatter_(-1, newest_first, arange)
    recent = valid & (recency < n_recent[:, None, None])
    candidate = valid & ~recent
    ranked = score.float().masked_fill(~candidate, float("-inf")).masked_fill(candidate & (pos < sinks), float("inf"))
    order = ranked.argsort(dim=-1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(-1, order, arange)
    heavy = candidate & (rank < n_heavy[:, None, None]) & (ranked > float("-inf"))
    over = valid.sum(dim=-1) > (n_heavy + n_recent)[:, None]
    return torch.where(over[..., None], recent | heavy, valid)


def update_threshold(tau: torch.Tensor, mean_similarity: torch.Tensor, active: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """The EMA merge threshold per sequence: ``τ₁ = m₁``, then ``τ ← α·τ + β·m`` (NaN = not started).

    Only sequences with ``active`` (something evicted this step) move.
    """
    started = torch.where(torch.isnan(tau), mean_similarity, alpha * tau + beta * mean_similarity)
    return torch.where(active, started, tau)


def merge_evicted(keys: torch.Tensor, values: torch.Tensor, keep: torch.Tensor, evicted: torch.Tensor, tau: torch.Tensor,
                  alpha: float, beta: float, enabled: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Merge evicted slots into their most similar kept key (D2O's compensation), per head.

    For each evicted slot e: ``u_e = max_c cos(k_e, k_c)`` over the kept slots c of its head and
    ``c*(e)`` the argmax. τ (per sequence) is updated with the mean of u over heads and evicted
    slots; the e-th evicted slot of every head is merged when the mean over heads of their u is
    at least τ (the decision is per slot ordinal, shared across heads, as in the code). A kept slot
    c then becomes ``(k_c + Σ u_e k_e) / (1 + n_c)`` over the n_c merged slots routed to it, and
    likewise for values, with the key similarities as weights.

    Returns:
        new keys, new values (same dtype as the inputs), the updated τ ``[b]`` and how many
        (head, slot) pairs were merged. With ``enabled=False`` nothing changes (H2O).
    """
    counts = evicted.sum(dim=-1)  # [b, h]: equal across the heads of a sequence
    if not enabled or not bool(evicted.any()):
        return keys, values, tau, 0
    unit = F.normalize(keys.float(), dim=-1)
    similarity = (unit @ unit.transpose(-1, -2)).masked_fill(~keep[:, :, None, :], float("-inf"))
    best, target = similarity.max(dim=-1)  # [b, h, L]
    best = torch.where(evicted, best, torch.zeros_like(best))
    heads = keys.shape[1]
    width = int(counts.max())
    ordinal = (evicted.long().cumsum(dim=-1) - 1).clamp(min=0)
    per_ordinal = torch.zeros(keys.shape[0], heads, width, device=keys.device).scatter_add_(-1, ordinal, best)
    per_sequence = counts[:, 0].float()
    active = per_sequence > 0
    mean_similarity = per_ordinal.sum(dim=(1, 2)) / (heads * per_sequence).clamp(min=1.0)
    tau = update_threshold(tau, mean_similarity, active, alpha, beta)
    decision = per_ordinal.mean(dim=1) >= tau[:, None]  # [b, width]
    merged = evicted & decision.gather(-1, ordinal.flatten(1)).view_as(evicted)
    weight = best * merged.float()
    index = target.masked_fill(~merged, 0)
    routed = torch.zeros_like(best).scatter_add_(-1, index, merged.float())

    def blend(tensor: torch.Tensor) -> torch.Tensor:
        source = tensor.float()
        total = source.clone().scatter_add_(2, index[..., None].expand_as(source), weight[..., None] * source)
        blended = total / (1.0 + routed[..., None])
        return torch.where((keep & (routed > 0))[..., None], blended, source).to(tensor.dtype)

    return blend(keys), blend(values), tau, int(merged.sum())


def compact(keep: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather index ``[b, h, W]`` putting each row's kept slots first, in position order, and their validity.

    ``W`` is the largest kept count of any row; shorter rows are padded with slots marked invalid.
    """
    width = int(keep.sum(dim=-1).max())
    key = torch.where(keep, pos, pos + (int(pos.max()) + 2 if pos.numel() else 2))  # non-kept after every kept slot (pads have pos -1)
    index = key.argsort(dim=-1, stable=True)[..., :width]
    return index, keep.gather(-1, index)


def gather_slots(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``tensor`` (``[b, h, L]`` or ``[b, h, L, d]``) at the slots ``index`` (``[b, h, W]``)."""
    if tensor.dim() == 3:
        return tensor.gather(-1, index)
    return tensor.gather(2, index[..., None].expand(*index.shape, tensor.shape[-1]))
