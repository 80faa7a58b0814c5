"""Causal language models from transformers: answer-only loss, scoring by the task's metric.

Specs are ``hf:<dir | file.gguf | pypi:package | org/name>`` (resolved and loaded by
:mod:`clbench.backbones.hf_loading`); :func:`clbench.backbones.hf.build_hf` builds this backbone
unless the config says ``is_encoder_decoder``, which picks :mod:`clbench.backbones.hf_seq2seq`.

Examples are ``{"prompt", "answer", "task_id"}`` dicts with optional ``answer_prefix``
(assistant text before the scored answer), ``source`` (the input text SARI compares against;
default: the prompt), ``max_new_tokens`` (generation budget of the task), ``max_prompt_tokens``
(left truncation of the prompt; the sequence is capped at ``max_length`` = 1536 tokens, TRACE's
1024 + 512) and ``chat`` (``False`` feeds bos + the prompt verbatim, as TRACE does). The prompt is the
user turn of the tokenizer's chat template; the target is the answer followed by the end-of-turn
(eos) token, which is trained but not required for exact match.

Scoring follows the experience's metric (:class:`clbench.backbones.hf_generation.GenerationScoring`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from clbench.api.adapters import TRANSFORMER_PLACEMENTS
from clbench.api.backbone import Backbone, Batch
from clbench.api.stream import Experience
from clbench.backbones.hf_generation import GenerationScoring, greedy_config, text_fields
from clbench.backbones.hf_loading import load_folder, load_gguf, load_hub
from clbench.backbones.llm_eval import EvalPlans, greedy_decode, left_pad
from clbench.errors import UsageError

if TYPE_CHECKING:
    from clbench.kvcache import KVCachePolicy


class CausalLMBackbone(GenerationScoring, Backbone):
    """A causal LM trained with answer-only cross-entropy and scored by the task's metric."""

    kind = "llm"
    target_patterns = {
        "q": ("*q_proj",), "k": ("*k_proj",), "v": ("*v_proj",), "o": ("*o_proj",),
        "fc": ("*gate_proj", "*up_proj"), "proj": ("*down_proj",),
    }
    adapter_placements = TRANSFORMER_PLACEMENTS

    def __init__(self, spec: str, model: nn.Module, tokenizer: Any, *, max_length: int = 1536, padding_side: str = "right") -> None:
        super().__init__(spec, model)
        if padding_side not in ("left", "right"):
            raise UsageError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.padding_side = padding_side
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.pad_id = int(tokenizer.pad_token_id)
        self.eos_id = tokenizer.eos_token_id
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))
        self.kv_policy: KVCachePolicy | None = None
        self._eval_plans = EvalPlans()

    def set_kv_policy(self, policy: KVCachePolicy | None) -> None:
        """Generate under ``policy`` (a :mod:`clbench.kvcache` KV-cache policy; ``None``: the model's own cache)."""
        self.kv_policy = None if policy is None or policy.is_full else policy

    def fsdp_units(self) -> tuple[nn.Module, list[nn.Module], list[nn.Parameter]]:
        """What ``--fsdp`` shards (:func:`clbench.fsdp.shard_model`): the decoder (every forward, the
        training loss's and generation's, runs through it), its decoder layers (the classes the
        model names in ``_no_split_modules``, the units transformers keeps whole when it splits a
        model over devices), and the parameters to leave whole: the output head's, which many
        models tie to the input embedding inside the decoder."""
        decoder = self.model.get_decoder() if hasattr(self.model, "get_decoder") else None
        unit_names = set(getattr(self.model, "_no_split_modules", None) or ())
        layers = [m for m in decoder.modules() if type(m).__name__ in unit_names] if decoder is not None else []
        if decoder is None or decoder is self.model or not layers:
            raise UsageError(f"--fsdp cannot shard {self.spec}: transformers names no decoder layers for {type(self.model).__name__}; "
                             "run it without --fsdp")
        head = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        return decoder, layers, list(head.parameters()) if head is not None else []

    # ---- formatting -----------------------------------------------------------------------
    def prompt_text(self, example: dict[str, Any]) -> str:
        """The text before the scored answer: chat-formatted user turn plus any answer prefix."""
        prompt = str(example["prompt"])
        if not example.get("chat", True):
            # Verbatim, as TRACE's collator feeds it: the tokenizer's bos (which a chat template
            # would have supplied), the prompt, then the answer with no separator.
            text = (self.tokenizer.bos_token or "") + prompt
        elif self.has_chat_template:
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
        else:
            text = prompt + "\n"
        return text + str(example.get("answer_prefix") or "")

    def answer_text(self, example: dict[str, Any]) -> str:
        """The scored continuation: after a non-empty answer prefix it starts with one space."""
        answer = str(example["answer"]).strip()
        prefix = str(example.get("answer_prefix") or "")
        return " " + answer if prefix and not prefix[-1].isspace() else answer

    def encode(self, example: dict[str, Any]) -> tuple[list[int], list[int]]:
        """Prompt ids and answer ids (without eos), tokenized separately so the boundary is exact."""
        prompt_ids = self.tokenizer(self.prompt_text(example), add_special_tokens=False)["input_ids"]
        answer_ids = self.tokenizer(self.answer_text(example), add_special_tokens=False)["input_ids"]
        return list(prompt_ids), list(answer_ids)

    def collate(self, items: Any) -> Batch:
        """Pad examples into ``input_ids``, ``attention_mask``, ``labels`` (-100 off the target),
        ``answer_mask`` (scored answer tokens, eos excluded) and ``task_id``, plus the texts and
        each prompt's token ids (``prompt_ids``, so generation does not tokenize again)."""
        if isinstance(items, dict):
            return items
        return self._pad(items, [self.encode(ex) for ex in items])

    def _pad(self, items: list[dict[str, Any]], encoded: list[tuple[list[int], list[int]]]) -> Batch:
        """The batch of :meth:`collate` from already tokenized ``(prompt_ids, answer_ids)`` pairs."""
        rows = []
        for ex, (prompt_ids, answer_ids) in zip(items, encoded, strict=True):
            target = answer_ids + ([self.eos_id] if self.eos_id is not None else [])
            keep = max(min(self.max_length - len(target), int(ex.get("max_prompt_tokens") or self.max_length)), 1)
            rows.append((prompt_ids[-keep:], target, len(answer_ids)))  # truncate prompts from the left
        width = max(len(p) + len(t) for p, t, _ in rows)
        n = len(rows)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        labels = torch.full((n, width), -100, dtype=torch.long)
        answer_mask = torch.zeros((n, width), dtype=torch.bool)
        for i, (prompt_ids, target, n_answer) in enumerate(rows):
            length = len(prompt_ids) + len(target)
            start = width - length if self.padding_side == "left" else 0
            input_ids[i, start:start + length] = torch.tensor(prompt_ids + target)
            attention[i, start:start + length] = 1
            a = start + len(prompt_ids)
            labels[i, a:a + len(target)] = torch.tensor(target)
            answer_mask[i, a:a + n_answer] = True
        task_id = torch.tensor([int(ex.get("task_id", 0)) for ex in items], dtype=torch.long)
        batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels, "answer_mask": answer_mask, "task_id": task_id}
        batch.update(text_fields(items, [self.prompt_text(ex) for ex in items]))
        batch["prompt_ids"] = [p for p, _ in encoded]
        return batch

    def eval_batches(self, dataset: Dataset[Any], batch_size: int,
                     loader_kwargs: dict[str, Any] | None = None) -> Iterator[tuple[list[int] | None, Batch]]:
        """Test batches tokenized once per run and grouped by length, longest first (see
        :func:`clbench.backbones.llm_eval.length_sorted_batches`)."""
        return iter(self._eval_plans.get(dataset, batch_size, self.encode, self._pad))

    # ---- model calls ----------------------------------------------------------------------
    def _logits_at(self, batch: Batch, targets: torch.Tensor) -> torch.Tensor:
        """Logits predicting the tokens where ``targets`` (a ``[B, T]`` bool mask) is set, as
        ``[N, vocab]`` in batch order; the lm head runs only at those positions."""
        mask = batch["attention_mask"]
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # correct positions under left padding
        predict = torch.zeros_like(targets)
        predict[:, :-1] = targets[:, 1:]  # position t predicts token t+1
        decoder = self.model.get_decoder() if hasattr(self.model, "get_decoder") else None
        head = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        if decoder is not None and head is not None and decoder is not self.model:
            hidden = decoder(input_ids=batch["input_ids"], attention_mask=mask, position_ids=position_ids).last_hidden_state
            return head(hidden[predict])
        logits = self.model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=position_ids).logits
        return logits[predict]

    def loss(self, batch: Batch) -> torch.Tensor:
        """Cross-entropy on the target tokens (answer and eos), averaged over the batch's tokens."""
        targets = batch["labels"] != -100
        logits = self._logits_at(batch, targets)
        return F.cross_entropy(logits.float(), batch["labels"][targets])

    def outputs(self, batch: Batch) -> torch.Tensor:
        """Logits at the target positions, ``[N, vocab]`` (same rows as :meth:`loss` uses)."""
        return self._logits_at(batch, batch["labels"] != -100)

    def teacher_forced_match(self, batch: Batch) -> torch.Tensor:
        """1.0 where every answer token (eos excluded) is the argmax given the gold prefix."""
        answer = batch["answer_mask"]
        with torch.no_grad():
            logits = self._logits_at(batch, answer)
            hits = (logits.argmax(-1) == batch["input_ids"][answer]).float()
        rows = torch.arange(answer.shape[0], device=answer.device).unsqueeze(1).expand_as(answer)[answer]
        wrong = torch.zeros(answer.shape[0], device=hits.device).index_add_(0, rows, 1.0 - hits)
        return (wrong == 0).float()

    @torch.no_grad()
    def generate_texts(self, batch: Batch, use_policy: bool = True) -> list[str]:
        """Greedy continuations of the batch's prompts (left-padded), decoded without specials.

        With the model's own cache, :func:`clbench.backbones.llm_eval.greedy_decode` drops each
        sequence from the batch (and its KV cache) at its eos. Under a KV-cache policy
        (``use_policy=False``: its full-cache reference) ``model.generate`` runs with the
        policy's cache, every sequence to the longest one's end, as the policy expects.
        """
        budget = int(batch["max_new_tokens"])
        keep = max(min(self.max_length - budget, int(batch["max_prompt_tokens"])), 1)
        prompt_ids = batch.get("prompt_ids") or [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in batch["prompt_text"]]
        prompts = [list(ids)[-keep:] for ids in prompt_ids]
        policy = self.kv_policy
        if policy is None:
            eos = [] if self.eos_id is None else [int(self.eos_id)]
            tokens = greedy_decode(self.model, prompts, budget, self.pad_id, eos, self.device)
            return self.tokenizer.batch_decode(tokens, skip_special_tokens=True)
        input_ids, attention = left_pad(prompts, self.pad_id)
        attention = attention.to(self.device)
        # the policy's cache, or its full-cache reference on the same attention kernel
        context = policy.generation(self.model, attention) if use_policy else policy.reference(self.model)
        with context as cache:
            extra = {"cache": cache} if cache is not None else {}
            out = self.model.generate(input_ids=input_ids.to(self.device), attention_mask=attention,
                                      generation_config=greedy_config(self.tokenizer, budget, self.pad_id), **extra)
        return self.tokenizer.batch_decode(out[:, input_ids.shape[1]:], skip_special_tokens=True)

    def score(self, batch: Batch, experience: Experience) -> torch.Tensor:
        """As :meth:`GenerationScoring.score`; under a KV-cache policy that compares with the full
        cache, the batch is also generated with the full cache and both scores go to the policy."""
        scores = super().score(batch, experience)
        policy = self.kv_policy
        if policy is not None and policy.compare_full and experience.metric != "exact_match":
            reference = self.score_texts(batch, experience, self.generate_texts(batch, use_policy=False))
            policy.record_scores(experience.name, scores, reference)
        return scores


def build_causal_from(spec: str, kind: str, source: Path | str, *, allow_download: bool) -> CausalLMBackbone:
    """Load a resolved GGUF file, folder or hub id (see :func:`clbench.backbones.hf_loading.resolve_source`)."""
    if kind == "hub":
        model, tokenizer = load_hub(spec, str(source), allow_download=allow_download)
    elif kind == "gguf":
        model, tokenizer = load_gguf(spec, Path(source))
    else:
        model, tokenizer = load_folder(spec, source, local_files_only=True)
    return CausalLMBackbone(spec, model, tokenizer)
