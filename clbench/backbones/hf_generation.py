"""What causal and seq2seq LM backbones share: the text fields of a batch and scoring by metric.

Scoring follows the experience's metric: ``exact_match`` is teacher-forced (every answer token is
the argmax given the gold prefix: one forward pass); every other metric greedily decodes up to
``max_new_tokens`` and scores the decoded text with :func:`clbench.textmetrics.score_text`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from clbench.api.backbone import Batch
from clbench.api.stream import Experience
from clbench.textmetrics import score_text

# Generation budget when a task's examples do not carry ``max_new_tokens`` (O-LoRA's
# generation_max_length is 50).
DEFAULT_MAX_NEW_TOKENS = 50


def text_fields(items: list[dict[str, Any]], prompts: list[str]) -> Batch:
    """The raw strings a generation metric needs, kept beside the tensors of a batch."""
    budgets = [int(ex.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS) for ex in items]
    return {
        "prompt_text": prompts,
        "answer_text": [str(ex["answer"]).strip() for ex in items],
        "source_text": [str(ex.get("source", ex["prompt"])) for ex in items],
        "max_new_tokens": max(budgets) if budgets else DEFAULT_MAX_NEW_TOKENS,
        "max_prompt_tokens": min(int(ex.get("max_prompt_tokens") or 1 << 30) for ex in items),
    }


class GenerationScoring(ABC):
    """Mixin: score a batch by the experience's metric, generating text when it needs text.

    Subclasses implement :meth:`teacher_forced_match` and :meth:`generate_texts`.
    """

    def loss_terms(self, batch: Batch) -> torch.Tensor:
        """The target tokens (``labels`` != -100): the loss is their mean, not the examples'."""
        return (batch["labels"] != -100).sum()

    @abstractmethod
    def teacher_forced_match(self, batch: Batch) -> torch.Tensor:
        """1.0 per example whose every answer token is the argmax given the gold prefix."""

    @abstractmethod
    def generate_texts(self, batch: Batch) -> list[str]:
        """Greedy continuations of the batch's prompts, as text."""

    def score(self, batch: Batch, experience: Experience) -> torch.Tensor:
        """Per-example scores in [0, 1] under ``experience.metric``."""
        if experience.metric == "exact_match":
            return self.teacher_forced_match(batch)
        return self.score_texts(batch, experience, self.generate_texts(batch))

    @staticmethod
    def score_texts(batch: Batch, experience: Experience, predictions: list[str]) -> torch.Tensor:
        """Scores of generated ``predictions`` against the batch's answers under ``experience.metric``."""
        scores = [score_text(experience.metric, p, a, s)
                  for p, a, s in zip(predictions, batch["answer_text"], batch["source_text"], strict=True)]
        return torch.tensor(scores, dtype=torch.float32, device=batch["input_ids"].device)


def greedy_config(tokenizer: Any, max_new_tokens: int, pad_id: int) -> Any:
    """A greedy-decoding generation config (the model's own sampling defaults are ignored)."""
    from transformers import GenerationConfig

    return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                            pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id,
                            bos_token_id=getattr(tokenizer, "bos_token_id", None))
