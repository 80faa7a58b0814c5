"""D2O (Dynamic Discriminative Operations, ICLR 2025) as a transformers ``Cache``.

Per generation (one prompt batch, one :class:`D2OCache`):

1. **Prefill**: every layer keeps the whole prompt and records, from the prompt's attention, each
   key's received attention (its heavy-hitter score) and the layer's density score (the mean over
   heads of the min–max-normalised variance of those column sums).
2. **First decode step**: the per-layer ratios ``r_l`` are allocated from the densities (dense
   layers get more) and fixed, with ``N_hh = ⌊(P+1)·r_l·ρ_h/ρ⌋`` heavy hitters and
   ``N_rec = ⌊(P+1)·r_l·ρ_r/ρ⌋`` recent slots per sequence (P = its prompt length). Layers 0, 1
   and L−1 are never compressed.
3. **Every decode step**: after attention (computed over the cache plus the new token), scores
   accumulate; when a head holds more than ``N_hh + N_rec`` valid slots it keeps the recent
   window, the 4 sink tokens and the top-scoring rest, and merges each evicted entry into its most
   similar kept key when that similarity clears the layer's EMA threshold τ
   (:func:`~clbench.kvcache.selection.merge_evicted`).

Departures from the official code (each documented in ``docs/strategies/d2o.md``): batches of
any size with per-sequence budgets, τ and padding masks (the code assumes batch 1); grouped-query
attention is kept native, scores averaged over the query heads of each KV head
(``gqa="expand"`` reproduces the code's per-query-head cache); τ starts afresh for every prompt
(the code never resets it; ``carry_tau`` reproduces that).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer

from clbench.errors import UsageError
from clbench.kvcache.selection import compact, density_scores, gather_slots, keep_mask, layer_ratios, merge_evicted

ALLOCATIONS = ("density", "uniform")
GQA_MODES = ("kv_head", "expand")


@dataclass(frozen=True)
class D2OSettings:
    """One eviction policy of the D2O family.

    Attributes:
        budget: ρ = ρ_h + ρ_r, the cache size as a fraction of each prompt's length (+1).
        heavy_share: ρ_h / ρ (the README's 0.1 / 0.1 split: 0.5).
        allocation: ``density`` (D2O's layer allocation) or ``uniform`` (r_l = ρ).
        merge: merge evicted entries into similar kept ones (off: H2O-style dropping).
        exempt_layers: layers never compressed (negative indices count from the end);
            ``None`` = D2O's (0, 1, L−1).
        sinks: leading tokens always kept (4).
        alpha / beta: EMA of the merge threshold, ``τ ← α·τ + β·m`` (0.5 / 0.5).
        heavy_hitters: keep top-scoring tokens (off: StreamingLLM, sinks plus a recent window
            of the same total size).
        gqa: ``kv_head`` (native GQA cache, scores averaged over each KV head's query heads) or
            ``expand`` (the code's per-query-head cache).
        carry_tau: keep each layer's τ from one generation to the next (the code's behaviour).
    """

    budget: float
    heavy_share: float = 0.5
    allocation: str = "density"
    merge: bool = True
    exempt_layers: tuple[int, ...] | None = None
    sinks: int = 4
    alpha: float = 0.5
    beta: float = 0.5
    heavy_hitters: bool = True
    gqa: str = "kv_head"
    carry_tau: bool = False

    def __post_init__(self) -> None:
        if not self.budget > 0:
            raise UsageError(f"KV budget must be > 0, got {self.budget}")
        if not 0 <= self.heavy_share <= 1:
            raise UsageError(f"heavy_share must be in [0, 1], got {self.heavy_share}")
        if self.allocation not in ALLOCATIONS:
            raise UsageError(f"allocation must be one of {', '.join(ALLOCATIONS)}, got {self.allocation!r}")
        if self.gqa not in GQA_MODES:
            raise UsageError(f"gqa must be one of {', '.join(GQA_MODES)}, got {self.gqa!r}")
        if self.sinks < 0:
            raise UsageError(f"sinks must be >= 0, got {self.sinks}")

    def exempt(self, n_layers: int) -> set[int]:
        """Indices of the layers kept whole."""
        chosen = (0, 1, -1) if self.exempt_layers is None else self.exempt_layers
        return {i % n_layers for i in chosen if -n_layers <= i < n_layers}

    def sizes(self, prompt_len: torch.Tensor, ratio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N_hh, N_rec)`` per sequence from prompt lengths and the layer's ratios (floors, as the code)."""
        base = (prompt_len.double() + 1.0) * ratio.double()
        heavy = torch.floor(base * self.heavy_share).long()
        recent = torch.floor(base * (1.0 - self.heavy_share)).long()
        if not self.heavy_hitters:  # StreamingLLM: the sinks, then the most recent tokens
            total = heavy + recent
            heavy = total.clamp(max=self.sinks)
            recent = total - heavy
        return heavy, recent


class D2OLayer(DynamicLayer):
    """One layer's compressing cache (``[b, h, slots, d]`` keys and values plus per-slot bookkeeping)."""

    def __init__(self, cache: D2OCache, index: int, exempt: bool) -> None:
        super().__init__()
        self.cache = cache
        self.index = index
        self.exempt = exempt
        self.expanded = cache.settings.gqa == "expand"
        self.valid: torch.Tensor | None = None
        self.pos: torch.Tensor | None = None
        self.score: torch.Tensor | None = None
        self.prompt_len: torch.Tensor | None = None
        self.next_pos: torch.Tensor | None = None
        self.n_heavy: torch.Tensor | None = None
        self.n_recent: torch.Tensor | None = None
        self.tau: torch.Tensor | None = None
        self.seen = 0
        self.compressed = False

    # ---- transformers' cache-layer interface --------------------------------------------------
    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if self.expanded:
            key_states = key_states.repeat_interleave(self.cache.groups, dim=1)
            value_states = value_states.repeat_interleave(self.cache.groups, dim=1)
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        b, h, q, _ = key_states.shape
        device = key_states.device
        if self.next_pos is None:  # prefill: positions and padding are set when its attention is observed
            pos = torch.arange(q, device=device).expand(b, h, q)
        else:
            pos = (self.next_pos[:, None, None] + torch.arange(q, device=device)).expand(b, h, q)
            self.next_pos = self.next_pos + q
        fresh_valid = torch.ones(b, h, q, dtype=torch.bool, device=device)
        fresh_score = torch.zeros(b, h, q, dtype=torch.float32, device=device)
        self.keys = torch.cat([self.keys, key_states], dim=-2)
        self.values = torch.cat([self.values, value_states], dim=-2)
        self.valid = fresh_valid if self.valid is None else torch.cat([self.valid, fresh_valid], dim=-1)
        self.pos = pos.clone() if self.pos is None else torch.cat([self.pos, pos], dim=-1)
        self.score = fresh_score if self.score is None else torch.cat([self.score, fresh_score], dim=-1)
        self.seen += q
        self.cache.note_bytes()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        """Tokens seen so far (what masks and positions count), not the slots held."""
        return self.seen

    def reset(self) -> None:
        super().reset()
        self.valid = self.pos = self.score = self.prompt_len = self.next_pos = None
        self.n_heavy = self.n_recent = self.tau = None
        self.seen = 0
        self.compressed = False

    # ---- the attention hook's interface ---------------------------------------------------------
    def attention_mask(self, provided: torch.Tensor | None, query: torch.Tensor) -> torch.Tensor | None:
        """The model's mask until this layer has evicted anything; then ``[b, H, 1, slots]`` from ``valid``."""
        if not self.compressed:
            return provided
        if query.shape[-2] != 1:
            raise UsageError("the D2O cache decodes one token per step; multi-token decoding is not supported")
        valid = self.valid if self.expanded else self.valid.repeat_interleave(self.cache.groups, dim=1)  # type: ignore[union-attr]
        mask = torch.zeros(valid.shape[0], valid.shape[1], 1, valid.shape[2], dtype=query.dtype, device=query.device)
        return mask.masked_fill(~valid[:, :, None, :], torch.finfo(query.dtype).min)

    def observe(self, weights: torch.Tensor, provided: torch.Tensor | None) -> None:
        """Take this step's attention probabilities ``[b, H, q, slots]``; compress after a decode step."""
        if weights.shape[2] > 1:
            if self.prompt_len is not None:
                raise UsageError("the D2O cache needs the whole prompt in one forward (no chunked prefill or multi-token steps)")
            self._observe_prefill(weights, provided)
        elif not self.exempt:
            self._observe_decode(weights)

    def _to_cache_heads(self, per_query_head: torch.Tensor) -> torch.Tensor:
        """``[b, H, L]`` → ``[b, h, L]``: the mean over each KV head's query heads (native GQA)."""
        if self.expanded or self.cache.groups == 1:
            return per_query_head
        b, heads, length = per_query_head.shape
        return per_query_head.view(b, heads // self.cache.groups, self.cache.groups, length).mean(dim=2)

    def _observe_prefill(self, weights: torch.Tensor, provided: torch.Tensor | None) -> None:
        b, _, _, length = weights.shape
        if provided is None:
            key_valid = torch.ones(b, length, dtype=torch.bool, device=weights.device)
        elif provided.dtype == torch.bool:
            key_valid = provided[:, 0, -1, :]
        else:  # the last prompt token is real under left padding and sees every real token
            key_valid = provided[:, 0, -1, :] > torch.finfo(provided.dtype).min / 2
        col, density = density_scores(weights, key_valid, key_valid)
        heads = self.keys.shape[1]  # type: ignore[union-attr]
        pos = (key_valid.long().cumsum(dim=-1) - 1).masked_fill(~key_valid, -1)
        self.valid = key_valid[:, None, :].expand(b, heads, length).clone()
        self.pos = pos[:, None, :].expand(b, heads, length).clone()
        self.score = self._to_cache_heads(col) * self.valid
        self.prompt_len = key_valid.sum(dim=-1)
        self.next_pos = self.prompt_len.clone()
        self.cache.densities[self.index] = density
        carried = self.cache.initial_tau.get(self.index)
        self.tau = torch.full((b,), float("nan"), device=weights.device) if carried is None else torch.full((b,), carried, device=weights.device)

    def _observe_decode(self, weights: torch.Tensor) -> None:
        assert self.valid is not None and self.score is not None and self.pos is not None and self.tau is not None
        if self.n_heavy is None:
            self.n_heavy, self.n_recent = self.cache.settings.sizes(self.prompt_len, self.cache.ratios()[:, self.index])  # type: ignore[arg-type]
        self.score = self.score + self._to_cache_heads(weights[:, :, 0, :].float()) * self.valid
        keep = keep_mask(self.score, self.valid, self.pos, self.n_heavy, self.n_recent, self.cache.settings.sinks)  # type: ignore[arg-type]
        if torch.equal(keep, self.valid):
            return
        settings = self.cache.settings
        evicted = self.valid & ~keep
        self.keys, self.values, self.tau, merged = merge_evicted(self.keys, self.values, keep, evicted, self.tau,  # type: ignore[arg-type]
                                                                 settings.alpha, settings.beta, enabled=settings.merge)
        index, self.valid = compact(keep, self.pos)
        self.keys = gather_slots(self.keys, index)  # type: ignore[arg-type]
        self.values = gather_slots(self.values, index)  # type: ignore[arg-type]
        self.pos = gather_slots(self.pos, index)
        self.score = gather_slots(self.score, index)
        self.compressed = True
        self.cache.evicted += int(evicted.sum())
        self.cache.merged += merged
        self.cache.note_bytes()


class D2OCache(Cache):
    """A transformers ``Cache`` of :class:`D2OLayer`; one per generation call.

    Args:
        settings: the policy.
        n_layers / n_heads / n_kv_heads: the model's attention shape.
        initial_tau: per-layer τ to start from (``carry_tau``); empty = start afresh.
    """

    def __init__(self, settings: D2OSettings, n_layers: int, n_heads: int, n_kv_heads: int, initial_tau: dict[int, float] | None = None) -> None:
        self.settings = settings
        self.groups = n_heads // n_kv_heads
        self.initial_tau = dict(initial_tau or {})
        self.densities: dict[int, torch.Tensor] = {}
        self._ratios: torch.Tensor | None = None
        self.peak_bytes = 0
        self.evicted = 0
        self.merged = 0
        exempt = settings.exempt(n_layers)
        super().__init__(layers=[D2OLayer(self, i, i in exempt) for i in range(n_layers)])

    def ratios(self) -> torch.Tensor:
        """Per-sequence, per-layer ratios ``[b, L]``, allocated once from the prefill densities."""
        if self._ratios is None:
            if len(self.densities) != len(self.layers):
                raise RuntimeError(f"D2O allocation needs every layer's prefill density; have {len(self.densities)} of {len(self.layers)}")
            density = torch.stack([self.densities[i] for i in range(len(self.layers))], dim=1)
            self._ratios = layer_ratios(density, self.settings.budget, self.settings.allocation)
        return self._ratios

    def tensor_bytes(self) -> int:
        """Bytes of every layer's key and value tensors (padding and invalid slots included)."""
        return sum(layer.keys.numel() * layer.keys.element_size() * 2 for layer in self.layers if layer.is_initialized)  # type: ignore[union-attr]

    def note_bytes(self) -> None:
        self.peak_bytes = max(self.peak_bytes, self.tensor_bytes())

    def valid_entries(self) -> torch.Tensor:
        """Valid (token, head) entries per sequence, summed over layers: ``[b]``."""
        return sum(layer.valid.sum(dim=(1, 2)) for layer in self.layers if layer.valid is not None)  # type: ignore[union-attr, return-value]

    def taus(self) -> dict[int, float]:
        """Each compressed layer's τ averaged over the batch (what ``carry_tau`` hands to the next call)."""
        out = {}
        for layer in self.layers:
            if layer.tau is not None and bool(torch.isfinite(layer.tau).any()):  # type: ignore[union-attr]
                finite = layer.tau[torch.isfinite(layer.tau)]  # type: ignore[union-attr]
                out[layer.index] = float(finite.mean())  # type: ignore[union-attr]
        return out

    def layer_sizes(self) -> list[int]:
        """Slots held per layer (the tensors' length)."""
        return [int(layer.keys.shape[-2]) if layer.is_initialized else 0 for layer in self.layers]  # type: ignore[union-attr]


def realised_budget(cache: D2OCache) -> float:
    """Mean over sequences and compressed layers of ``(N_hh + N_rec) / (P + 1)``: the budget actually granted."""
    values = []
    for layer in cache.layers:
        if layer.n_heavy is not None and layer.prompt_len is not None:  # type: ignore[union-attr]
            values.append(((layer.n_heavy + layer.n_recent).double() / (layer.prompt_len.double() + 1)).mean())  # type: ignore[union-attr, operator]
    return float(torch.stack(values).mean()) if values else math.nan
