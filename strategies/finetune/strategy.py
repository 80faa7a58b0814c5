"""``finetune``: sequential full fine-tuning, the lower reference every CL method must beat."""

from __future__ import annotations

from clbench.api import Backbone, Strategy
from clbench.api.adapters import unfreeze
from clbench.strategies.finetune.config import FineTuneConfig


class FineTune(Strategy):
    """Train all parameters on each task in turn, with no mechanism against forgetting."""

    Config = FineTuneConfig
    fsdp_refusal = ("it trains every weight, and --fsdp shards only frozen weights (trained ones stay whole on every rank), so it "
                    "would save no memory")

    def setup(self, backbone: Backbone) -> None:
        super().setup(backbone)
        unfreeze(backbone.model)
