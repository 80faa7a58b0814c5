"""KV-cache policies for evaluation-time generation, and what they measure.

A policy is chosen by a spec string (``--kv-cache`` on ``clbench run``):

* ``full``: the model's own cache and attention (nothing changes);
* ``d2o:B``: D2O at budget ρ = B (a fraction of each prompt's length, split evenly into heavy
  hitters and a recent window; layer allocation by attention density; merging);
* ``h2o:B`` and ``streaming:B``: the baselines at the same budget (uniform allocation, no merging,
  no exempt layers; StreamingLLM keeps only the sinks and a recent window);
* ``d2o-faithful:B``: D2O as released (GQA expanded to query heads, τ carried across prompts).

Budgets of 1 or more keep the full cache (an exact no-op). A backbone that generates text calls
:meth:`KVCachePolicy.generation` around ``model.generate`` and, when :attr:`~KVCachePolicy.compare_full`
is set, also scores each generation batch with the full cache and reports both through
:meth:`KVCachePolicy.record_scores`. :meth:`KVCachePolicy.take_stats` returns (and clears) what was
measured since the last call: KV bytes kept against a full cache's, peak tensor bytes, evicted and
merged entries, accuracy per task under the policy and under the full cache, and their ratio.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from clbench.errors import UsageError
from clbench.kvcache.attention import observing
from clbench.kvcache.d2o import D2OCache, D2OSettings, realised_budget

POLICY_HELP = "full, d2o:BUDGET, h2o:BUDGET, streaming:BUDGET or d2o-faithful:BUDGET (0 < BUDGET; BUDGET >= 1 keeps the full cache)"


class KVCachePolicy:
    """The full cache: generation is left exactly as the model does it."""

    def __init__(self, spec: str = "full") -> None:
        self.spec = spec

    @property
    def is_full(self) -> bool:
        return True

    @property
    def compare_full(self) -> bool:
        """Whether the backbone should also score every generation batch with the full cache."""
        return False

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for results files."""
        return {"policy": self.spec}

    @contextlib.contextmanager
    def generation(self, model: nn.Module, attention_mask: torch.Tensor) -> Iterator[Any]:
        """Context for one ``generate`` call; yields the cache object to pass (``None``: the model's own)."""
        yield None

    @contextlib.contextmanager
    def reference(self, model: nn.Module) -> Iterator[Any]:
        """Context for a full-cache reference ``generate`` call, on the same eager kernel as the policy's."""
        with observing(model, None):
            yield None

    def record_scores(self, task: str, scores: torch.Tensor, reference: torch.Tensor) -> None:
        """Per-example scores of one batch under the policy and under the full cache."""

    def take_stats(self) -> dict[str, Any]:
        """What was measured since the last call (then cleared); empty for the full cache."""
        return {}


class EvictingPolicy(KVCachePolicy):
    """A D2O-family policy (:class:`~clbench.kvcache.d2o.D2OSettings`) with its measurements."""

    def __init__(self, spec: str, settings: D2OSettings, compare_full: bool = True) -> None:
        super().__init__(spec)
        self.settings = settings
        self._compare = compare_full
        self._taus: dict[int, float] = {}
        self._reset()

    @property
    def is_full(self) -> bool:
        return False

    @property
    def compare_full(self) -> bool:
        return self._compare

    def describe(self) -> dict[str, Any]:
        return {"policy": self.spec, "settings": dataclasses.asdict(self.settings)}

    def _reset(self) -> None:
        self._totals: dict[str, float] = {"generations": 0, "sequences": 0, "kv_bytes_full": 0, "kv_bytes_kept": 0, "kv_tensor_bytes_final": 0,
                                          "evicted_entries": 0, "merged_entries": 0}
        self._peak = 0
        self._budgets: list[float] = []
        self._scores: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def generation(self, model: nn.Module, attention_mask: torch.Tensor) -> Iterator[Any]:
        config = model.config.get_text_config(decoder=True)
        heads = int(config.num_attention_heads)
        kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
        cache = D2OCache(self.settings, int(config.num_hidden_layers), heads, kv_heads, self._taus if self.settings.carry_tau else None)
        with observing(model, cache):
            yield cache
        self._collect(cache, attention_mask, kv_heads)
        if self.settings.carry_tau:
            self._taus.update(cache.taus())

    def _collect(self, cache: D2OCache, attention_mask: torch.Tensor, kv_heads: int) -> None:
        layers = [layer for layer in cache.layers if layer.is_initialized]
        if not layers:
            return
        keys = layers[0].keys
        per_entry = keys.shape[-1] * 2 * keys.element_size()  # key + value of one head and token
        pads = (attention_mask.shape[1] - attention_mask.sum(dim=-1)).to(torch.long).cpu()
        tokens = (layers[0].seen - pads).clamp(min=0)  # tokens a full cache holds per sequence and layer
        t = self._totals
        t["generations"] += 1
        t["sequences"] += int(tokens.numel())
        t["kv_bytes_full"] += int(tokens.sum()) * len(layers) * kv_heads * per_entry
        t["kv_bytes_kept"] += int(cache.valid_entries().sum()) * per_entry
        t["kv_tensor_bytes_final"] += cache.tensor_bytes()
        t["evicted_entries"] += cache.evicted
        t["merged_entries"] += cache.merged
        self._peak = max(self._peak, cache.peak_bytes)
        budget = realised_budget(cache)
        if not math.isnan(budget):
            self._budgets.append(budget)

    def record_scores(self, task: str, scores: torch.Tensor, reference: torch.Tensor) -> None:
        entry = self._scores.setdefault(task, [0.0, 0.0, 0.0])
        entry[0] += float(scores.double().sum())
        entry[1] += float(reference.double().sum())
        entry[2] += float(scores.numel())

    def take_stats(self) -> dict[str, Any]:
        t = self._totals
        if not t["generations"]:
            self._reset()
            return {}
        out: dict[str, Any] = {"policy": self.spec, **{k: int(v) for k, v in t.items()}, "kv_tensor_bytes_peak": self._peak}
        out["kv_kept_fraction"] = round(t["kv_bytes_kept"] / t["kv_bytes_full"], 6) if t["kv_bytes_full"] else None
        out["kv_saved_fraction"] = None if out["kv_kept_fraction"] is None else round(1.0 - out["kv_kept_fraction"], 6)
        out["realised_budget"] = round(sum(self._budgets) / len(self._budgets), 6) if self._budgets else None
        if self._scores:
            accuracy = {k: round(v[0] / v[2], 6) for k, v in self._scores.items() if v[2]}
            reference = {k: round(v[1] / v[2], 6) for k, v in self._scores.items() if v[2]}
            retained = {k: round(accuracy[k] / reference[k], 6) for k in accuracy if reference[k] > 0}
            out.update(accuracy=accuracy, accuracy_full_cache=reference, retained_by_task=retained,
                       retained_accuracy=round(sum(retained.values()) / len(retained), 6) if retained else None)
        self._reset()
        return out


def parse_kv_cache(spec: str | None) -> KVCachePolicy:
    """The policy named by ``spec`` (see the module docstring); a malformed spec is a :class:`UsageError`."""
    if spec is not None and not spec.strip():
        raise UsageError(f"--kv-cache is empty; give {POLICY_HELP}")
    text = (spec or "full").strip()
    if text == "full":
        return KVCachePolicy()
    name, sep, value = text.partition(":")
    try:
        budget = float(value)
    except ValueError:
        budget = math.nan
    if not sep or name not in ("d2o", "h2o", "streaming", "d2o-faithful") or not budget > 0 or not math.isfinite(budget):
        shown = text if len(text) <= 60 else f"{text[:40]}...({len(text)} characters)"
        raise UsageError(f"bad --kv-cache {shown!r}: expected {POLICY_HELP}")
    text = f"{name}:{budget!r}"  # one spelling per policy (d2o:.2 and d2o:0.20 are d2o:0.2): one run folder, one resumable identity
    if budget >= 1:
        return KVCachePolicy(text)  # the full cache: flooring would still evict a token or two
    settings = {
        "d2o": D2OSettings(budget),
        "d2o-faithful": D2OSettings(budget, gqa="expand", carry_tau=True),
        "h2o": D2OSettings(budget, allocation="uniform", merge=False, exempt_layers=()),
        "streaming": D2OSettings(budget, allocation="uniform", merge=False, exempt_layers=(), heavy_hitters=False),
    }[name]
    return EvictingPolicy(text, settings)


def policy_slug(spec: str) -> str:
    """A file-name-safe form of a policy spec (``d2o:0.2`` → ``d2o-0.2``)."""
    return "".join(c if c.isalnum() or c in ".-" else "-" for c in spec)
