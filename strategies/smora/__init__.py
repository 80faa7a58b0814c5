"""``smora``: SMoRA, "Each Rank Could be an Expert" — single-rank mixture-of-experts LoRA.

A configuration of the shared rank-gated operation (arXiv 2501.15103; official code ``StyxXuan/smora``): a learned sigmoid
router picks k of the r rank-1 experts per token, with normalised gates times k, scaling α/k and
an auxiliary-loss-free load-balancing bias updated after every optimizer step; see
:mod:`clbench.strategies.smora.layer`.

SMoRA is a multi-task method, not a continual-learning one: as a CL baseline it trains one
adapter (A, B and router) across the stream, like sequential LoRA [I].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from clbench.api import Backbone, Experience, Strategy, StrategyConfig
from clbench.strategies.smora.layer import SMoRALinear

# LLM: q and v (the official README's target_modules); classic: hidden layers; CLIP: q, v [I].
DEFAULT_TARGETS = {"classic": ("fc",), "llm": ("q", "v"), "clip": ("q", "v"), "vit": ("qkv",)}


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


class SMoRA(Strategy):
    """Freeze the backbone, wrap the target layers in SMoRA and train A, B and the routers."""

    Config = SMoRAConfig
    config: SMoRAConfig

    def setup(self, backbone: Backbone) -> None:
        super().setup(backbone)
        cfg = self.config
        for p in backbone.model.parameters():
            p.requires_grad_(False)
        targets = cfg.targets or backbone.default_targets(DEFAULT_TARGETS.get(backbone.kind, ("fc",)), "smora")
        self.adapters: dict[str, SMoRALinear] = {}
        for name, layer in backbone.adapter_targets(targets).items():
            adapter = SMoRALinear(layer, cfg.rank, cfg.k, cfg.alpha, cfg.dropout, cfg.partition, cfg.bias_lr)
            parent_name, _, child = name.rpartition(".")
            setattr(backbone.model.get_submodule(parent_name) if parent_name else backbone.model, child, adapter)
            self.adapters[name] = adapter
        if cfg.train_head and backbone.kind in ("classic", "vit"):  # heads without pretrained weights
            for head in backbone.head_layers(self.adapters).values():
                for p in head.parameters():
                    p.requires_grad_(True)
        self._task_counts = {name: torch.zeros(cfg.rank, dtype=torch.float64) for name in self.adapters}

    def before_task(self, experience: Experience) -> None:
        for name in self._task_counts:
            self._task_counts[name].zero_()
        for adapter in self.adapters.values():
            adapter.usage.zero_()

    def after_step(self, step: int, experience: Experience) -> None:
        for name, adapter in self.adapters.items():
            self._task_counts[name] += adapter.update_routing_bias_().cpu()

    def telemetry(self) -> dict[str, Any]:
        """Load balance of the task just trained (max/mean expert usage) and the bias spread."""
        imbalance = [float(c.max() / c.mean()) for c in self._task_counts.values() if c.sum() > 0]
        spread = [float(a.routing_bias.max() - a.routing_bias.min()) for a in self.adapters.values()]
        return {
            "adapted_layers": len(self.adapters),
            "usage_max_over_mean": sum(imbalance) / len(imbalance) if imbalance else 0.0,
            "routing_bias_spread": sum(spread) / len(spread) if spread else 0.0,
        }
