"""Settings of ``flylora``: the documented config dataclass (``-S`` keys)."""

from __future__ import annotations

from dataclasses import dataclass

from clbench.api import StrategyConfig


@dataclass(frozen=True, kw_only=True)
class FlyLoRAConfig(StrategyConfig):
    """FlyLoRA: frozen sparse random A routes each token to k of r ranks of a trainable B.

    Defaults from the official ``flylora.py``: r=32, k=8, alpha=2r, density k/r, bias step 1e-3.

    Attributes:
        rank: r, total ranks (rank-1 experts) per layer.
        k: ranks active per token.
        alpha: scaling numerator; 0 means 2·rank (the update is scaled by alpha / rank).
        density: ρ, nonzeros per row of A as a fraction of the input width; 0 means k / rank.
        bias_lr: u, step of the load-balancing bias update after every optimizer step.
        targets: generic layer names or module-name globs; empty = the kind's default
            (classic: fc; llm: q, v; clip: q, v; vit: qkv).
        train_head: also train the classifier heads (classic and vit backbones).
    """

    rank: int = 32
    k: int = 8
    alpha: float = 0.0
    density: float = 0.0
    bias_lr: float = 1e-3
    targets: tuple[str, ...] = ()
    train_head: bool = True

    DEPARTURES = {
        "targets": "CLIP q,v, classic fc and ViT qkv: no official run on these kinds; not measured",
        "lr": "the benchmark's (the paper's single-task recipes do not transfer to a task stream); not measured",
    }

    def __post_init__(self) -> None:
        if self.rank < 1 or not 1 <= self.k <= self.rank:
            raise ValueError(f"need rank >= 1 and 1 <= k <= rank, got rank={self.rank}, k={self.k}")
        if self.alpha < 0 or not 0 <= self.density <= 1 or self.bias_lr < 0:
            raise ValueError("alpha and bias_lr must be >= 0 and density in [0, 1]")
