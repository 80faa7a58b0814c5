"""``lwf``: Learning without Forgetting (Li & Hoiem 2016).

At the start of every task after the first, a frozen copy of the model is taken (the teacher).
Training minimises ``L_t + λ · KL(softmax(z_old/T) ‖ softmax(z_new/T))`` on the current task's
inputs, where ``z_old`` are the teacher's outputs and ``z_new`` the student's, with ``T = 2``.

Which outputs are distilled depends on what the old model predicted:

* classification under the task-incremental protocol: each previous task's head (its own
  classes, the batch scored as if it came from that task), one KL term per old task, averaged;
* other classification protocols (class-, domain-incremental, task-agnostic): one head over the
  union of the previous tasks' classes. For CLIP this is the image–text logits against the
  previous class texts;
* generation (LLMs): the next-token distributions at the answer positions, over the vocabulary.
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from clbench.api import Backbone, Batch, Experience, Strategy, StrategyConfig
from clbench.errors import UsageError


@dataclass(frozen=True, kw_only=True)
class LwFConfig(StrategyConfig):
    """Learning without Forgetting.

    Attributes:
        lwf_lambda: λ, weight of the distillation term (LwF's λ_o = 1).
        temperature: softmax temperature T of both distributions (LwF: 2).
        distill_first_task: also distill toward the initial (pretrained) model on the first
            task; off by default, as in LwF, where the first task has no old outputs.
        train_params: globs over parameter names to train (empty = every parameter).
        llm_lr: learning rate on LLM backbones when ``lr`` is not given (full fine-tuning).
    """

    lwf_lambda: float = 1.0
    temperature: float = 2.0
    distill_first_task: bool = False
    train_params: tuple[str, ...] = ()
    llm_lr: float = 1e-5

    DEPARTURES = {
        "train_params": "every parameter (LwF trains shared and new-task parameters); on LLMs distillation runs on the generated-token distributions, a setting the paper has no recipe for; not measured",
    }

    def __post_init__(self) -> None:
        if self.lwf_lambda < 0:
            raise ValueError(f"lwf_lambda must be >= 0, got {self.lwf_lambda}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    def train_overrides(self, backbone_kind: str) -> dict[str, Any]:
        overrides = super().train_overrides(backbone_kind)
        if backbone_kind == "llm" and overrides["lr"] is None:
            overrides["lr"] = self.llm_lr
        return overrides


def distillation_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``KL(softmax(teacher/T) ‖ softmax(student/T))`` summed over classes, averaged over rows."""
    log_p_old = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    log_p_new = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return (log_p_old.exp() * (log_p_old - log_p_new)).sum(-1).mean()


def _columns(logits: torch.Tensor, class_ids: tuple[int, ...], num_classes: int) -> torch.Tensor:
    """The logits of ``class_ids``: columns of a global head, or the whole of a per-task head."""
    width = logits.shape[-1]
    if width == num_classes:
        return logits[:, list(class_ids)]
    if width == len(class_ids):
        return logits
    raise UsageError(f"lwf: backbone outputs have {width} columns, neither the {num_classes} global classes nor the {len(class_ids)} classes distilled")


class LwF(Strategy):
    """Full fine-tuning plus distillation toward the model as it was when the task started."""

    Config = LwFConfig
    config: LwFConfig

    def setup(self, backbone: Backbone) -> None:
        super().setup(backbone)
        named = dict(backbone.model.named_parameters())
        patterns = self.config.train_params
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in named):
                raise UsageError(f"train_params pattern {pattern!r} matches no parameter")
        for name, p in named.items():
            p.requires_grad_(not patterns or any(fnmatch.fnmatchcase(name, pat) for pat in patterns))
        self.teacher: Backbone | None = None
        self.old_tasks: list[Experience] = []
        self._distill_sum = torch.zeros(())
        self._distill_steps = 0

    def _take_teacher(self) -> Backbone:
        """A shallow copy of the backbone whose model is a frozen deep copy of the current one."""
        teacher = copy.copy(self.backbone)
        teacher.model = copy.deepcopy(self.backbone.model)
        teacher.model.eval()
        for p in teacher.model.parameters():
            p.requires_grad_(False)
        return teacher

    def before_task(self, experience: Experience) -> None:
        self.old_tasks = [e for e in self.ctx.stream.tasks if e.index < experience.index]
        self.teacher = None
        if self.old_tasks or self.config.distill_first_task:
            self.teacher = self._take_teacher()
        self._distill_sum = torch.zeros((), device=self.backbone.device)
        self._distill_steps = 0

    def distillation(self, batch: Batch) -> torch.Tensor:
        """The LwF term (without λ) for ``batch`` against the current teacher."""
        assert self.teacher is not None
        num_classes = self.ctx.stream.num_classes
        temperature = self.config.temperature
        classified = [e for e in self.old_tasks if e.class_ids]
        if not num_classes or not classified:  # generation, or the pretrained model on task 1
            with torch.no_grad():
                old = self.teacher.outputs(batch)
            return distillation_kl(old, self.backbone.outputs(batch), temperature)
        if self.ctx.stream.protocol == "task-incremental":
            terms = []
            for task in classified:  # score the batch with each old task's head
                as_old = {**batch, "task_id": torch.full_like(batch["task_id"], task.index)}
                if "tasks" in batch:  # CLIP scores the classes of the tasks a batch names
                    as_old["tasks"] = (task.index,)
                with torch.no_grad():
                    old = _columns(self.teacher.outputs(as_old), task.class_ids, num_classes)
                new = _columns(self.backbone.outputs(as_old), task.class_ids, num_classes)
                terms.append(distillation_kl(old, new, temperature))
            return torch.stack(terms).mean()
        union = tuple(sorted({c for e in classified for c in e.class_ids}))
        if "tasks" in batch:  # CLIP: logits against the previous tasks' class texts
            batch = {**batch, "tasks": tuple(e.index for e in classified)}
        with torch.no_grad():
            old = _columns(self.teacher.outputs(batch), union, num_classes)
        return distillation_kl(old, _columns(self.backbone.outputs(batch), union, num_classes), temperature)

    def loss(self, batch: Batch, experience: Experience) -> torch.Tensor:
        task_loss = self.backbone.loss(batch)
        if self.teacher is None or self.config.lwf_lambda == 0:
            return task_loss
        distill = self.distillation(batch)
        self._distill_sum = self._distill_sum + distill.detach()
        self._distill_steps += 1
        return task_loss + self.config.lwf_lambda * distill

    def after_task(self, experience: Experience) -> None:
        self.teacher = None  # free the copy; the next task takes a fresh one

    def telemetry(self) -> dict[str, Any]:
        """Mean distillation KL over the task's micro-batches (None on the first task)."""
        mean = float(self._distill_sum) / self._distill_steps if self._distill_steps else None
        return {"lwf_distill_kl": mean, "lwf_old_tasks": len(self.old_tasks)}
