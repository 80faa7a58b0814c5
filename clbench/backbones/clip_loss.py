"""The CLIP continual-learning training loss of MoRA/MoRAM and CoDyRA (official code: ``Artificer-AI-Lab/MoRAM`` ``XTAIL/models/moram.py``, ``Artificer-AI-Lab/CoDyRA`` ``models/codyra.py``).

Two cross-entropy terms over L2-normalised features, scaled by ``exp(logit_scale)``:

* **image -> text**: each image is scored against the text embeddings of every class seen so
  far: previous tasks' classes (computed once per task, no gradient) followed by the current
  task's classes (recomputed every step, with gradient when the text encoder is adapted). The
  previous classes' logits are masked to ``-inf``, so the loss is effectively a cross-entropy over
  the current classes; label smoothing is 0.
* **text -> image**: each current class text is scored against the batch's images; the target is
  the *un-normalised* multi-hot row of the images carrying that class (a class with no image in
  the batch contributes 0 but still counts in the mean over rows, as
  ``F.cross_entropy`` with probability targets computes it).

The total is the sum of both terms when the image encoder is adapted, the image term alone when
only the text encoder is.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def image_to_text_loss(image_features: torch.Tensor, previous_text: torch.Tensor, current_text: torch.Tensor, targets: torch.Tensor,
                       logit_scale: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of images over [previous (masked) ∪ current] class texts.

    Args:
        image_features: ``(B, D)`` L2-normalised image embeddings.
        previous_text: ``(P, D)`` L2-normalised embeddings of earlier tasks' classes (P may be 0).
        current_text: ``(C, D)`` L2-normalised embeddings of the current task's classes.
        targets: ``(B,)`` index of each image's class within ``current_text``.
        logit_scale: the exponentiated CLIP temperature (a scalar tensor).

    Returns:
        The mean cross-entropy over the batch.
    """
    texts = torch.cat([previous_text.to(current_text.dtype), current_text]) if len(previous_text) else current_text
    logits = logit_scale * image_features @ texts.t()
    n_previous = len(previous_text)
    if n_previous:
        mask = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
        mask[:n_previous] = True
        logits = logits.masked_fill(mask, float("-inf"))
    return F.cross_entropy(logits, targets + n_previous)


def text_to_image_loss(image_features: torch.Tensor, current_text: torch.Tensor, targets: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each current class text over the batch's images, multi-hot targets.

    Args:
        image_features: ``(B, D)`` L2-normalised image embeddings.
        current_text: ``(C, D)`` L2-normalised class-text embeddings.
        targets: ``(B,)`` index of each image's class within ``current_text``.
        logit_scale: the exponentiated CLIP temperature.

    Returns:
        ``mean_c ( -sum_b M[c, b] log softmax_b(logits[c]) )`` with ``M[c, b] = 1[targets_b = c]``.
    """
    logits = logit_scale * current_text @ image_features.t()  # (C, B)
    multi_hot = F.one_hot(targets, num_classes=len(current_text)).t().to(logits.dtype)
    return F.cross_entropy(logits, multi_hot)


def clip_continual_loss(image_features: torch.Tensor, previous_text: torch.Tensor, current_text: torch.Tensor, targets: torch.Tensor,
                        logit_scale: torch.Tensor, *, include_text_to_image: bool) -> torch.Tensor:
    """The §1.3 objective: image->text CE, plus text->image CE when the image encoder is adapted."""
    loss = image_to_text_loss(image_features, previous_text, current_text, targets, logit_scale)
    if include_text_to_image:
        loss = loss + text_to_image_loss(image_features, current_text, targets, logit_scale)
    return loss
