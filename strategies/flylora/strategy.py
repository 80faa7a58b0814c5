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

from typing import Any

import torch

from clbench.api import Backbone, Experience, Strategy, inject_adapters
from clbench.api.adapters import QV
from clbench.strategies.flylora.layer import FlyLoRALinear
from clbench.strategies.flylora.config import FlyLoRAConfig

class FlyLoRA(Strategy):
    """Freeze the backbone, wrap the target layers in FlyLoRA and train only B (and a classic head)."""

    Config = FlyLoRAConfig
    config: FlyLoRAConfig
    adapter_placement = QV  # q and v: the official FlyLoRA LLaMA runs' placement (on CLIP as well [I])

    def setup(self, backbone: Backbone) -> None:
        super().setup(backbone)
        cfg = self.config
        # One generator from the run seed: A is the same on a resumed run and across reruns.
        generator = torch.Generator().manual_seed(self.ctx.seed * 7_919 + 17)
        self.adapters: dict[str, FlyLoRALinear] = inject_adapters(
            backbone, self.resolve_targets(cfg.targets, "flylora"),
            lambda _, layer: FlyLoRALinear(layer, cfg.rank, cfg.k, cfg.alpha or None, cfg.density or None, cfg.bias_lr, generator),
            heads=cfg.train_head)
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
