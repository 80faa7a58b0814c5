"""``inflora``: InfLoRA, interference-free low-rank adaptation (Liang & Li, CVPR 2024).

Per task, each adapted layer gets a new LoRA branch whose down-projection ``A_t`` is *designed*
rather than learned (arXiv 2404.00228; official code ``liangyanshuo/InfLoRA``):

1. before training, pass the task's training data through the model and accumulate each
   adapted layer's input second moment ``C = mean(x xᵀ)``;
2. remove from ``C`` the old tasks' input subspace kept by DualGPM (or retain only the free
   subspace), take its SVD and set ``A_t`` to the top-r left singular vectors divided by √3;
   ``A_t`` stays frozen, so the update ``B_t A_t`` only acts on new directions;
3. train only ``B_t`` (zero-initialised) and the task head;
4. after training, recompute ``C`` under the trained model and update DualGPM with an energy
   threshold that ramps linearly from ``lamb`` to ``lame`` over the tasks; ``A_t, B_t`` join the
   frozen bank.

Branches are unscaled (``B A x``), as in the official ViT code. On a timm ViT (``vit:``, the
paper's setting) the branch sits on the fused ``qkv`` projection and adds only to its key and
value outputs (one shared designed ``A``, ``B = [B_k; B_v]``, exactly the official pair of
branches); LLMs and CLIP use their separate ``k, v`` layers; the classic MLP its hidden layers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from clbench.api import Backbone, Batch, Experience, Strategy, StrategyConfig
from clbench.errors import UsageError
from clbench.nn import TaskLoRALinear, apply_task_lora
from clbench.strategies.inflora.dualgpm import DualGPM, design_down_projection, energy_threshold

# Default targets per backbone kind: the paper adapts K and V of every attention block (on a
# timm ViT: the key and value outputs of the fused qkv layer); the classic MLP has only its
# hidden layers.
DEFAULT_TARGETS = {"classic": ("fc",), "llm": ("k", "v"), "clip": ("k", "v"), "vit": ("qkv",)}


def key_value_outputs(name: str, layer: nn.Linear) -> tuple[int, int] | None:
    """The K and V output rows of a fused ``qkv`` projection (``[q; k; v]``), else ``None``."""
    if name.endswith("qkv") and layer.out_features == 3 * layer.in_features:
        return layer.in_features, 3 * layer.in_features
    return None


@dataclass(frozen=True, kw_only=True)
class InfLoRAConfig(StrategyConfig):
    """InfLoRA: per-task LoRA with a designed, frozen A_t orthogonal to old tasks' inputs.

    Defaults from the official ImageNet-R config (``configs/mimg10_inflora.json``): rank 10,
    lamb 0.98, lame 1.0, Adam, lr 5e-4, cosine schedule. Epochs follow the benchmark (the paper
    trains 50 per task on ImageNet-R).

    Attributes:
        rank: rank r of each task's branch.
        lamb: DualGPM energy threshold after the first task.
        lame: the threshold the linear ramp heads to at the last task.
        targets: generic layer names to adapt or module-name globs; empty = the kind's default
            (classic: fc; llm: k, v; clip: k, v; vit: the K and V outputs of qkv).
        kv_only: on fused ``qkv`` layers, adapt only the key and value outputs (the paper).
        train_head: also train the classifier head: classic backbones' head; on task-head
            backbones (vit) the current task's head only, as the official code.
        stats_batches: cap on the batches used to estimate each input matrix (0 = the whole
            task's training data, as the official code).
    """

    rank: int = 10
    lamb: float = 0.98
    lame: float = 1.0
    targets: tuple[str, ...] = ()
    kv_only: bool = True
    train_head: bool = True
    stats_batches: int = 0
    optimizer: str | None = "adam"
    lr: float | None = 5e-4
    scheduler: str | None = "cosine"

    DEPARTURES = {
        "targets": "LLM and CLIP k,v and classic fc: the paper adapts K and V of ViT blocks only; not measured",
        "lr": "Adam 5e-4 cosine (the official ViT setting) applied on every kind; not measured off ViT",
    }

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        if not (0 < self.lamb <= 1 and 0 < self.lame <= 1):
            raise ValueError(f"lamb and lame must be in (0, 1], got {self.lamb} and {self.lame}")
        if self.stats_batches < 0:
            raise ValueError(f"stats_batches must be >= 0, got {self.stats_batches}")


class InputMoments:
    """Accumulates ``Σ x xᵀ`` and the token count of each watched layer's input (forward hooks)."""

    def __init__(self, layers: dict[str, nn.Module]) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = dict.fromkeys(layers, 0)
        self._handles = [layer.register_forward_pre_hook(self._hook(name)) for name, layer in layers.items()]

    def _hook(self, name: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def record(module: nn.Module, inputs: tuple[Any, ...]) -> None:
            x = inputs[0].detach()
            x = x.reshape(-1, x.shape[-1]).double()  # float64: sums over many tokens
            gram = x.t() @ x
            self.sums[name] = self.sums[name] + gram if name in self.sums else gram
            self.counts[name] += x.shape[0]
        return record

    def close(self) -> dict[str, torch.Tensor]:
        """Remove the hooks and return each layer's mean ``x xᵀ`` (float64, on the CPU)."""
        for handle in self._handles:
            handle.remove()
        missing = [n for n, c in self.counts.items() if c == 0]
        if missing:
            raise UsageError(f"inflora: adapted layer(s) {', '.join(missing)} saw no input; check the targets")
        return {name: (self.sums[name] / self.counts[name]).cpu() for name in self.counts}


class InfLoRA(Strategy):
    """Freeze the backbone; per task, add a LoRA branch with a designed frozen A and train its B."""

    Config = InfLoRAConfig
    config: InfLoRAConfig

    def setup(self, backbone: Backbone) -> None:
        super().setup(backbone)
        for p in backbone.model.parameters():
            p.requires_grad_(False)
        targets = self.config.targets or backbone.default_targets(DEFAULT_TARGETS.get(backbone.kind, ("fc",)), "inflora")
        layers = backbone.adapter_targets(targets)
        too_narrow = [n for n, layer in layers.items() if layer.in_features < self.config.rank]
        if too_narrow:
            raise UsageError(f"inflora: rank {self.config.rank} exceeds the input width of {', '.join(too_narrow)}; lower -S rank")
        outputs = {n: kv for n, layer in layers.items() if self.config.kv_only and (kv := key_value_outputs(n, layer))}
        # alpha = rank: the official branches are unscaled (B A x).
        self.adapters: dict[str, TaskLoRALinear] = apply_task_lora(backbone.model, layers, self.config.rank, float(self.config.rank),
                                                                   outputs=outputs)
        for adapter in self.adapters.values():
            adapter.lora_A.requires_grad_(False)  # A_t is designed, never trained
        if self.config.train_head and backbone.kind == "classic":
            for head in backbone.head_layers(layers).values():
                head.requires_grad_(True)
        self.memory: dict[str, DualGPM] = {}
        self.tasks_done = 0
        self.thresholds: list[float] = []

    # ---- input statistics ------------------------------------------------------------------
    @torch.no_grad()
    def input_moments(self, experience: Experience) -> dict[str, torch.Tensor]:
        """Each adapted layer's mean ``x xᵀ`` over the task's training data, current model."""
        model = self.model
        was_training = model.training
        model.eval()  # no dropout while measuring, like the official no-grad pass
        moments = InputMoments(dict(self.adapters))
        try:
            loader = DataLoader(experience.train, batch_size=self.ctx.train.batch_size, shuffle=False, collate_fn=self.backbone.collate)
            for i, batch in enumerate(loader):
                if self.config.stats_batches and i >= self.config.stats_batches:
                    break
                self.backbone.loss(self.backbone.move_batch(batch))  # a forward pass fires the hooks
        finally:
            result = moments.close()
            model.train(was_training)
        return result

    # ---- hooks -----------------------------------------------------------------------------
    def before_task(self, experience: Experience) -> None:
        """Design every layer's ``A_t`` from the task's inputs outside the old subspace."""
        self._select_head(experience)
        moments = self.input_moments(experience)
        for name, adapter in self.adapters.items():
            a = design_down_projection(moments[name], self.memory.get(name), self.config.rank)
            adapter.set_adapter_A_(a.to(adapter.lora_A.device))
            with torch.no_grad():
                adapter.lora_B.zero_()

    def _select_head(self, experience: Experience) -> None:
        """Task-head backbones (vit): only the current task's head trains, as the official code,
        and predictions use the heads of the tasks seen so far (the official ``interface``)."""
        head_task = getattr(self.backbone, "head_task", None)
        if self.backbone.kind == "classic" or not head_task:
            return
        set_visible = getattr(self.backbone, "set_visible_tasks", None)
        if set_visible is not None:
            set_visible(experience.index + 1)
        if not self.config.train_head:
            return
        heads = self.backbone.adapter_targets(["head"])
        current = f"heads.{head_task[experience.index]}"
        for name, head in heads.items():
            for p in head.parameters():
                p.requires_grad_(name == current)

    def loss(self, batch: Batch, experience: Experience) -> torch.Tensor:
        """Task-head backbones: cross-entropy over the current task's head only (the official
        loss masks the batch to the new classes and scores them with the new classifier)."""
        head_logits = getattr(self.backbone, "head_logits", None)
        local_labels = getattr(self.backbone, "local_labels", None)
        if head_logits is None or local_labels is None:
            return self.backbone.loss(batch)
        return F.cross_entropy(head_logits(batch, experience.index), local_labels(batch["y"], experience.index))

    def after_task(self, experience: Experience) -> None:
        """Update DualGPM with the trained model's inputs, then freeze the branch into the bank."""
        total = len(self.ctx.stream.tasks)
        threshold = energy_threshold(self.tasks_done, total, self.config.lamb, self.config.lame)
        moments = self.input_moments(experience)
        for name, adapter in self.adapters.items():
            if name in self.memory:
                self.memory[name].update(moments[name], threshold)
            else:
                self.memory[name] = DualGPM.first(moments[name], threshold)
            adapter.consolidate_()
            adapter.lora_A.requires_grad_(False)
        self.thresholds.append(threshold)
        self.tasks_done += 1

    def telemetry(self) -> dict[str, Any]:
        """Subspace sizes DualGPM keeps (used dimensions per layer) and the bank rank."""
        used = [m.used_dims for m in self.memory.values()]
        dims = [m.dim for m in self.memory.values()]
        return {
            "adapted_layers": len(self.adapters),
            "bank_rank_per_layer": next(iter(self.adapters.values())).bank_rank if self.adapters else 0,
            "gpm_used_dims_mean": sum(used) / len(used) if used else 0.0,
            "gpm_used_fraction_mean": sum(u / d for u, d in zip(used, dims, strict=True)) / len(used) if used else 0.0,
            "gpm_retain_layers": sum(m.mode == "retain" for m in self.memory.values()),
            "energy_threshold": self.thresholds[-1] if self.thresholds else None,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "tasks_done": self.tasks_done,
            "thresholds": list(self.thresholds),
            "bank_ranks": {name: a.bank_rank for name, a in self.adapters.items()},
            "memory": {name: {"basis": m.basis.clone(), "mode": m.mode} for name, m in self.memory.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild the banks' sizes and the DualGPM memory; the runner then loads the banks."""
        self.tasks_done = int(state["tasks_done"])
        self.thresholds = [float(t) for t in state["thresholds"]]
        for name, rank in state["bank_ranks"].items():
            self.adapters[name].resize_bank_(int(rank))
        self.memory = {name: DualGPM(entry["basis"].double(), str(entry["mode"])) for name, entry in state["memory"].items()}
