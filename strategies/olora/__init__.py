"""``olora``: O-LoRA, orthogonal subspace learning with one LoRA per task (Wang et al., 2023).

Each task trains a fresh LoRA (``A_new``, ``B_new``) on the target layers while the adapters of
earlier tasks stay frozen in a bank (``A_old``, ``B_old``). The loss keeps the new adapter's
input subspace away from the old ones (arXiv 2310.14152; official code ``cmnfriend/O-LoRA``
``src/uie_trainer_lora.py``)::

    L = L_task + λ1 Σ_layers Σ_ij |(A_old A_newᵀ)_ij| + λ2 Σ_{θ ∈ new adapter} ‖θ‖₂

The L2 term is a sum of (unsquared) Frobenius norms over the new ``A`` and ``B``, as the official
code computes it; its weight λ2 is 0 in every official script. At the end of a task the new
adapter joins the frozen bank (``clbench.nn.multi_lora``), so inference costs nothing extra once
the bank is merged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from clbench.api import Backbone, Batch, Experience, Strategy, StrategyConfig
from clbench.nn import TaskLoRALinear, apply_task_lora

# Default targets per backbone kind. LLM: q and v as in O-LoRA's T5/LLaMA scripts; classic MLP:
# its hidden layers (the only adaptable layers); CLIP: q and v as well [I: no official CLIP run].
DEFAULT_TARGETS = {"classic": ("fc",), "llm": ("q", "v"), "clip": ("q", "v"), "vit": ("qkv",)}


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


def orthogonality_loss(bank_a: torch.Tensor, new_a: torch.Tensor) -> torch.Tensor:
    """O-LoRA's penalty for one layer: ``Σ_ij |(A_old A_newᵀ)_ij|`` (0 for an empty bank)."""
    if bank_a.shape[0] == 0:
        return new_a.new_zeros(())
    return (bank_a @ new_a.t()).abs().sum()


def l2_loss(adapter: TaskLoRALinear) -> torch.Tensor:
    """``‖A_new‖₂ + ‖B_new‖₂`` (Frobenius, unsquared, as in the official trainer)."""
    return adapter.lora_A.norm(p=2) + adapter.lora_B.norm(p=2)


class OLoRA(Strategy):
    """Freeze the backbone; per task, train a new LoRA kept orthogonal to the frozen old ones."""

    Config = OLoRAConfig
    config: OLoRAConfig

    def setup(self, backbone: Backbone) -> None:
        super().setup(backbone)
        for p in backbone.model.parameters():
            p.requires_grad_(False)
        targets = self.config.targets or backbone.default_targets(DEFAULT_TARGETS.get(backbone.kind, ("fc",)), "olora")
        layers = backbone.adapter_targets(targets)
        self.adapters = apply_task_lora(backbone.model, layers, self.config.rank, self.config.alpha, self.config.dropout)
        if self.config.train_head and backbone.kind in ("classic", "vit"):  # heads without pretrained weights
            for head in backbone.head_layers(layers).values():
                for p in head.parameters():
                    p.requires_grad_(True)
        self.tasks_done = 0
        self._last_penalty: torch.Tensor | None = None

    def penalty(self) -> torch.Tensor:
        """λ1 · orthogonality + λ2 · L2 over every adapted layer (a differentiable scalar)."""
        cfg = self.config
        total = torch.zeros((), device=self.ctx.device)
        for adapter in self.adapters.values():
            if cfg.lambda_orth:
                total = total + cfg.lambda_orth * orthogonality_loss(adapter.bank_A, adapter.lora_A)
            if cfg.lambda_l2:
                total = total + cfg.lambda_l2 * l2_loss(adapter)
        return total

    def loss(self, batch: Batch, experience: Experience) -> torch.Tensor:
        penalty = self.penalty()
        self._last_penalty = penalty.detach()
        return self.backbone.loss(batch) + penalty

    def after_task(self, experience: Experience) -> None:
        for adapter in self.adapters.values():
            adapter.consolidate_()
        self.tasks_done += 1

    def telemetry(self) -> dict[str, Any]:
        """Bank size, the last step's penalty and the overlap Σ|A_old A_lastᵀ| of the task just frozen."""
        r = self.config.rank
        with torch.no_grad():
            update = sum(float(a.delta_weight().norm()) for a in self.adapters.values())
            overlap = sum(float(orthogonality_loss(a.bank_A[:-r], a.bank_A[-r:])) for a in self.adapters.values() if a.bank_rank > r)
        return {
            "adapted_layers": len(self.adapters),
            "bank_rank_per_layer": next(iter(self.adapters.values())).bank_rank if self.adapters else 0,
            "adapter_update_norm": update,
            "last_task_overlap": overlap,
            "last_penalty": float(self._last_penalty) if self._last_penalty is not None else 0.0,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"tasks_done": self.tasks_done, "bank_ranks": {name: a.bank_rank for name, a in self.adapters.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Give every bank its saved size; the runner then loads the bank values."""
        self.tasks_done = int(state["tasks_done"])
        for name, rank in state["bank_ranks"].items():
            self.adapters[name].resize_bank_(int(rank))
