"""CoDyRA's settings: the official runner's values, per backbone kind where the paper has them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clbench.api import StrategyConfig

CLIP_TRAINING = {"iterations": 500, "batch_size": 64, "lr": 5e-4, "optimizer": "adamw", "betas": (0.9, 0.9999),
                 "weight_decay": 0.0, "scheduler": "cosine"}
"""``runner_codyra.sh`` and ``main.py``: AdamW (0.9, 0.9999), wd 0, cosine without warm-up, 500
iterations of batch 64 per task, lr 5e-4."""

PAPER_TASK_STEPS = 500
"""Steps per task the paper's κ_max was tuned for (the CLIP runner's iterations)."""


@dataclass(frozen=True, kw_only=True)
class CoDyRAConfig(StrategyConfig):
    """Dynamic rank-selective LoRA (CoDyRA): gated LoRA, proximal L1 on the gates, merge per task.

    On CLIP backbones the training settings default to the official runner's (AdamW lr 5e-4,
    betas 0.9/0.9999, wd 0, cosine, 500 iterations, batch 64); on LLM and classic backbones the
    benchmark's settings apply. Every training setting can be overridden with ``-S``.

    Attributes:
        rank: ranks r of each fresh adapter (the gates then select how many survive).
        targets: layers to adapt (q, k, v, o, fc, proj, or module-name globs); empty = the kind's
            default: CLIP q,k,v,o,fc,proj of both encoders; LLM q,k,v,o; classic fc (hidden
            layers); ViT qkv,o,fc,proj.
        kappa_max: threshold of the last κ level, subtracted from |w| after each sparse-phase step
            (not scaled by the learning rate).
        dense_fraction: fraction of each task's steps trained with no thresholding.
        kappa_levels: κ levels from 0 to kappa_max (κ rises one level every (T − dense)/levels steps).
        kappa_reference_steps: rescale kappa_max so a task's total shrinkage equals that of this many
            steps (0 = use kappa_max as is, the official code); -1 = per kind: 0 on CLIP, 500 on
            LLM and classic backbones, whose tasks are far shorter than the paper's 500 steps.
        prox: ``soft`` (the paper: w ← sign(w)·max(|w| − κ, 0)) or ``official`` (the code's in-place
            masks, which also zero gates with κ < |w| < 2κ).
        train_head: also train the classifier heads fully (classic and ViT backbones, whose heads
            are randomly initialised).
        track_drift: keep every merged factor to report the cumulative drift ‖W_t − W_0‖_F.
    """

    rank: int = 16
    targets: tuple[str, ...] = ()
    kappa_max: float = 0.005
    dense_fraction: float = 0.5
    kappa_levels: int = 50
    kappa_reference_steps: int = -1
    prox: str = "soft"
    train_head: bool = True
    track_drift: bool = True

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        if self.kappa_max < 0:
            raise ValueError(f"kappa_max must be >= 0, got {self.kappa_max}")
        if not 0 <= self.dense_fraction <= 1:
            raise ValueError(f"dense_fraction must be in [0, 1], got {self.dense_fraction}")
        if self.kappa_levels < 2:
            raise ValueError(f"kappa_levels must be >= 2, got {self.kappa_levels}")
        if self.kappa_reference_steps < -1:
            raise ValueError(f"kappa_reference_steps must be -1 (per kind), 0 (off) or a step count, got {self.kappa_reference_steps}")
        if self.prox not in ("soft", "official"):
            raise ValueError(f"prox must be 'soft' or 'official', got {self.prox!r}")

    def kind_train_defaults(self, backbone_kind: str) -> dict[str, Any]:
        """The official runner's training settings on CLIP; the benchmark's elsewhere."""
        return dict(CLIP_TRAINING) if backbone_kind == "clip" else {}

    def reference_steps(self, backbone_kind: str) -> int:
        """Steps whose total shrinkage a task's κ schedule is rescaled to (0 = no rescaling)."""
        if self.kappa_reference_steps >= 0:
            return self.kappa_reference_steps
        return 0 if backbone_kind == "clip" else PAPER_TASK_STEPS
