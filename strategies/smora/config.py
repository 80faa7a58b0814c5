"""Settings of ``smora``: the documented config dataclass (``-S`` keys)."""

from __future__ import annotations

from dataclasses import dataclass

from clbench.api import StrategyConfig


@dataclass(frozen=True, kw_only=True)
class SMoRAConfig(StrategyConfig):
    """SMoRA: a learned router activates k of r rank-1 LoRA experts per token.

    Defaults from the official code and README: r=16, alpha=32, dropout 0.1, k
    (``activate_r``) 8, partition 1, bias step 1e-5.

    Attributes:
        rank: r, rank-1 experts per layer.
        k: experts active per token (``activate_r``); the update is scaled by alpha / k.
        alpha: scaling numerator.
        dropout: dropout on the adapter's and router's input.
        partition: ranks sharing one router output (``rank_partition``).
        bias_lr: u, step of the load-balancing bias update after every optimizer step.
        targets: generic layer names or module-name globs; empty = the kind's default
            (classic: fc; llm: q, v; clip: q, v; vit: qkv).
        train_head: also train the classifier heads (classic and vit backbones).
    """

    rank: int = 16
    k: int = 8
    alpha: float = 32.0
    dropout: float = 0.1
    partition: int = 1
    bias_lr: float = 1e-5
    targets: tuple[str, ...] = ()
    train_head: bool = True

    DEPARTURES = {
        "targets": "CLIP q,v, classic fc and ViT qkv: no official run on these kinds; not measured",
        "lr": "the benchmark's: the paper's LLaMA-Factory recipes are multi-task SFT, not continual; not measured",
    }

    def __post_init__(self) -> None:
        if self.rank < 1 or not 1 <= self.k <= self.rank:
            raise ValueError(f"need rank >= 1 and 1 <= k <= rank, got rank={self.rank}, k={self.k}")
        if self.partition < 1 or self.rank % self.partition:
            raise ValueError(f"rank {self.rank} must be divisible by partition {self.partition}")
        if not 0 <= self.dropout < 1 or self.bias_lr < 0:
            raise ValueError("dropout must be in [0, 1) and bias_lr >= 0")
