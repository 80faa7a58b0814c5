"""The ``altlora`` strategy: ``lora``'s adapters, trained by :class:`AltLoRAOptimizer`.

Hooks: ``setup`` freezes the backbone and wraps the targets with :class:`~clbench.nn.LoRALinear`
(Kaiming A, zero B); ``make_optimizer`` pairs each layer's A and B explicitly into one AltLoRA
group (heads get AdamW in the same optimizer); the runner builds a fresh optimizer per task, so
moments, step counts and the stored previous factors start from zero at every task
(``boundary=continue``); ``after_task`` records the factors' condition numbers and, under
``boundary=merge_reinit``, merges ``s·B A`` into the weights and re-initialises the adapter.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from clbench.api import Backbone, Experience, Strategy, TrainSettings, inject_adapters
from clbench.api.adapters import ALL_LINEAR, QV
from clbench.nn import LoRALinear
from clbench.strategies.altlora.config import AltLoRAConfig
from clbench.strategies.altlora.optimizer import AltLoRAOptimizer


def condition_number(matrix: torch.Tensor) -> float | None:
    """σ_max / σ_min of a factor (``None`` when it is rank-deficient, e.g. B = 0)."""
    sigma = torch.linalg.svdvals(matrix.detach().double())
    if sigma.numel() == 0 or float(sigma[-1]) <= 1e-12 * max(float(sigma[0]), 1e-300):
        return None
    return float(sigma[0] / sigma[-1])


def factor_report(adapters: dict[str, LoRALinear], inverse_fallbacks: int) -> dict[str, Any]:
    """Per-layer condition numbers and norms of A and B, with summaries (JSON-ready)."""
    cond_a = {name: condition_number(layer.lora_A) for name, layer in adapters.items()}
    cond_b = {name: condition_number(layer.lora_B) for name, layer in adapters.items()}
    with torch.no_grad():
        norm_a = {name: float(layer.lora_A.norm()) for name, layer in adapters.items()}
        norm_b = {name: float(layer.lora_B.norm()) for name, layer in adapters.items()}
        update = sum(float(layer.delta_weight().norm()) for layer in adapters.values())

    def log_mean(values: dict[str, float | None]) -> float | None:
        finite = [math.log10(v) for v in values.values() if v is not None]
        return round(sum(finite) / len(finite), 6) if finite else None

    def maximum(values: dict[str, float | None]) -> float | None:
        finite = [v for v in values.values() if v is not None]
        return round(max(finite), 6) if finite else None

    return {
        "cond_A": {k: None if v is None else round(v, 6) for k, v in cond_a.items()},
        "cond_B": {k: None if v is None else round(v, 6) for k, v in cond_b.items()},
        "log10_cond_A_mean": log_mean(cond_a),
        "log10_cond_B_mean": log_mean(cond_b),
        "cond_A_max": maximum(cond_a),
        "cond_B_max": maximum(cond_b),
        "rank_deficient_B": sum(v is None for v in cond_b.values()),
        "norm_A_mean": round(sum(norm_a.values()) / len(norm_a), 6),
        "norm_B_mean": round(sum(norm_b.values()) / len(norm_b), 6),
        "adapter_update_norm": round(update, 6),
        "inverse_fallbacks": inverse_fallbacks,
    }


class AltLoRA(Strategy):
    """AltLoRA: sequential LoRA whose factors are updated by alternating projected least-squares steps."""

    Config = AltLoRAConfig
    config: AltLoRAConfig
    # The ``lora`` strategy's placement: q and v, every CLIP weight.
    adapter_placement = QV
    adapter_placement_by_kind = {"clip": ALL_LINEAR}

    def setup(self, backbone: Backbone) -> None:
        super().setup(backbone)
        cfg = self.config
        lora = cfg.kind_settings(backbone.kind)  # rank, alpha, dropout: lora's per-kind table unless set
        self.adapters: dict[str, LoRALinear] = inject_adapters(
            backbone, self.resolve_targets(cfg.targets, "altlora"),
            lambda _, layer: LoRALinear(layer, lora["rank"], lora["alpha"], lora["dropout"]), heads=cfg.train_head)
        self.optimizer: AltLoRAOptimizer | None = None
        self.carried: dict[int, tuple[torch.Tensor | None, torch.Tensor | None]] = {}
        self.fallbacks = 0
        self.last_report: dict[str, Any] = {}

    def make_optimizer(self, params: list[nn.Parameter], settings: TrainSettings) -> torch.optim.Optimizer:
        factor_ids = {id(p) for layer in self.adapters.values() for p in (layer.lora_A, layer.lora_B)}
        groups: list[dict[str, Any]] = [{
            "params": [layer.lora_A, layer.lora_B], "altlora": True, "scaling": layer.scaling, "variant": self.config.variant,
            "inv_s2_scaling": self.config.inv_s2_scaling, "follow_lr_schedule": self.config.follow_lr_schedule,
            "plus_transport_stored_momentum": self.config.plus_transport_stored_momentum,
            "alternation": self.config.alternation, "alternation_block": self.config.alternation_block,
        } for layer in self.adapters.values()]
        others = [p for p in params if id(p) not in factor_ids]
        if others:
            groups.append({"params": others})
        optimizer = AltLoRAOptimizer(groups, lr=settings.lr, betas=settings.betas, eps=self.config.eps,
                                     weight_decay=settings.weight_decay, reg=self.config.reg)
        if self.config.carry_old_factors and self.carried:
            optimizer.seed_previous_factors(self.carried)
        self.optimizer = optimizer
        return optimizer

    def after_task(self, experience: Experience) -> None:
        if self.optimizer is not None:
            self.fallbacks += self.optimizer.inverse_fallbacks
            if self.config.carry_old_factors:
                self.carried = {k: (None if b is None else b.detach().cpu().clone(), None if a is None else a.detach().cpu().clone())
                                for k, (b, a) in self.optimizer.previous_factors().items()}
        self.optimizer = None
        self.last_report = factor_report(self.adapters, self.fallbacks)  # the factors this task trained, before any merge
        if self.config.boundary == "merge_reinit":
            for layer in self.adapters.values():
                layer.merge_()

    def telemetry(self) -> dict[str, Any]:
        """Factor condition numbers and norms after the latest task (see docs/strategies/altlora.md).

        ``cond_A`` / ``cond_B``: σ_max/σ_min of each layer's A (r × n) and B (m × r), ``null`` when
        the factor is rank-deficient; ``log10_cond_*_mean`` and ``cond_*_max`` summarise them;
        ``norm_*_mean``: mean Frobenius norms; ``adapter_update_norm``: Σ‖s·B A‖_F;
        ``inverse_fallbacks``: Gram matrices that could not be inverted (identity used), so far.
        """
        return {"altlora": self.last_report} if self.last_report else {}

    def state_dict(self) -> dict[str, Any]:
        carried = {str(k): [b, a] for k, (b, a) in self.carried.items()}
        return {"fallbacks": self.fallbacks, "last_report": self.last_report, "carried": carried}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fallbacks = int(state.get("fallbacks", 0))
        self.last_report = dict(state.get("last_report", {}))
        self.carried = {int(k): (v[0], v[1]) for k, v in state.get("carried", {}).items()}
