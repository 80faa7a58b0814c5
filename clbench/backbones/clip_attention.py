"""Multi-head attention with separate q, k, v and output linear layers.

``nn.MultiheadAttention`` keeps the query, key and value projections in one fused
``in_proj_weight`` parameter, so adapters (LoRA, MoRA, CoDyRA) cannot wrap them one by one.
:class:`SplitMultiheadAttention` holds the same weights as four ``nn.Linear`` layers
(``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``) and accepts the arguments open_clip passes to
``nn.MultiheadAttention`` (additive or boolean ``attn_mask``, ``key_padding_mask``,
``batch_first`` or sequence-first inputs), so it is a drop-in replacement whose outputs equal
the original's up to floating-point reassociation (tests check 1e-5).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class SplitMultiheadAttention(nn.Module):
    """Scaled dot-product multi-head attention over four separate linear projections.

    Args:
        embed_dim: model width (query and output size).
        num_heads: number of heads; ``embed_dim`` must be divisible by it.
        kdim: key input width (defaults to ``embed_dim``; cross-attention poolers differ).
        vdim: value input width (defaults to ``embed_dim``).
        bias: whether the projections have biases.
        dropout: attention-probability dropout (active in training mode only).
        batch_first: inputs are ``(N, L, E)`` when True, ``(L, N, E)`` otherwise.
    """

    def __init__(self, embed_dim: int, num_heads: int, *, kdim: int | None = None, vdim: int | None = None, bias: bool = True,
                 dropout: float = 0.0, batch_first: bool = False) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(kdim or embed_dim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(vdim or embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    @classmethod
    def from_multihead(cls, mha: nn.MultiheadAttention) -> SplitMultiheadAttention:
        """A module computing exactly what ``mha`` computes, holding copies of its weights."""
        if getattr(mha, "bias_k", None) is not None or getattr(mha, "add_zero_attn", False):
            raise ValueError("attention with add_bias_kv or add_zero_attn is not supported")
        has_bias = mha.in_proj_bias is not None
        split = cls(mha.embed_dim, mha.num_heads, kdim=mha.kdim, vdim=mha.vdim, bias=has_bias, dropout=mha.dropout,
                    batch_first=mha.batch_first)
        ref = mha.out_proj.weight
        split.to(device=ref.device, dtype=ref.dtype)
        d = mha.embed_dim
        with torch.no_grad():
            if mha._qkv_same_embed_dim:
                weights = mha.in_proj_weight.split(d, dim=0)
            else:
                weights = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
            for layer, weight in zip((split.q_proj, split.k_proj, split.v_proj), weights, strict=True):
                layer.weight.copy_(weight)
            if has_bias:
                for layer, bias in zip((split.q_proj, split.k_proj, split.v_proj), mha.in_proj_bias.split(d), strict=True):
                    layer.bias.copy_(bias)
            split.out_proj.weight.copy_(mha.out_proj.weight)
            if mha.out_proj.bias is not None and split.out_proj.bias is not None:
                split.out_proj.bias.copy_(mha.out_proj.bias)
        split.requires_grad_(any(p.requires_grad for p in mha.parameters()))  # keep a frozen model frozen
        split.train(mha.training)
        return split

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, L, E)`` -> ``(N, H, L, E/H)``."""
        n, length, _ = x.shape
        return x.view(n, length, self.num_heads, self.head_dim).transpose(1, 2)

    def _additive_mask(self, attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None, n: int, length: int, source: int,
                       dtype: torch.dtype) -> torch.Tensor | None:
        """Combine ``attn_mask`` and ``key_padding_mask`` into one additive (N, H|1, L, S) mask."""
        mask = None
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:  # True = not allowed, as nn.MultiheadAttention reads it
                attn_mask = torch.zeros_like(attn_mask, dtype=dtype).masked_fill(attn_mask, float("-inf"))
            attn_mask = attn_mask.to(dtype)
            mask = attn_mask.view(n, self.num_heads, length, source) if attn_mask.dim() == 3 else attn_mask.view(1, 1, length, source)
        if key_padding_mask is not None:
            if key_padding_mask.dtype == torch.bool:
                padding = torch.zeros(key_padding_mask.shape, dtype=dtype, device=key_padding_mask.device).masked_fill(key_padding_mask, float("-inf"))
            else:
                padding = key_padding_mask.to(dtype)
            padding = padding.view(n, 1, 1, source)
            mask = padding if mask is None else mask + padding
        return mask

    def forward(self, query: torch.Tensor, key: torch.Tensor | None = None, value: torch.Tensor | None = None,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = False, attn_mask: torch.Tensor | None = None,
                average_attn_weights: bool = True, is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend ``query`` to ``key``/``value`` (defaults: self-attention).

        Mirrors ``nn.MultiheadAttention.forward``; returns ``(output, weights)`` where weights
        are returned (averaged over heads unless ``average_attn_weights`` is False) only when
        ``need_weights`` is True, as the original does.
        """
        key = query if key is None else key
        value = key if value is None else value
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = (t.unsqueeze(1 if not self.batch_first else 0) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        n, length, _ = query.shape
        source = key.shape[1]
        q = self._heads(self.q_proj(query))
        k = self._heads(self.k_proj(key))
        v = self._heads(self.v_proj(value))
        mask = self._additive_mask(attn_mask, key_padding_mask, n, length, source, q.dtype)
        if is_causal and mask is None:
            mask = torch.full((length, source), float("-inf"), dtype=q.dtype, device=q.device).triu_(1).view(1, 1, length, source)
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:  # explicit softmax so the probabilities can be returned
            scores = (q * (1.0 / math.sqrt(self.head_dim))) @ k.transpose(-2, -1)
            if mask is not None:
                scores = scores + mask
            probs = F.dropout(scores.softmax(dim=-1), p=dropout, training=dropout > 0)
            context = probs @ v
            weights = probs.mean(dim=1) if average_attn_weights else probs
        else:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        out = self.out_proj(context.transpose(1, 2).reshape(n, length, self.embed_dim))
        if not self.batch_first:
            out = out.transpose(0, 1)
        if unbatched:
            out = out.squeeze(1 if not self.batch_first else 0)
            weights = weights.squeeze(0) if weights is not None else None
        return out, weights


def split_attention_modules(root: nn.Module) -> list[str]:
    """Replace every ``nn.MultiheadAttention`` under ``root`` in place; returns their names."""
    names = [name for name, module in root.named_modules() if isinstance(module, nn.MultiheadAttention)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        setattr(parent, child, SplitMultiheadAttention.from_multihead(getattr(parent, child)))
    return names


def fused_state_dict(root: nn.Module) -> dict[str, torch.Tensor]:
    """``root``'s state dict in ``nn.MultiheadAttention``'s layout (the inverse of the split).

    Each :class:`SplitMultiheadAttention` at ``P`` contributes ``P.in_proj_weight`` (q, k, v
    stacked; or ``P.q_proj_weight``... when key/value widths differ, as ``nn.MultiheadAttention``
    stores them), ``P.in_proj_bias`` and ``P.out_proj.*``, so the dict loads into a model
    open_clip builds (how ``clbench export --format open_clip`` writes CLIP weights).
    """
    state = {k: v.detach() for k, v in root.state_dict().items()}
    for name, module in root.named_modules():
        if not isinstance(module, SplitMultiheadAttention):
            continue
        prefix = f"{name}." if name else ""
        projections = {p: state.pop(f"{prefix}{p}_proj.weight") for p in ("q", "k", "v")}
        biases = [state.pop(f"{prefix}{p}_proj.bias", None) for p in ("q", "k", "v")]
        if all(w.shape[1] == module.embed_dim for w in projections.values()):
            state[f"{prefix}in_proj_weight"] = torch.cat(list(projections.values()), dim=0)
        else:
            state.update({f"{prefix}{p}_proj_weight": w for p, w in projections.items()})
        if all(b is not None for b in biases):
            state[f"{prefix}in_proj_bias"] = torch.cat(biases, dim=0)  # type: ignore[arg-type]
    return state
