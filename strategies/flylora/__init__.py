"""``flylora``: FlyLoRA, LoRA with a frozen sparse random A as an implicit rank router (NeurIPS 2025).

A configuration of the shared rank-gated operation (FlyLoRA, NeurIPS 2025; official code ``gfyddha/FlyLoRA``): top-k of
``|A x + d|`` per token over a frozen sparse random ``A``, trainable zero-initialised ``B``, a
load-balancing bias ``d`` updated after every optimizer step; see
:mod:`clbench.strategies.flylora.layer`.

FlyLoRA is a multi-task/merging method, not a continual-learning one: as a CL baseline it trains
one adapter across the stream, like sequential LoRA (TRACE's SeqLoRA) [I]. The random ``A`` is
drawn once per run from the run seed, so every task routes through the same frozen experts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from clbench.api import Backbone, Experience, Strategy, StrategyConfig
from clbench.strategies.flylora.layer import FlyLoRALinear

# LLM: q and v, the official FlyLoRA LLaMA runs' placement; classic: the hidden layers;
# CLIP: q and v as well [I].
DEFAULT_TARGETS = {"classic": ("fc",), "llm": ("q", "v"), "clip": ("q", "v"), "vit": ("qkv",)}


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


class FlyLoRA(Strategy):
    """Freeze the backbone, wrap the target layers in FlyLoRA and train only B (and a classic head)."""

    Config = FlyLoRAConfig
    config: FlyLoRAConfig

    def setup(self, backbone: Backbone) -> None:
        super().setup(backbone)
        cfg = self.config
        for p in backbone.model.parameters():
            p.requires_grad_(False)
        targets = cfg.targets or backbone.default_targets(DEFAULT_TARGETS.get(backbone.kind, ("fc",)), "flylora")
        layers = backbone.adapter_targets(targets)
        # One generator from the run seed: A is the same on a resumed run and across reruns.
        generator = torch.Generator().manual_seed(self.ctx.seed * 7_919 + 17)
        self.adapters: dict[str, FlyLoRALinear] = {}
        for name, layer in layers.items():
            adapter = FlyLoRALinear(layer, cfg.rank, cfg.k, cfg.alpha or None, cfg.density or None, cfg.bias_lr, generator)
            parent_name, _, child = name.rpartition(".")
            setattr(backbone.model.get_submodule(parent_name) if parent_name else backbone.model, child, adapter)
            self.adapters[name] = adapter
        if cfg.train_head and backbone.kind in ("classic", "vit"):  # heads without pretrained weights
            for head in backbone.head_layers(layers).values():
                for p in head.parameters():
                    p.requires_grad_(True)
        self._task_counts = {name: torch.zeros(cfg.rank, dtype=torch.float64) for name in self.adapters}

    def before_task(self, experience: Experience) -> None:
        for name in self._task_counts:
            self._task_counts[name].zero_()
        for adapter in self.adapters.values():
            adapter.usage.zero_()  # counts from evaluation passes do not steer the bias

    def after_step(self, step: int, experience: Experience) -> None:
        for name, adapter in self.adapters.items():
            self._task_counts[name] += adapter.update_routing_bias_().cpu()

    def telemetry(self) -> dict[str, Any]:
        """Load balance of the task just trained: max/mean rank usage and the bias spread."""
        imbalance = [float(c.max() / c.mean()) for c in self._task_counts.values() if c.sum() > 0]
        spread = [float(a.routing_bias.max() - a.routing_bias.min()) for a in self.adapters.values()]
        return {
            "adapted_layers": len(self.adapters),
            "usage_max_over_mean": sum(imbalance) / len(imbalance) if imbalance else 0.0,
            "routing_bias_spread": sum(spread) / len(spread) if spread else 0.0,
        }
