"""The ``sara`` strategy: per task, select the sub-threshold weights, train them in place, freeze the grown ones.

* ``setup``: freeze the backbone, list the eligible tensors (``scope``), fix the global θ from the
  pretrained weights (``threshold`` or ``budget``) and make the heads of head-trained kinds trainable;
* ``before_task``: select ``M = |W| < θ`` on the *current* weights (``boundary=reselect``; entries
  earlier tasks pushed past θ are now frozen) or reuse the pretrained selection (``fixed_mask``),
  and parametrize each tensor with a :class:`~clbench.strategies.sara.sparse.SparseUpdate`;
* ``make_optimizer``: :class:`~clbench.strategies.sara.optimizer.SaRAAdamW` over the value vectors
  (and the heads), with the nuclear-norm step as its penalty hook;
* ``after_step``: at ``progressive_frac`` of the task's steps, shrink every selection to the entries
  still below θ and reset their Adam state;
* ``after_task``: write the values into the weights and remove the parametrizations, so every
  evaluation and checkpoint sees the plain backbone.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn

from clbench.api import Backbone, Experience, Strategy, TrainSettings
from clbench.api.adapters import ALL_LINEAR, freeze, placement_targets, train_heads
from clbench.errors import UsageError
from clbench.strategies.sara.config import SaRAConfig
from clbench.strategies.sara.optimizer import SaRAAdamW
from clbench.strategies.sara.sparse import SparseSlot, attach, detach_slot, nuclear_gradient, official_lr, selection_threshold
from clbench.training import steps_per_task

log = logging.getLogger("clbench")

Tensors = list[tuple[str, nn.Module, str]]


def selection_layers(backbone: Backbone, config: SaRAConfig) -> dict[str, nn.Linear]:
    """The linear layers ``scope=targets`` selects from (a frozen encoder falls back to its head)."""
    return backbone.adapter_targets(placement_targets(backbone, config.targets, SaRA.adapter_placement, "sara"))


def eligible_tensors(backbone: Backbone, config: SaRAConfig, heads: set[str]) -> Tensors:
    """``(name, module, attribute)`` of every tensor SaRA may select from.

    ``scope=targets``: the weights of the target linear layers. ``scope=all_params``: every
    parameter of the model except the heads trained densely and tensors shared by several modules
    (tied embeddings), which a per-module parametrization would untie.
    """
    if config.scope == "targets":
        layers = selection_layers(backbone, config)
        return [(f"{name}.weight", module, "weight") for name, module in layers.items() if name not in heads]
    owners: dict[int, int] = {}
    for _, module in backbone.model.named_modules():
        for p in module._parameters.values():
            if p is not None:
                owners[id(p)] = owners.get(id(p), 0) + 1
    out: Tensors = []
    for name, module in backbone.model.named_modules():
        if any(name == h or name.startswith(h + ".") for h in heads):
            continue
        for attr, p in module._parameters.items():
            if p is not None and owners[id(p)] == 1:
                out.append((f"{name}.{attr}" if name else attr, module, attr))
    return out


class SaRA(Strategy):
    """SaRA: progressive sparse fine-tuning of the smallest-magnitude pretrained weights, in place."""

    Config = SaRAConfig
    config: SaRAConfig
    # ``scope=targets`` selects from every adapter-capable linear layer (the official code covers every UNet tensor).
    adapter_placement = ALL_LINEAR

    def setup(self, backbone: Backbone) -> None:
        super().setup(backbone)
        freeze(backbone.model)
        self.heads: dict[str, nn.Module] = {}
        if self.config.train_head:
            # A head that is itself a selection target (a frozen encoder's fallback) trains sparsely, not fully.
            selected = selection_layers(backbone, self.config) if self.config.scope == "targets" else {}
            self.heads = dict(train_heads(backbone, selected))
        self.tensors = eligible_tensors(backbone, self.config, set(self.heads))
        if not self.tensors:
            raise UsageError(f"sara finds no tensor to select from on {backbone.spec!r} (scope {self.config.scope})")
        weights = [getattr(module, attr) for _, module, attr in self.tensors]
        self.eligible = sum(w.numel() for w in weights)
        self.threshold = self.config.threshold if self.config.threshold is not None else selection_threshold(weights, self.config.budget)
        selected = sum(int((w.detach().abs() < self.threshold).sum()) for w in weights)
        if selected == 0:
            raise UsageError(f"sara selects no weight on {backbone.spec!r}: every |w| is >= the threshold {self.threshold:.3g}; "
                             "raise -S threshold or -S budget")
        self.fixed_masks = {name: getattr(m, a).detach().abs() < self.threshold for name, m, a in self.tensors} \
            if self.config.boundary == "fixed_mask" else None
        self.slots: list[SparseSlot] = []
        self.optimizer: SaRAAdamW | None = None
        self.task_log: list[dict[str, Any]] = []
        self.reselections = 0
        self.record: dict[str, Any] = {}
        self.progressive_step: int | None = None
        self.pending_reselect = False
        self.generator = torch.Generator()
        self.selection_start: dict[str, torch.Tensor] = {}
        log.info("sara: θ=%.4g selects %d of %d eligible entries (%.2f%%) in %d tensors", self.threshold, selected, self.eligible,
                 100 * selected / self.eligible, len(self.tensors))

    # ---- selection ------------------------------------------------------------------------------
    def before_task(self, experience: Experience) -> None:
        self.slots = []
        for name, module, attr in self.tensors:
            weight = getattr(module, attr)
            mask = self.fixed_masks[name] if self.fixed_masks is not None else weight.detach().abs() < self.threshold
            if bool(mask.any()):
                self.slots.append(attach(name, module, attr, mask, inplace=self.config.inplace))
        selected = self.selected()
        previous = self.task_log[-1]["selected"] if self.task_log else None
        if previous is not None:
            self.reselections += 1
        self.record = {
            "task": experience.name, "selected_task_start": selected,
            "frozen_at_task_start": (previous - selected) if previous is not None and self.fixed_masks is None else 0,
            "frozen_progressive": 0, "penalty_steps": 0,
        }
        total = steps_per_task(len(experience.train), self.ctx.train)  # type: ignore[arg-type]
        point = math.floor(self.config.progressive_frac * total)
        self.progressive_step = point if 0 < point < total else None
        self.pending_reselect = False
        # Drawn from the runner's per-task seed, so a resumed run draws the same matrices.
        self.generator = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,))))
        self._start_selection()

    def _start_selection(self) -> None:
        """Book-keeping at each (re)selection: the |w| quirk and the reference for ``rank_target=delta``."""
        for slot in self.slots:
            slot.update.use_abs = self.config.faithful_quirks
        if self.config.rank_target == "delta":
            self.selection_start = {slot.name: slot.update.values.detach().clone() for slot in self.slots}

    def selected(self) -> int:
        """|M| over every parametrized tensor."""
        return sum(slot.update.count for slot in self.slots)

    def value_parameters(self) -> list[nn.Parameter]:
        """The trainable value vectors of the current selection."""
        return [slot.update.values for slot in self.slots]

    # ---- optimizer and steps -----------------------------------------------------------------------
    def values_lr(self, settings: TrainSettings) -> float:
        """The learning rate of the selected entries: ``lr``, else the benchmark's or the official rule's."""
        if self.config.lr is None and self.config.lr_rule == "official":
            return official_lr(self.threshold)
        return settings.lr

    def make_optimizer(self, params: list[nn.Parameter], settings: TrainSettings) -> torch.optim.Optimizer:
        values = self.value_parameters()
        value_ids = {id(v) for v in values}
        groups: list[dict[str, Any]] = [{"params": values, "lr": self.values_lr(settings)}]
        others = [p for p in params if id(p) not in value_ids]
        if others:
            groups.append({"params": others})
        optimizer = SaRAAdamW(groups, lr=settings.lr, betas=settings.betas, eps=self.config.eps, weight_decay=settings.weight_decay)
        if self.config.lambda_rank > 0:
            optimizer.penalty = self._nuclear_step
        self.record["lr"] = groups[0]["lr"]
        self.optimizer = optimizer
        return optimizer

    def _penalty_slots(self) -> list[SparseSlot]:
        limit = self.config.rank_min_dim
        return [s for s in self.slots if s.original.dim() == 2 and min(s.original.shape) > limit and s.update.count > 0]

    def _nuclear_step(self) -> None:
        """Add ``λ·∂‖X ⊙ M‖_*/∂values`` for one random eligible matrix (X = W, or W − W_selected)."""
        eligible = self._penalty_slots()
        if not eligible:
            return
        slot = eligible[int(torch.randint(len(eligible), (1,), generator=self.generator))]
        values = slot.update.values
        entries = values.detach()
        if self.config.rank_target == "delta":
            entries = entries - self.selection_start[slot.name]
        matrix = slot.update.write(torch.zeros_like(slot.original), entries)
        grad = self.config.lambda_rank * slot.update.gather(nuclear_gradient(matrix)).to(values.dtype)
        values.grad = grad if values.grad is None else values.grad + grad
        self.record["penalty_steps"] += 1

    def after_step(self, step: int, experience: Experience) -> None:
        if self.config.faithful_quirks:
            for slot in self.slots:
                slot.update.use_abs = False
        if self.pending_reselect:  # faithful: the code re-selects inside the step it skips
            self.pending_reselect = False
            self.progressive_reselect()
        elif self.progressive_step is not None and step + 1 == self.progressive_step:
            if self.config.faithful_quirks and self.optimizer is not None:
                self.optimizer.skip_next = True
                self.pending_reselect = True
            else:
                self.progressive_reselect()

    @torch.no_grad()
    def progressive_reselect(self) -> int:
        """Shrink every selection to ``M ∧ (|W| < θ)``; frozen entries keep their trained values.

        Returns how many entries left the selection. Their Adam state is reset (the code rebuilds
        the whole optimizer). Under ``faithful_quirks`` it runs after the step the code skips, and
        the next forward reads |w|.
        """
        dropped = 0
        for slot in self.slots:
            current = slot.current()
            slot.original.copy_(current)  # commit: entries leaving the selection keep their values
            dropped += slot.update.reselect_(current, current.abs().reshape(-1) < self.threshold)
        if self.optimizer is not None:
            self.optimizer.reset_state(self.value_parameters())
        self._start_selection()
        self.reselections += 1
        self.record["frozen_progressive"] += dropped
        return dropped

    # ---- task boundary ------------------------------------------------------------------------------
    def after_task(self, experience: Experience) -> None:
        selected = self.selected()
        for slot in self.slots:
            detach_slot(slot)
        self.slots = []
        self.optimizer = None
        self.task_log.append({**self.record, "selected": selected})

    def telemetry(self) -> dict[str, Any]:
        """Selection size and re-selections after the latest task (see docs/strategies/sara.md).

        ``selected`` / ``selected_fraction``: |M| (and |M| / eligible entries) at the end of the
        task; ``selected_task_start``: |M| when the task began; ``frozen_at_task_start``: entries
        selected at the end of the previous task that earlier training pushed past θ;
        ``frozen_progressive``: entries frozen by this task's progressive step; ``reselections``:
        re-selection events so far; ``penalty_steps``: nuclear-norm steps this task.
        """
        if not self.task_log:
            return {}
        last = {k: v for k, v in self.task_log[-1].items() if k != "task"}
        return {"sara": {**last, "threshold": self.threshold, "eligible": self.eligible,
                         "selected_fraction": round(last["selected"] / self.eligible, 8), "reselections": self.reselections}}

    def state_dict(self) -> dict[str, Any]:
        return {"task_log": self.task_log, "reselections": self.reselections, "threshold": self.threshold}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not math.isclose(float(state["threshold"]), self.threshold, rel_tol=1e-12):
            raise UsageError(f"sara checkpoint used threshold {state['threshold']:.6g}, this run computes {self.threshold:.6g}")
        self.task_log = list(state["task_log"])
        self.reselections = int(state["reselections"])
