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

from clbench.api import Backbone, Experience, Strategy, inject_adapters
from clbench.api.adapters import QV
from clbench.nn.routing import RoutingBalance
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
        self.balance = RoutingBalance(self.adapters, cfg.rank)

    def before_task(self, experience: Experience) -> None:
        self.balance.start_task()

    def after_step(self, step: int, experience: Experience) -> None:
        self.balance.step()

    def telemetry(self) -> dict[str, Any]:
        """Load balance of the task just trained (max/mean rank usage) and the bias spread."""
        return self.balance.telemetry()
