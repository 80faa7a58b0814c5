"""Evaluation helpers for language-model backbones: batches planned once, greedy decoding with early exit.

An accuracy matrix evaluates every task after every task, so an LLM run scores each test set
T + 1 times. Two things make that cheap:

* :class:`EvalPlans` tokenizes a test set once per run and groups its examples by length,
  longest first (the first batch is the largest, so memory peaks at once; later batches carry
  little padding). The plan keeps the dataset indices of every batch, so the runner puts the
  scores back in test order and ``examples.npz`` stays aligned with the test set.
* :func:`greedy_decode` is greedy generation on the model's KV cache in which a sequence leaves
  the batch (and the cache) at its eos, instead of being padded until the longest one ends as
  ``model.generate`` does.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

Batch = dict[str, Any]
Encoded = tuple[list[int], list[int]]


def length_sorted_batches(encoded: Sequence[Encoded], batch_size: int) -> list[list[int]]:
    """Dataset indices grouped into batches of ``batch_size``, longest (prompt + answer) first.

    The sort is stable, so examples of equal length keep their test order.
    """
    order = sorted(range(len(encoded)), key=lambda i: -(len(encoded[i][0]) + len(encoded[i][1])))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


class EvalPlans:
    """Collated evaluation batches per test set, built on first use and kept for the run.

    A plan is keyed by the dataset object (and the batch size); the token ids it holds are a
    few bytes per token, so a run keeps every task's plan.
    """

    def __init__(self) -> None:
        self._plans: dict[int, tuple[Dataset[Any], int, list[tuple[list[int], Batch]]]] = {}

    def get(self, dataset: Dataset[Any], batch_size: int, encode: Callable[[dict[str, Any]], Encoded],
            pad: Callable[[list[dict[str, Any]], list[Encoded]], Batch]) -> list[tuple[list[int], Batch]]:
        """The ``(indices, batch)`` pairs of ``dataset``: ``encode`` tokenizes one example, ``pad`` collates."""
        entry = self._plans.get(id(dataset))
        if entry is not None and entry[0] is dataset and entry[1] == batch_size:
            return entry[2]
        items = [dataset[i] for i in range(len(dataset))]  # type: ignore[arg-type]
        encoded = [encode(ex) for ex in items]
        plan = [(idx, pad([items[i] for i in idx], [encoded[i] for i in idx])) for idx in length_sorted_batches(encoded, batch_size)]
        self._plans[id(dataset)] = (dataset, batch_size, plan)
        return plan


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of left-padded prompts (generation continues on the right)."""
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, ids in enumerate(prompts):
        input_ids[i, width - len(ids):] = torch.tensor(list(ids), dtype=torch.long)
        attention[i, width - len(ids):] = 1
    return input_ids, attention


@torch.no_grad()
def greedy_decode(model: nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int, pad_id: int, eos_ids: Sequence[int],
                  device: torch.device) -> list[list[int]]:
    """Greedy continuations (token ids, eos included when reached) of ``prompts``.

    One prefill on the left-padded batch, then one token per step on the model's KV cache
    (``DynamicCache``). A sequence that emits an eos leaves the batch: its rows of the cache,
    attention mask and positions are dropped, so the remaining steps cost only what is still
    being generated. The tokens equal ``model.generate(do_sample=False)``'s up to each eos.
    """
    from transformers import DynamicCache

    input_ids, attention = left_pad(prompts, pad_id)
    input_ids, attention = input_ids.to(device), attention.to(device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)  # correct positions under left padding
    cache = DynamicCache()
    # the lm head only at the last position, where the model supports it (the vocabulary projection dominates a prefill)
    accepted = inspect.signature(model.forward).parameters
    last_only = {"logits_to_keep": 1} if "logits_to_keep" in accepted else {}
    cache_key = "cache" if "cache" in accepted else "past_key_values"  # transformers 5 renames the argument
    out = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True, **{cache_key: cache}, **last_only)
    alive = torch.arange(len(prompts), device=device)
    last = positions[:, -1]
    eos = torch.tensor(list(eos_ids), dtype=torch.long, device=device)
    generated: list[list[int]] = [[] for _ in prompts]
    for step in range(max_new_tokens):
        tokens = out.logits[:, -1].argmax(-1)
        for row, token in zip(alive.tolist(), tokens.tolist(), strict=True):
            generated[row].append(token)
        if step == max_new_tokens - 1:
            break
        running = ~torch.isin(tokens, eos)
        if not bool(running.all()):
            if not bool(running.any()):
                break
            keep = running.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            alive, tokens, attention, last = alive[keep], tokens[keep], attention[keep], last[keep]
        attention = torch.cat([attention, attention.new_ones((len(alive), 1))], dim=1)
        last = last + 1
        out = model(input_ids=tokens.unsqueeze(1), attention_mask=attention, position_ids=last.unsqueeze(1), use_cache=True,
                    **{cache_key: cache})
    return generated
