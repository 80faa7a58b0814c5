"""The CoDyRA strategy: per task, wrap fresh gated adapters, sparsify their gates, merge them.

Per task (arXiv 2412.01004; ``Artificer-AI-Lab/CoDyRA``):

* ``before_task``: wrap every target layer in a fresh :class:`~clbench.strategies.codyra.layer.CoDyRALinear`
  (Kaiming A, zero B, N(0, 1) gate; drawn after the runner re-seeds the task, so a resumed run
  draws the same adapters) and build the task's κ schedule from its step count;
* ``after_step``: threshold every gate with κ_t once the dense phase is over (no L1 term in the
  loss: the official code applies it as a proximal step, by default with its three masks);
* ``after_task``: drop zero-gate ranks, merge ``B diag(w) A`` into the frozen weights and put the
  plain ``nn.Linear`` layers back, so every evaluation (and the saved model) is the original
  architecture with no adapter left.

Between tasks the model is the plain backbone, so checkpoints hold plain weights and resuming
needs no structural state; the strategy state is only the merged factors kept for the
cumulative-drift telemetry.
"""

from __future__ import annotations

from typing import Any

from clbench.api import Backbone, Experience, Strategy
from clbench.api.adapters import ALL_LINEAR, ATTENTION, freeze, train_heads
from clbench.strategies.codyra.layer import CoDyRALinear, apply_codyra, merge_codyra
from clbench.training import steps_per_task
from clbench.strategies.codyra.config import CoDyRAConfig
from clbench.strategies.codyra.schedule import KappaSchedule
from clbench.strategies.codyra.telemetry import DriftTracker, task_report


class CoDyRA(Strategy):
    """Gated LoRA whose ranks a proximal L1 schedule prunes, merged into the weights after each task."""

    Config = CoDyRAConfig
    config: CoDyRAConfig
    # Every CLIP weight of both encoders (``qkvoinout``, the official runner), every block weight of
    # a ViT, the hidden layers of a classic model; on LLMs the attention projections (the TRACE
    # harness default).
    adapter_placement = ALL_LINEAR
    adapter_placement_by_kind = {"llm": ATTENTION}
    fsdp = True  # per-task adapters wrap the sharded layers; the merge adds each rank's rows (AdapterLinear.add_to_base_weight_)

    def setup(self, backbone: Backbone) -> None:
        super().setup(backbone)
        freeze(backbone.model)
        # Adapters are wrapped per task (before_task); the targets are checked now, before any training.
        self.target_names = tuple(backbone.adapter_targets(self.resolve_targets(self.config.targets, "codyra")))
        if self.config.train_head:
            train_heads(backbone, self.target_names)
        self.adapters: dict[str, CoDyRALinear] = {}
        self.schedule = KappaSchedule(0, self.config.kappa_max, self.config.dense_fraction, self.config.kappa_levels)
        self.prox_steps = 0
        self.drift = DriftTracker() if self.config.track_drift else None
        self.last_report: dict[str, Any] = {}

    def before_task(self, experience: Experience) -> None:
        layers = {name: self.model.get_submodule(name) for name in self.target_names}
        self.adapters = apply_codyra(self.model, layers, self.config.rank)
        total = steps_per_task(len(experience.train), self.ctx.train)  # type: ignore[arg-type]
        schedule = KappaSchedule(total, self.config.kappa_max, self.config.dense_fraction, self.config.kappa_levels)
        reference = self.config.kappa_reference_steps  # 0: the official κ_max as is
        self.schedule = schedule.rescaled(reference) if reference else schedule
        self.prox_steps = 0

    def after_step(self, step: int, experience: Experience) -> None:
        if not self.schedule.applies(step):
            return
        kappa = self.schedule.kappa(step)
        for adapter in self.adapters.values():
            adapter.prox_(kappa, self.config.prox)
        self.prox_steps += 1

    def after_task(self, experience: Experience) -> None:
        self._merge()

    def _merge(self) -> None:
        merged = merge_codyra(self.model, self.adapters)
        self.adapters = {}
        if self.drift is not None:
            for name, update in merged.items():
                self.drift.add(name, update)
        self.last_report = task_report(self.config.rank, merged, self.drift, self.schedule.kappa_max, self.prox_steps)

    def telemetry(self) -> dict[str, Any]:
        """Rank allocation and drift of the last merge (see ``docs/strategies/codyra.md``)."""
        return {"codyra": self.last_report} if self.last_report else {}

    def state_dict(self) -> dict[str, Any]:
        return {"drift": self.drift.state_dict() if self.drift is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.drift is not None and state.get("drift") is not None:
            self.drift.load_state_dict(state["drift"])
