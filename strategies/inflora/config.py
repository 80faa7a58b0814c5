"""Settings of ``inflora``: the documented config dataclass (``-S`` keys)."""

from __future__ import annotations

from dataclasses import dataclass

from clbench.api import StrategyConfig


@dataclass(frozen=True, kw_only=True)
class InfLoRAConfig(StrategyConfig):
    """InfLoRA: per-task LoRA with a designed, frozen A_t orthogonal to old tasks' inputs.

    Defaults from the official ImageNet-R config (``configs/mimg10_inflora.json``): rank 10,
    lamb 0.98, lame 1.0, Adam, lr 5e-4, cosine schedule. Epochs follow the benchmark (the paper
    trains 50 per task on ImageNet-R).

    Attributes:
        rank: rank r of each task's branch.
        lamb: DualGPM energy threshold after the first task.
        lame: the threshold the linear ramp heads to at the last task.
        targets: generic layer names to adapt or module-name globs; empty = the kind's default
            (classic: fc; llm: k, v; clip: k, v; vit: the K and V outputs of qkv).
        kv_only: on fused ``qkv`` layers, adapt only the key and value outputs (the paper).
        train_head: also train the classifier head: classic backbones' head; on task-head
            backbones (vit) the current task's head only, as the official code.
        stats_batches: cap on the batches used to estimate each input matrix (0 = the whole
            task's training data, as the official code).
    """

    rank: int = 10
    lamb: float = 0.98
    lame: float = 1.0
    targets: tuple[str, ...] = ()
    kv_only: bool = True
    train_head: bool = True
    stats_batches: int = 0
    optimizer: str | None = "adam"
    lr: float | None = 5e-4
    scheduler: str | None = "cosine"

    DEPARTURES = {
        "targets": "LLM and CLIP k,v and classic fc: the paper adapts K and V of ViT blocks only; not measured",
        "lr": "Adam 5e-4 cosine (the official ViT setting) applied on every kind; not measured off ViT",
    }

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        if not (0 < self.lamb <= 1 and 0 < self.lame <= 1):
            raise ValueError(f"lamb and lame must be in (0, 1], got {self.lamb} and {self.lame}")
        if self.stats_batches < 0:
            raise ValueError(f"stats_batches must be >= 0, got {self.stats_batches}")
