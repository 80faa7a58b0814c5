"""Encoder-decoder (T5-style) language models from transformers, as in O-LoRA's standard CL setup.

Spec forms: ``hf-seq2seq:<save_pretrained folder | org/name>`` names a seq2seq model explicitly
(and fails if its config is not encoder-decoder); ``hf:<folder | org/name>`` picks this backbone
automatically when the config says ``is_encoder_decoder`` (:mod:`clbench.backbones.hf`). Hub ids
load from the local Hugging Face cache only, unless downloads are allowed (``--allow-download`` /
``$CLBENCH_ALLOW_DOWNLOAD=1``; resolution and loading live in :mod:`clbench.backbones.hf_loading`).

Examples are the same ``{"prompt", "answer", "task_id"}`` dicts the causal backbone takes. The
prompt is the encoder input as written (O-LoRA feeds its instruction text to T5 with no chat
template), followed by eos and truncated to ``max_source_length`` tokens (512 in O-LoRA); the
decoder target is the answer plus eos, truncated to ``max_target_length`` (50). The loss is the
cross-entropy over target tokens only. Scoring follows the experience's metric, as for causal
LMs: ``exact_match`` is teacher-forced on the decoder, every other metric greedily decodes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from clbench.api.adapters import TRANSFORMER_PLACEMENTS
from clbench.api.backbone import Backbone, Batch
from clbench.asset_policy import resolve_downloads
from clbench.backbones.hf_generation import GenerationScoring, greedy_config, text_fields
from clbench.backbones.hf_loading import is_encoder_decoder, load_folder, load_hub, resolve_source
from clbench.backbones.llm_eval import EvalPlans
from clbench.errors import UsageError


class Seq2SeqLMBackbone(GenerationScoring, Backbone):
    """An encoder-decoder LM trained on answer tokens and scored by the task's metric."""

    kind = "llm"
    # T5 names its projections q/k/v/o and wi(_0/_1)/wo; BART-style models q_proj... and fc1/fc2.
    target_patterns = {
        "q": ("*.q", "*q_proj"), "k": ("*.k", "*k_proj"), "v": ("*.v", "*v_proj"), "o": ("*.o", "*out_proj"),
        "fc": ("*.wi", "*.wi_0", "*.wi_1", "*fc1"), "proj": ("*.wo", "*fc2"),
    }
    adapter_placements = TRANSFORMER_PLACEMENTS

    def __init__(self, spec: str, model: nn.Module, tokenizer: Any, *, max_source_length: int = 512, max_target_length: int = 50) -> None:
        super().__init__(spec, model)
        self.tokenizer = tokenizer
        self.max_source_length = max_source_length
        self.max_target_length = max_target_length
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.pad_id = int(tokenizer.pad_token_id)
        self.eos_id = tokenizer.eos_token_id
        self._eval_plans = EvalPlans()

    def _ids(self, text: str, limit: int) -> list[int]:
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        eos = [self.eos_id] if self.eos_id is not None else []
        return ids[:limit - len(eos)] + eos

    def collate(self, items: Any) -> Batch:
        """``input_ids``/``attention_mask`` (prompt + eos, right-padded), ``labels`` (answer + eos,
        -100 padding), ``answer_mask`` (answer tokens, eos excluded), ``task_id`` and the texts."""
        if isinstance(items, dict):
            return items
        return self._pad(items, [self._encode(ex) for ex in items])

    def _encode(self, example: dict[str, Any]) -> tuple[list[int], list[int]]:
        """Encoder ids (prompt + eos) and decoder target ids (answer + eos), both truncated."""
        return self._ids(str(example["prompt"]), self.max_source_length), self._ids(str(example["answer"]).strip(), self.max_target_length)

    def _pad(self, items: list[dict[str, Any]], encoded: list[tuple[list[int], list[int]]]) -> Batch:
        """The batch of :meth:`collate` from already tokenized ``(source, target)`` pairs."""
        sources = [s for s, _ in encoded]
        targets = [t for _, t in encoded]
        n, width, target_width = len(items), max(len(s) for s in sources), max(len(t) for t in targets)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        labels = torch.full((n, target_width), -100, dtype=torch.long)
        answer_mask = torch.zeros((n, target_width), dtype=torch.bool)
        for i, (src, tgt) in enumerate(zip(sources, targets, strict=True)):
            input_ids[i, :len(src)] = torch.tensor(src)
            attention[i, :len(src)] = 1
            labels[i, :len(tgt)] = torch.tensor(tgt)
            answer_mask[i, :len(tgt) - (1 if self.eos_id is not None else 0)] = True
        task_id = torch.tensor([int(ex.get("task_id", 0)) for ex in items], dtype=torch.long)
        batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels, "answer_mask": answer_mask, "task_id": task_id}
        batch.update(text_fields(items, [str(ex["prompt"]) for ex in items]))
        return batch

    def eval_batches(self, dataset: Dataset[Any], batch_size: int,
                     loader_kwargs: dict[str, Any] | None = None) -> Iterator[tuple[list[int] | None, Batch]]:
        """Test batches tokenized once per run and grouped by length, longest first (as for causal LMs)."""
        return iter(self._eval_plans.get(dataset, batch_size, self._encode, self._pad))

    def _logits(self, batch: Batch) -> torch.Tensor:
        """Decoder logits ``[B, T, vocab]`` under teacher forcing (labels shifted right)."""
        labels = batch["labels"]
        decoder_input_ids = self.model.prepare_decoder_input_ids_from_labels(labels=labels)
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          decoder_input_ids=decoder_input_ids).logits

    def loss(self, batch: Batch) -> torch.Tensor:
        """Cross-entropy over the target tokens (answer and eos), averaged over tokens."""
        targets = batch["labels"] != -100
        return F.cross_entropy(self._logits(batch)[targets].float(), batch["labels"][targets])

    def outputs(self, batch: Batch) -> torch.Tensor:
        """Decoder logits at the target positions, ``[N, vocab]``."""
        return self._logits(batch)[batch["labels"] != -100]

    def teacher_forced_match(self, batch: Batch) -> torch.Tensor:
        """1.0 where every answer token (eos excluded) is the decoder's argmax given the gold prefix."""
        with torch.no_grad():
            hits = self._logits(batch).argmax(-1) == batch["labels"]
        return (hits | ~batch["answer_mask"]).all(dim=1).float()

    @torch.no_grad()
    def generate_texts(self, batch: Batch) -> list[str]:
        """Greedy decoder outputs for the batch's encoder inputs, decoded without specials."""
        out = self.model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                  generation_config=greedy_config(self.tokenizer, int(batch["max_new_tokens"]), self.pad_id))
        return self.tokenizer.batch_decode(out, skip_special_tokens=True)


def build_seq2seq_from(spec: str, kind: str, source: Path | str, *, allow_download: bool) -> Seq2SeqLMBackbone:
    """Load a resolved folder (``kind="dir"``) or hub id (``kind="hub"``) as a seq2seq backbone."""
    if kind == "hub":
        model, tokenizer = load_hub(spec, str(source), allow_download=allow_download, seq2seq=True)
    elif kind == "dir":
        model, tokenizer = load_folder(spec, source, seq2seq=True, local_files_only=True)
    else:
        raise UsageError(f"model {spec!r}: seq2seq models load from a save_pretrained folder or a hub id, not a {kind} file")
    return Seq2SeqLMBackbone(spec, model, tokenizer)


def build_hf_seq2seq(spec: str, *, allow_download: bool | None = None) -> Seq2SeqLMBackbone:
    """Encoder-decoder LM (T5, BART) from hf-seq2seq:<save_pretrained folder | org/name>.
    ``allow_download``: see :func:`clbench.asset_policy.resolve_downloads`."""
    _, _, target = spec.partition(":")
    if not target:
        raise UsageError(f"bad backbone spec {spec!r}: expected hf-seq2seq:<folder> or hf-seq2seq:<org/name>")
    allow = resolve_downloads(allow_download)
    kind, source = resolve_source(spec, target)
    if kind == "dir" and not is_encoder_decoder(kind, source, allow_download=allow):
        raise UsageError(f"model {spec!r}: {source} is not an encoder-decoder model (config.json lacks is_encoder_decoder); use hf:{target}")
    return build_seq2seq_from(spec, kind, source, allow_download=allow)
