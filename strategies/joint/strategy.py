"""``joint``: train on the union of every task seen so far, the multitask upper reference."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from torch.utils.data import Dataset

from clbench.api import Backbone, Experience, Strategy, concat_datasets
from clbench.api.adapters import unfreeze
from clbench.strategies.joint.config import JointConfig


class Joint(Strategy):
    """Train on the concatenation of the seen tasks' training data at every step."""

    Config = JointConfig
    config: JointConfig

    def setup(self, backbone: Backbone) -> None:
        super().setup(backbone)
        unfreeze(backbone.model)
        self._initial = copy.deepcopy(backbone.model.state_dict()) if self.config.restart else None

    def before_task(self, experience: Experience) -> None:
        if self._initial is not None:
            self.model.load_state_dict(self._initial)

    def training_data(self, experience: Experience, seen: Sequence[Experience]) -> Dataset[Any]:
        return concat_datasets([e.train for e in seen])
