"""The attention hook that lets a cache policy see attention probabilities, on transformers' interfaces.

D2O scores cache entries by the attention they receive, so it needs the softmax probabilities,
which only the eager kernel materialises. This module registers one attention implementation,
:data:`ATTENTION_NAME`, in transformers' ``AttentionInterface`` (with the eager mask builder in
``AttentionMaskInterface``). It runs the model's own ``eager_attention_forward`` (so outputs are
bitwise those of ``attn_implementation="eager"``), hands the probabilities to the active cache's
layer (:func:`active_cache`), and substitutes that layer's own mask once it has evicted entries
(then different layers hold different slots, which one model-level mask cannot describe).
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, Protocol

import torch
from torch import nn

ATTENTION_NAME = "clbench_kv"

_ACTIVE: contextvars.ContextVar[Any] = contextvars.ContextVar("clbench_kv_cache", default=None)


class ObservingLayer(Protocol):
    """What the hook needs from a cache layer."""

    expanded: bool
    is_initialized: bool

    def attention_mask(self, provided: torch.Tensor | None, query: torch.Tensor) -> torch.Tensor | None: ...

    def observe(self, weights: torch.Tensor, provided: torch.Tensor | None) -> None: ...


def active_cache() -> Any:
    """The cache whose layers observe attention right now (``None`` outside a policy's generation)."""
    return _ACTIVE.get()


@contextlib.contextmanager
def observing(model: nn.Module, cache: Any) -> Iterator[None]:
    """Route ``model``'s attention through the hook and ``cache``'s layers for the duration."""
    register()
    previous = model.config._attn_implementation
    token = _ACTIVE.set(cache)
    model.set_attn_implementation(ATTENTION_NAME)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)
        _ACTIVE.reset(token)


def model_eager_attention(module: nn.Module) -> Any:
    """The eager attention function of ``module``'s modeling file (Llama's when it defines none)."""
    fn = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if fn is None:
        from transformers.models.llama.modeling_llama import eager_attention_forward as fn
    return fn


def policy_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None,
                     scaling: float | None = None, dropout: float = 0.0, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention whose probabilities feed the active cache layer (see the module docstring)."""
    eager = model_eager_attention(module)
    cache = _ACTIVE.get()
    layer_idx = getattr(module, "layer_idx", None)
    layer: ObservingLayer | None = None
    if cache is not None and layer_idx is not None and layer_idx < len(cache.layers):
        layer = cache.layers[layer_idx]
    if layer is None or not hasattr(layer, "observe"):
        return eager(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    if not layer.is_initialized:
        raise RuntimeError("a KV-cache policy is active but its cache was not passed to the model (generate(..., cache=cache))")
    mask = layer.attention_mask(attention_mask, query)
    # With GQA expanded into the cache, keys already have one head per query head.
    target = SimpleNamespace(num_key_value_groups=1, training=module.training) if layer.expanded else module
    out, weights = eager(target, query, key, value, mask, scaling=scaling, dropout=dropout, **kwargs)
    layer.observe(weights, attention_mask)
    return out, weights


_REGISTERED = False


def register() -> None:
    """Register :data:`ATTENTION_NAME` with transformers (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTENTION_NAME, policy_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, eager_mask)
    _REGISTERED = True
