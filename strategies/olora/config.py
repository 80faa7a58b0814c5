"""Settings of ``olora``: the documented config dataclass (``-S`` keys)."""

from __future__ import annotations

from dataclasses import dataclass

from clbench.api import StrategyConfig


@dataclass(frozen=True, kw_only=True)
class OLoRAConfig(StrategyConfig):
    """O-LoRA: per-task LoRA with an orthogonality penalty against past tasks' A.

    Defaults come from the official scripts (``scripts/order_1.sh``): r=8, alpha=32, dropout
    0.1, λ1=0.5, λ2=0, lr 1e-3 with a constant schedule.

    Attributes:
        rank: rank r of each task's adapter.
        alpha: scaling numerator (every adapter is scaled by alpha / rank).
        dropout: dropout on the adapters' input.
        lambda_orth: λ1, weight of Σ|A_old A_newᵀ| (summed over adapted layers).
        lambda_l2: λ2, weight of the sum of the new adapter's parameter norms.
        targets: generic layer names to adapt (q, k, v, o, fc, proj) or module-name globs;
            empty = the backbone kind's default (classic: fc; llm: q, v; clip: q, v; vit: qkv).
        train_head: also train the classifier heads (classic and vit backbones, whose heads are
            not pretrained).
    """

    rank: int = 8
    alpha: float = 32.0
    dropout: float = 0.1
    lambda_orth: float = 0.5
    lambda_l2: float = 0.0
    targets: tuple[str, ...] = ()
    train_head: bool = True
    lr: float | None = 1e-3
    scheduler: str | None = "constant"

    DEPARTURES = {
        "lr": "1e-3 on every task; the official LLaMA scripts use 1e-3 on the first task and 1e-4 on later ones; not measured",
        "targets": "CLIP q,v of both encoders, classic fc and ViT qkv: no official run on these kinds; not measured",
    }

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.lambda_orth < 0 or self.lambda_l2 < 0:
            raise ValueError(f"lambda_orth and lambda_l2 must be >= 0, got {self.lambda_orth} and {self.lambda_l2}")
