"""The ``mora`` strategy: wrap the target layers with MoRA atom banks and grow them per task.

Hooks: ``setup`` freezes the backbone and wraps the targets; ``before_task`` freezes the previous
task's atoms into the bank and starts fresh ones (the runner then builds a new optimizer over the
fresh atoms, so optimizer state is rebuilt per task); ``eval_task_start`` / ``eval_task_end``
count, per evaluated task, which task's atoms the gates activate; ``telemetry`` reports bank size,
active experts per token and the routing matrix; ``state_dict`` / ``load_state_dict`` rebuild the
grown banks on resume before the runner loads the saved tensors.

Settings left as ``None`` take the paper runners' values for the backbone kind (CLIP r=16, topk=16,
τ=0.01, δ=0.2, AdamW 5e-4 betas (0.9, 0.9999), cosine, 500 iterations of batch 64; LLM r=8,
alpha 16, dropout 0.1, topk=8, τ=0.03, δ=0.2, AdamW 5e-4 cosine; see docs/strategies/mora.md);
only training settings with no MoRA default fall back to the benchmark's.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch

from clbench import distributed
from clbench.api import Backbone, Experience, Strategy, inject_adapters
from clbench.api.adapters import ALL_LINEAR, ATTENTION
from clbench.strategies.mora.layer import MoRALinear
from clbench.strategies.mora.config import MoRAConfig

UNTRAINED = "(untrained)"
log = logging.getLogger("clbench")


class MoRA(Strategy):
    """Self-activated sparse mixture of rank-1 experts; a new frozen bank slice per task."""

    Config = MoRAConfig
    config: MoRAConfig
    # The official runners: every CLIP weight of both encoders (XTAIL), q/k/v/o of an LLM (TRACE);
    # not in the paper: every block weight of a ViT, the hidden layers of a classic model.
    adapter_placement = ALL_LINEAR
    adapter_placement_by_kind = {"llm": ATTENTION}
    fsdp = True  # the bank and the atoms are new tensors beside the frozen weight, never sharded

    def setup(self, backbone: Backbone) -> None:
        super().setup(backbone)
        settings = self.settings = self.config.layer_settings(backbone.kind)
        targets = self.resolve_targets(self.config.targets, "mora")
        # The generic target of every adapted layer, so the telemetry can break the bank down by it.
        self.target_of: dict[str, str] = {}
        for target in targets:
            for name in backbone.adapter_targets([target]):
                self.target_of.setdefault(name, target)
        self.layers: dict[str, MoRALinear] = inject_adapters(backbone, targets, lambda _, layer: MoRALinear(layer, settings),
                                                             heads=self.config.train_head)
        # The resolved per-kind values (the config records None for "the kind's default").
        log.info("mora: %d adapted layers, settings %s", len(self.layers), dataclasses.asdict(self.settings))
        self.frozen_tasks: list[str] = []  # owner of each r-atom block of the bank, in order
        self.current_task: str | None = None  # owner of the trainable atoms
        self._routing: dict[str, tuple[list[float], int]] = {}  # evaluated task -> (activations per owner, tokens)
        self._routing_order: list[str] = []
        self.train_routing: dict[str, float] = {}  # task -> share of its training tokens routed to its atoms

    # ---- task boundary -------------------------------------------------------------------------
    def before_task(self, experience: Experience) -> None:
        """Append the previous task's atoms to the frozen bank and start fresh trainable ones."""
        if self.current_task is not None:
            for layer in self.layers.values():
                layer.freeze_current_()
            self.frozen_tasks.append(self.current_task)
        self.current_task = experience.name
        for layer in self.layers.values():
            layer.start_fresh_routing()

    def after_task(self, experience: Experience) -> None:
        """Record the share of training tokens that reached the task's atoms; warn when it is 0."""
        routed = seen = 0
        for layer in self.layers.values():
            fresh, tokens = layer.stop_fresh_routing()
            routed, seen = routed + fresh, seen + tokens
        routed, seen = distributed.sum_counts(routed, seen)  # each rank trained on its shard of every batch
        if not seen:  # nothing was trained (e.g. a zero-step budget)
            return
        share = routed / seen
        self.train_routing[experience.name] = round(share, 6)
        if routed == 0:
            log.warning("mora: task %d (%s) cannot learn: no training token routes to its atoms",
                        len(self.frozen_tasks) + 1, experience.name)

    # ---- routing statistics --------------------------------------------------------------------
    def eval_task_start(self, experience: Experience) -> None:
        if experience.name in self._routing:  # a task seen again: a new evaluation pass began
            self._routing, self._routing_order = {}, []
        for layer in self.layers.values():
            layer.start_usage()

    def eval_task_end(self, experience: Experience) -> None:
        usage = torch.zeros(self.settings.rank * (len(self.frozen_tasks) + 1), dtype=torch.float64)
        tokens = 0
        for layer in self.layers.values():
            counts, seen = layer.stop_usage()
            usage += counts.cpu()
            tokens += seen
        if distributed.evaluation_is_sharded(self.model):  # each rank evaluated its slice of the test set: count them all
            distributed.all_reduce_sum_([usage])
            (tokens,) = distributed.sum_counts(tokens)
        per_owner = usage.view(-1, self.settings.rank).sum(dim=1)
        self._routing[experience.name] = ([float(v) for v in per_owner], tokens)
        self._routing_order.append(experience.name)

    def routing_columns(self) -> list[str]:
        """Owners of the atoms, in bank order: past tasks, then the current (trainable) atoms."""
        return [*self.frozen_tasks, self.current_task or UNTRAINED]

    def telemetry(self) -> dict[str, Any]:
        """Bank size, active experts per token after δ, and the routing matrix of the last evaluation.

        ``routing_matrix[i][j]``: over every adapted layer and every token processed while
        evaluating task ``routing_rows[i]``, the share of (token, atom) activations (nonzero gate
        after top-k, softmax and δ) that fall on atoms trained on task ``routing_columns[j]``.
        ``active_experts_per_token[_by_task]``: activations per (token, layer) pair.
        ``train_fresh_routing_share[_by_task]``: over every adapted layer and every token position
        processed in training (prompt, answer and padding), the share of (token, layer) pairs whose
        top-k holds at least one atom of the task being trained: the only pairs that give those
        atoms a gradient (0 = the task cannot learn).
        """
        by_target: dict[str, int] = {}
        for name, layer in self.layers.items():
            by_target[self.target_of[name]] = by_target.get(self.target_of[name], 0) + layer.atom_parameters()
        rows, matrix, active, tokens_by_row = [], [], [], []
        for name in self._routing_order:
            counts, tokens = self._routing[name]
            total = sum(counts)
            rows.append(name)
            matrix.append([round(c / total, 6) if total else 0.0 for c in counts])
            active.append(round(total / tokens, 6) if tokens else 0.0)
            tokens_by_row.append(tokens)
        all_tokens = sum(tokens_by_row)
        all_active = sum(sum(self._routing[n][0]) for n in self._routing_order)
        any_layer = next(iter(self.layers.values()))
        return {"mora": {
            "bank_atoms_per_module": any_layer.total_atoms,
            "frozen_atoms_per_module": any_layer.frozen_atoms,
            "bank_parameters": sum(by_target.values()),
            "bank_parameters_by_target": by_target,
            "active_experts_per_token": round(all_active / all_tokens, 6) if all_tokens else None,
            "active_experts_per_token_by_task": active,
            "routing_rows": rows,
            "routing_columns": self.routing_columns(),
            "routing_matrix": matrix,
            "routing_tokens": tokens_by_row,
            "train_fresh_routing_share": self.train_routing.get(self.current_task or ""),
            "train_fresh_routing_share_by_task": dict(self.train_routing),
        }}

    # ---- checkpoint and resume -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Owners of the bank blocks and of the current atoms (the atoms themselves are model tensors)."""
        return {"frozen_tasks": list(self.frozen_tasks), "current_task": self.current_task, "train_routing": dict(self.train_routing)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Regrow every bank to its saved size so the runner can load the saved atoms into it."""
        self.frozen_tasks = list(state["frozen_tasks"])
        self.current_task = state["current_task"]
        self.train_routing = dict(state.get("train_routing", {}))
        for layer in self.layers.values():
            layer.resize_bank_(self.settings.rank * len(self.frozen_tasks))
