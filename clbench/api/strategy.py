"""The strategy interface: a continual-learning method as a config dataclass plus hooks.

A strategy is named (its entry-point name), has a frozen, documented config dataclass (CLI
``-S key=value`` overrides are checked against it) and implements the hooks it needs; every
hook has a neutral default. The runner owns data iteration, evaluation, seeding, timing and
checkpoints, and calls the hooks in this order::

    setup(backbone)                      once, after the backbone is bound to the stream
    for each task:
        before_task(experience)
        training_data(experience, seen)  the examples to train on (joint/replay change it)
        make_optimizer(params, settings) optional: None lets the runner build the default
        loss(batch, experience)          every micro-batch
        after_step(step, experience)     after every optimizer step
        after_task(experience)           freeze, merge, grow, consolidate
        eval_task_start/eval_task_end    around the evaluation of each task (every row, row 0 too)
        telemetry()                      numbers the report can plot
    state_dict() / load_state_dict()     checkpoint and resume (after setup)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from clbench.api.backbone import Backbone, Batch
from clbench.api.benchmark import TrainSettings
from clbench.api.stream import Experience, Stream


@dataclass(frozen=True, kw_only=True)
class StrategyConfig:
    """Base config: optional overrides of the benchmark's training settings.

    ``None`` keeps the benchmark's value. Subclasses add their own fields (each documented in
    the class docstring) and may give these fields the defaults of their paper.

    Attributes:
        epochs: passes over each task's training data.
        iterations: optimizer steps per task (overrides epochs).
        batch_size: training batch size.
        lr: peak learning rate.
        optimizer: ``adamw``, ``adam`` or ``sgd``.
        betas: Adam betas.
        weight_decay: weight decay.
        scheduler: ``constant`` or ``cosine``.
        grad_accum: micro-batches per optimizer step.
        max_grad_norm: gradient-norm clipping (0 disables).
        amp: ``none``, ``bf16`` or ``fp16``.
        nonfinite_loss: ``stop`` (the run stops at the first NaN/inf loss) or ``skip`` (that
            batch's update is skipped).
    """

    epochs: int | None = None
    iterations: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    betas: tuple[float, float] | None = None
    weight_decay: float | None = None
    scheduler: str | None = None
    grad_accum: int | None = None
    max_grad_norm: float | None = None
    amp: str | None = None
    nonfinite_loss: str | None = None

    def train_overrides(self, backbone_kind: str) -> dict[str, Any]:
        """The training-setting fields of this config (``None`` = keep the benchmark's).

        Subclasses override this to give defaults that depend on the backbone kind (e.g. a
        smaller learning rate for full fine-tuning of an LLM).
        """
        base = {f.name for f in fields(StrategyConfig)}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in base}

    DEPARTURES: ClassVar[dict[str, str]] = {}
    """Settings whose default is ours, not the paper's or the official code's, with the reason and
    the measurement behind it (or "not measured"); ``clbench show`` labels them "ours"."""

    def kind_settings(self, backbone_kind: str) -> dict[str, Any]:
        """The method settings whose default depends on the backbone kind, resolved for it.

        ``clbench show`` prints them per kind; ``{}`` (the default) when none depends on the kind.
        """
        return {}

    def to_dict(self) -> dict[str, Any]:
        """Every field and its value, JSON-ready (tuples become lists)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass
class RunContext:
    """What a strategy may know about the run it is part of.

    Attributes:
        stream: the benchmark's stream (all tasks, label space, protocol).
        train: the resolved training settings.
        device: where the model lives.
        seed: the run's seed.
        run_dir: the run directory (for strategies that keep large side files), if any.
        benchmark: the benchmark's name (strategies with per-benchmark tuned defaults use it).
    """

    stream: Stream
    train: TrainSettings
    device: torch.device
    seed: int
    run_dir: Path | None = None
    benchmark: str = ""


class Strategy:
    """Base class with neutral hooks; a strategy overrides only what its method changes.

    Class attributes:
        Config: the strategy's config dataclass (a subclass of :class:`StrategyConfig`).
        backbone_kinds: backbone kinds the strategy supports (``classic``, ``llm``, ``clip``, ``vit``).
        trains: ``False`` for strategies that never update the model (zero-shot).
    """

    Config: ClassVar[type[StrategyConfig]] = StrategyConfig
    backbone_kinds: ClassVar[frozenset[str]] = frozenset({"classic", "llm", "clip", "vit"})
    trains: ClassVar[bool] = True

    def __init__(self, config: StrategyConfig, ctx: RunContext) -> None:
        self.config = config
        self.ctx = ctx
        self._backbone: Backbone | None = None

    @property
    def backbone(self) -> Backbone:
        if self._backbone is None:
            raise RuntimeError("strategy used before setup(backbone)")
        return self._backbone

    @property
    def model(self) -> nn.Module:
        return self.backbone.model

    def setup(self, backbone: Backbone) -> None:
        """Prepare the backbone: wrap layers with adapters, freeze what the method freezes."""
        self._backbone = backbone

    def before_task(self, experience: Experience) -> None:
        """Called before training on ``experience``."""

    def training_data(self, experience: Experience, seen: Sequence[Experience]) -> Dataset[Any]:
        """The examples to train on for ``experience``; ``seen`` includes it as the last item."""
        return experience.train

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimizer updates (by default every parameter requiring grad)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def make_optimizer(self, params: list[nn.Parameter], settings: TrainSettings) -> torch.optim.Optimizer | None:
        """Optional optimizer factory; return ``None`` to let the runner build ``settings.optimizer``."""
        return None

    def loss(self, batch: Batch, experience: Experience) -> torch.Tensor:
        """Training loss of one micro-batch (the backbone's task loss by default)."""
        return self.backbone.loss(batch)

    def after_step(self, step: int, experience: Experience) -> None:
        """Called after every optimizer step (``step`` counts from 0 within the task)."""

    def after_task(self, experience: Experience) -> None:
        """Called after training on ``experience``, before it is evaluated."""

    def eval_task_start(self, experience: Experience) -> None:
        """Called before ``experience``'s test set is scored (in every evaluation pass)."""

    def eval_task_end(self, experience: Experience) -> None:
        """Called after ``experience``'s test set is scored (e.g. to close routing statistics)."""

    def telemetry(self) -> dict[str, Any]:
        """JSON-ready numbers describing the strategy's state after a task (plotted by reports)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Strategy state beyond the model's parameters (buffers, bank sizes, statistics)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` after :meth:`setup`, rebuilding any grown structure."""
