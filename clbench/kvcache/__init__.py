"""KV-cache policies for evaluation-time generation on causal LMs: the full cache and D2O.

:func:`parse_kv_cache` turns a spec (``full``, ``d2o:0.2``, ``h2o:0.2``, ``streaming:0.2``,
``d2o-faithful:0.2``) into a :class:`KVCachePolicy`; a backbone that generates
(:class:`clbench.backbones.hf_causal.CausalLMBackbone`) takes one with ``set_kv_policy`` and wraps
each ``generate`` call in :meth:`KVCachePolicy.generation`. The D2O cache itself
(:mod:`clbench.kvcache.d2o`) is a transformers ``Cache``; the attention probabilities it scores
come from a registered attention implementation (:mod:`clbench.kvcache.attention`); the
arithmetic lives in :mod:`clbench.kvcache.selection`. See ``docs/strategies/d2o.md``.
"""

from clbench.kvcache.d2o import D2OCache, D2OSettings
from clbench.kvcache.policy import POLICY_HELP, EvictingPolicy, KVCachePolicy, parse_kv_cache, policy_slug

__all__ = ["POLICY_HELP", "D2OCache", "D2OSettings", "EvictingPolicy", "KVCachePolicy", "parse_kv_cache", "policy_slug"]
