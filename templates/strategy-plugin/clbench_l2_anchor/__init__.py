"""``l2-anchor``: fine-tuning with an L2 penalty towards the weights at the start of each task.

The "L2" baseline of the EWC paper (Kirkpatrick et al., 2017): EWC with a uniform Fisher. It
shows every part a strategy usually needs: a config dataclass, ``setup``, ``before_task``,
an extra loss term, and ``state_dict``/``load_state_dict`` so a killed run resumes exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from clbench.api import Backbone, Batch, Experience, Strategy, StrategyConfig
from clbench.api.adapters import unfreeze


@dataclass(frozen=True, kw_only=True)
class L2AnchorConfig(StrategyConfig):
    """Settings of ``l2-anchor`` (each one is a ``-S key=value`` on the command line).

    Attributes:
        strength: weight of the penalty ``strength/2 · ||θ − θ_anchor||²``.
    """

    strength: float = 1.0

    def __post_init__(self) -> None:
        if self.strength < 0:
            raise ValueError(f"strength must be >= 0, got {self.strength}")


class L2Anchor(Strategy):
    """Fine-tune every parameter, pulled towards the weights the task started from."""

    Config = L2AnchorConfig
    config: L2AnchorConfig

    def setup(self, backbone: Backbone) -> None:
        super().setup(backbone)
        unfreeze(backbone.model)  # an adapter method would call clbench.api.inject_adapters here instead
        self.anchor: dict[str, torch.Tensor] = {}

    def before_task(self, experience: Experience) -> None:
        if experience.index > 0:  # the first task has nothing to protect
            self.anchor = {n: p.detach().clone() for n, p in self.model.named_parameters()}

    def loss(self, batch: Batch, experience: Experience) -> torch.Tensor:
        loss = self.backbone.loss(batch)
        if self.anchor:
            penalty = sum(((p - self.anchor[n]) ** 2).sum() for n, p in self.model.named_parameters())
            loss = loss + 0.5 * self.config.strength * penalty
        return loss

    def telemetry(self) -> dict[str, Any]:
        with torch.no_grad():
            drift = sum(float(((p - self.anchor[n]) ** 2).sum()) for n, p in self.model.named_parameters()) if self.anchor else 0.0
        return {"squared_drift_from_anchor": drift}

    def state_dict(self) -> dict[str, Any]:
        return {"anchor": {n: t.cpu() for n, t in self.anchor.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = next(self.model.parameters()).device
        self.anchor = {n: t.to(device) for n, t in state["anchor"].items()}
