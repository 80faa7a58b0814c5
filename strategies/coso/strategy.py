"""The ``coso`` strategy: which weights CoSO trains, its heads and loss, and the task boundary.

Per task (arXiv 2505.11816; official code ``quinn-ch/CoSO``, ``models/coso.py``):

* the target weights (default: attention output projections) are trained by
  :class:`~clbench.strategies.coso.optimizer.CoSOAdamW`, everything else in the backbone is frozen;
* on backbones with per-task heads (``vit``) only the current head is trained, with plain AdamW at
  ``head_lr``, and the loss is cross-entropy of the current head's logits divided by the
  temperature (targets re-indexed to the task; other tasks' examples dropped); inference
  concatenates the heads of the tasks seen so far;
* after the task, the directions of each layer's Frequent Directions sketch holding
  ``energy_threshold`` of its energy are appended to that layer's historical basis ``M``; the
  next task's optimizer deflates every gradient against it.

Other backbones (CLIP, LLM, classic MLPs) use their own loss with the same optimizer on the
layers named by ``targets``; classic MLPs also train their (single) head with AdamW.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from clbench.api import Backbone, Batch, Experience, Strategy, TaskHeads, TrainSettings
from clbench.api.adapters import ATTENTION_OUT, freeze
from clbench.errors import UsageError
from clbench.strategies.coso.config import CoSOConfig, ResolvedSettings
from clbench.strategies.coso.optimizer import CoSOAdamW
from clbench.strategies.coso.projector import append_basis, captured_energy, energy_rank

log = logging.getLogger(__name__)


class CoSO(Strategy):
    """CoSO: full-weight training in low-rank gradient subspaces orthogonal to earlier tasks' (NeurIPS 2025)."""

    Config = CoSOConfig
    config: CoSOConfig
    backbone_kinds = frozenset({"vit", "clip", "llm", "classic"})
    adapter_placement = ATTENTION_OUT  # the attention output projection, as the official code (``attn.proj``)

    def setup(self, backbone: Backbone) -> None:
        super().setup(backbone)
        self.settings: ResolvedSettings = self.config.resolved(self.ctx.benchmark)
        freeze(backbone.model)
        targets = self.resolve_targets(self.config.targets, "coso")
        self.layers: dict[str, nn.Linear] = backbone.adapter_targets(targets)
        head_is_target = not self.config.targets and targets == backbone.fallback_targets  # a frozen encoder: CoSO trains its head
        if isinstance(backbone, TaskHeads) or head_is_target:
            head_names = set()
        else:
            head_names = set(backbone.heads_to_train())
        self.layers = {n: m for n, m in self.layers.items() if n not in head_names}
        if not self.layers:
            raise UsageError(f"coso targets {', '.join(targets)} leave no layer to train on {backbone.spec!r}")
        for layer in self.layers.values():
            layer.weight.requires_grad_(True)
        self.history: dict[str, torch.Tensor] = {
            name: torch.zeros(layer.out_features, 0, device=layer.weight.device, dtype=torch.float32) for name, layer in self.layers.items()
        }
        self.task_log: list[dict[str, Any]] = []  # per finished task: appended dims and captured energy per layer
        self.optimizer: CoSOAdamW | None = None
        self.current_task = 0
        if isinstance(backbone, TaskHeads):
            backbone.set_visible_tasks(1)
        log.info("coso: preset %s, %d layers (targets %s), r=%d, l=%d, T_gap=%d", self.settings.preset, len(self.layers),
                 ",".join(targets), self.settings.proj_rank, self.settings.sketch_rank, self.settings.update_gap)

    # ---- heads --------------------------------------------------------------------------------
    def _head_parameters(self, task_index: int) -> list[nn.Parameter]:
        if not self.config.train_head:
            return []
        backbone = self.backbone
        if isinstance(backbone, TaskHeads):
            return list(backbone.head_parameters(task_index))
        return [p for head in self.backbone.heads_to_train(self.layers).values() for p in head.parameters()]

    def before_task(self, experience: Experience) -> None:
        self.current_task = experience.index
        backbone = self.backbone
        if isinstance(backbone, TaskHeads):
            for index in range(len(self.ctx.stream.experiences)):
                for p in backbone.head_parameters(index):
                    p.requires_grad_(False)
            backbone.set_visible_tasks(experience.index + 1)
        for p in self._head_parameters(experience.index):
            p.requires_grad_(True)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [layer.weight for layer in self.layers.values()] + self._head_parameters(self.current_task)

    def make_optimizer(self, params: list[nn.Parameter], settings: TrainSettings) -> torch.optim.Optimizer:
        weights = [layer.weight for layer in self.layers.values()]
        weight_ids = {id(w) for w in weights}
        others = [p for p in params if id(p) not in weight_ids]
        coso_lr = self.settings.lr if self.settings.lr is not None else settings.lr
        head_lr = self.settings.head_lr if self.settings.head_lr is not None else settings.lr
        groups: list[dict[str, Any]] = [{
            "params": weights, "lr": coso_lr, "coso": True, "proj_rank": self.settings.proj_rank,
            "sketch_rank": self.settings.sketch_rank, "update_gap": self.settings.update_gap, "sketch_decay": self.config.sketch_decay,
            "svd": self.config.svd, "svd_oversample": self.config.svd_oversample, "svd_power_iters": self.config.svd_power_iters,
            "svd_warm_start": self.config.svd_warm_start, "svd_warm_power_iters": self.config.svd_warm_power_iters, "svd_sketch_dtype": self.config.svd_sketch_dtype,
            "align_signs": self.config.align_signs,
        }]
        if others:
            groups.append({"params": others, "lr": head_lr})
        optimizer = CoSOAdamW(groups, lr=coso_lr, betas=settings.betas, eps=self.config.eps, weight_decay=settings.weight_decay)
        for name, layer in self.layers.items():
            optimizer.set_history(layer.weight, self.history[name])
        self.optimizer = optimizer
        return optimizer

    def loss(self, batch: Batch, experience: Experience) -> torch.Tensor:
        """Current head's logits / temperature against task-local targets (task-head backbones)."""
        backbone = self.backbone
        if not isinstance(backbone, TaskHeads):
            return backbone.loss(batch)
        local = backbone.local_labels(batch["y"], experience.index)
        logits = backbone.head_logits(batch, experience.index) / self.config.temperature
        keep = local >= 0
        if bool(keep.all()):
            return F.cross_entropy(logits, local)
        return F.cross_entropy(logits[keep], local[keep])

    # ---- task boundary --------------------------------------------------------------------------
    def after_task(self, experience: Experience) -> None:
        """Append each layer's top-energy sketch directions to its historical basis."""
        record: dict[str, Any] = {"task": experience.name, "appended": {}, "captured_energy": {}}
        for name, layer in self.layers.items():
            sketch = self.optimizer.sketch(layer.weight) if self.optimizer is not None else None
            if sketch is None or sketch.is_empty():
                record["appended"][name], record["captured_energy"][name] = 0, 0.0
                continue
            k = energy_rank(sketch.sigma, self.config.energy_threshold)
            self.history[name] = append_basis(self.history[name], sketch.basis[:, :k].float(), self.config.orthonormalize_history)
            record["appended"][name] = k
            record["captured_energy"][name] = round(captured_energy(sketch.sigma, k), 6)
        self.task_log.append(record)
        self.optimizer = None  # the next task builds a fresh one: moments, sketch and lr reset

    def telemetry(self) -> dict[str, Any]:
        """Historical subspace per layer after the latest task (see docs/strategies/coso.md).

        Keys: ``coso_history_dims`` (layer -> h, columns of M), ``coso_history_fraction``
        (layer -> h / d_out), ``coso_appended_dims`` (layer -> columns added by this task),
        ``coso_captured_energy`` (layer -> share of the task sketch's energy the appended
        directions hold), ``coso_history_dims_total`` and ``coso_captured_energy_mean``.
        """
        last = self.task_log[-1] if self.task_log else {"appended": {}, "captured_energy": {}}
        dims = {name: int(m.shape[1]) for name, m in self.history.items()}
        energies = last["captured_energy"]
        return {
            "coso_history_dims": dims,
            "coso_history_fraction": {name: round(dims[name] / layer.out_features, 6) for name, layer in self.layers.items()},
            "coso_appended_dims": dict(last["appended"]),
            "coso_captured_energy": dict(energies),
            "coso_history_dims_total": sum(dims.values()),
            "coso_captured_energy_mean": round(sum(energies.values()) / len(energies), 6) if energies else 0.0,
        }

    def orthogonality_error(self) -> dict[str, float]:
        """``‖MᵀM − I‖_max`` per layer: how far each historical basis is from orthonormal."""
        out = {}
        for name, m in self.history.items():
            gram = m.t() @ m
            out[name] = float((gram - torch.eye(gram.shape[0], device=m.device)).abs().max()) if m.shape[1] else 0.0
        return out

    # ---- checkpoint -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"history": {name: m.detach().cpu().clone() for name, m in self.history.items()}, "task_log": self.task_log}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("history", {})
        if set(saved) != set(self.history):
            raise UsageError(f"coso checkpoint holds layers {sorted(saved)}, this run adapts {sorted(self.history)}")
        for name, m in saved.items():
            self.history[name] = m.to(device=self.layers[name].weight.device, dtype=torch.float32)
        self.task_log = list(state.get("task_log", []))
        backbone = self.backbone
        if isinstance(backbone, TaskHeads):
            backbone.set_visible_tasks(max(1, len(self.task_log)))
