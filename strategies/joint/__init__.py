"""``joint``: train on the union of every task seen so far, the multitask upper reference."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from clbench.api import Backbone, Experience, Strategy, StrategyConfig, concat_datasets


@dataclass(frozen=True, kw_only=True)
class JointConfig(StrategyConfig):
    """Joint training on all data seen so far, with every parameter trainable.

    Attributes:
        restart: before each task, reset the model to its initial weights, so row t is a model
            trained jointly on tasks 1..t from scratch (the standard upper reference); with
            ``false`` training continues from the previous row's model (cheaper, nearly equal).
        llm_lr: learning rate on LLM backbones when ``lr`` is not given.
    """

    restart: bool = True
    llm_lr: float = 1e-5

    DEPARTURES = {
        "lr": "the benchmark's on classic, CLIP and ViT (an upper reference with no paper of its own); LLM 1e-5 as TRACE's full fine-tuning; not measured",
    }

    def train_overrides(self, backbone_kind: str) -> dict[str, Any]:
        overrides = super().train_overrides(backbone_kind)
        if backbone_kind == "llm" and overrides["lr"] is None:
            overrides["lr"] = self.llm_lr
        return overrides


class Joint(Strategy):
    """Train on the concatenation of the seen tasks' training data at every step."""

    Config = JointConfig
    config: JointConfig

    def setup(self, backbone: Backbone) -> None:
        super().setup(backbone)
        for p in backbone.model.parameters():
            p.requires_grad_(True)
        self._initial = copy.deepcopy(backbone.model.state_dict()) if self.config.restart else None

    def before_task(self, experience: Experience) -> None:
        if self._initial is not None:
            self.model.load_state_dict(self._initial)

    def training_data(self, experience: Experience, seen: Sequence[Experience]) -> Dataset[Any]:
        return concat_datasets([e.train for e in seen])
