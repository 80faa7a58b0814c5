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
from clbench.nn.routing import RoutingBalance
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
        self.balance = RoutingBalance(self.adapters, cfg.rank)

    def before_task(self, experience: Experience) -> None:
        self.balance.start_task()

    def after_step(self, step: int, experience: Experience) -> None:
        self.balance.step()

    def telemetry(self) -> dict[str, Any]:
        """Load balance of the task just trained (max/mean rank usage) and the bias spread."""
        return self.balance.telemetry()
