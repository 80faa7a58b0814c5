"""Zero-shot text heads: class names x prompt templates -> one text embedding per class.

The head of a class is the CLIP prompt ensemble: every template filled with the class name is
encoded, each embedding is L2-normalised, the class's embeddings are averaged and the mean is
normalised again (the recipe of the CLIP paper and open_clip's ``build_zero_shot_classifier``).

:class:`PromptBank` tokenises every prompt of a stream once, at bind time, so building a head
is only text-encoder forward passes: once per evaluation pass for the full label space (MTIL
scores each task's slice of it, X-TAIL the whole union), and per task or per step for training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

DEFAULT_TEMPLATES = ("a photo of a {}.",)
TEXT_BATCH = 512  # prompts per text-encoder forward when building heads


def fill_template(template: str, class_name: str) -> str:
    """``template`` with ``{}`` (or ``{c}``) replaced by ``class_name``."""
    return template.replace("{c}", class_name).replace("{}", class_name)


class PromptBank:
    """Tokenised prompts of every class of a label space.

    Args:
        class_names: global label space (index = class id).
        templates: per class, the prompt templates to ensemble (``{}`` = class name).
        tokenizer: open_clip tokenizer (``list[str] -> LongTensor[N, context]``).

    Attributes:
        tokens: ``(N_prompts, context)`` token ids of every prompt.
        owner: ``(N_prompts,)`` class id of each prompt.
        first: ``(C,)`` row in ``tokens`` of each class's first template (the training prompt).
    """

    def __init__(self, class_names: Sequence[str], templates: Sequence[Sequence[str]], tokenizer: Callable[[list[str]], torch.Tensor]) -> None:
        if len(class_names) != len(templates):
            raise ValueError(f"{len(class_names)} class names but {len(templates)} template lists")
        prompts: list[str] = []
        owner: list[int] = []
        first: list[int] = []
        for cls, (name, class_templates) in enumerate(zip(class_names, templates, strict=True)):
            first.append(len(prompts))
            for template in class_templates or DEFAULT_TEMPLATES:
                prompts.append(fill_template(template, name))
                owner.append(cls)
        self.num_classes = len(class_names)
        self.tokens = tokenizer(prompts) if prompts else torch.zeros(0, 1, dtype=torch.long)
        self.owner = torch.tensor(owner, dtype=torch.long)
        self.first = torch.tensor(first, dtype=torch.long)

    def to(self, device: torch.device) -> PromptBank:
        """Move the token tensors to ``device`` (in place)."""
        self.tokens = self.tokens.to(device)
        self.owner = self.owner.to(device)
        self.first = self.first.to(device)
        return self

    def ensemble_head(self, model: nn.Module, batch_size: int = TEXT_BATCH) -> torch.Tensor:
        """``(C, D)`` normalised prompt-ensemble embeddings of every class (no gradient)."""
        with torch.no_grad():
            parts = [F.normalize(model.encode_text(chunk), dim=-1).float() for chunk in self.tokens.split(batch_size)]
            per_prompt = torch.cat(parts)
            sums = torch.zeros(self.num_classes, per_prompt.shape[1], device=per_prompt.device).index_add_(0, self.owner, per_prompt)
            return F.normalize(sums, dim=-1)

    def first_template_embeddings(self, model: nn.Module, class_ids: torch.Tensor) -> torch.Tensor:
        """``(len(class_ids), D)`` normalised embeddings of the classes' first prompts.

        Runs under the caller's grad mode, so training steps get gradients into an adapted text
        encoder.
        """
        return F.normalize(model.encode_text(self.tokens[self.first[class_ids]]), dim=-1)
