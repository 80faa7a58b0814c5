"""``smora``: SMoRA, "Each Rank Could be an Expert" — single-rank mixture-of-experts LoRA.

A configuration of the shared rank-gated operation (arXiv 2501.15103; official code ``StyxXuan/smora``): a learned sigmoid
router picks k of the r rank-1 experts per token, with normalised gates times k, scaling α/k and
an auxiliary-loss-free load-balancing bias updated after every optimizer step; see
:mod:`clbench.strategies.smora.layer`.

SMoRA is a multi-task method, not a continual-learning one: as a CL baseline it trains one
adapter (A, B and router) across the stream, like sequential LoRA [I].
"""

from __future__ import annotations

from typing import Any

import torch

from clbench.api import Backbone, Experience, Strategy, inject_adapters
from clbench.api.adapters import QV
from clbench.strategies.smora.layer import SMoRALinear
from clbench.strategies.smora.config import SMoRAConfig

class SMoRA(Strategy):
    """Freeze the backbone, wrap the target layers in SMoRA and train A, B and the routers."""

    Config = SMoRAConfig
    config: SMoRAConfig
    adapter_placement = QV  # q and v: the official README's target_modules (on CLIP as well [I])

    def setup(self, backbone: Backbone) -> None:
        super().setup(backbone)
        cfg = self.config
        self.adapters: dict[str, SMoRALinear] = inject_adapters(
            backbone, self.resolve_targets(cfg.targets, "smora"),
            lambda _, layer: SMoRALinear(layer, cfg.rank, cfg.k, cfg.alpha, cfg.dropout, cfg.partition, cfg.bias_lr), heads=cfg.train_head)
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
