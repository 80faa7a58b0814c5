"""The strategy interface: a continual-learning method as a config dataclass plus hooks.

A strategy is named (its entry-point name), has a frozen, documented config dataclass (CLI
``-S key=value`` overrides are checked against it) and implements the hooks it needs; every
hook has a neutral default. The runner owns data iteration, evaluation, seeding, timing and
checkpoints, and calls the hooks in this order::

    setup(backbone)                      once, after the backbone is bound to the stream
    for each task:
        before_task(experience)
        training_data(experience, seen)  the examples to train on (joint/replay change it)
        fit_task(data, experience, loop) trains on the task; the default runs the runner's loop:
            make_optimizer(params, settings) optional: None lets the runner build the default
            loss(batch, experience)          every micro-batch
            after_step(step, experience)     after every optimizer step
        after_task(experience)           freeze, merge, grow, consolidate
        eval_task_start/eval_task_end    around the evaluation of each task (every row, row 0 too)
        telemetry()                      numbers the report can plot
    state_dict() / load_state_dict()     checkpoint and resume (after setup)

A public method of a subclass whose name looks like a hook but is none (``after_tasks``,
``eval_start``) is rejected when the class is defined, so a misspelled hook can never be
silently skipped; helpers that merely start like a hook take a leading underscore.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from clbench.api.adapters import ALL_LINEAR, placement_targets
from clbench.api.backbone import Backbone, Batch
from clbench.api.benchmark import TrainSettings
from clbench.api.stream import Experience, Stream
from clbench.api.strategy_config import FullModelConfig, StrategyConfig

__all__ = ["HOOKS", "FullModelConfig", "RunContext", "Strategy", "StrategyConfig", "TaskLoop", "TaskStats", "check_hook_names"]


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


@dataclass
class TaskStats:
    """What training one task measured (recorded per task in results).

    Attributes:
        steps: optimizer steps taken.
        examples: training examples the task offered (one pass holds this many).
        train_seconds: wall-clock seconds spent training.
        final_loss: mean training loss of the last steps (``None`` without steps).
        loss_curve: training loss at up to 100 evenly spaced steps.
        skipped_steps: batches skipped for a non-finite loss (``nonfinite_loss=skip``).
    """

    steps: int = 0
    examples: int = 0
    train_seconds: float = 0.0
    final_loss: float | None = None
    loss_curve: list[float] = field(default_factory=list)
    skipped_steps: int = 0


TaskLoop = Callable[[Dataset[Any]], TaskStats]
"""The runner's training loop for one task, bound to its settings: ``loop(data) -> TaskStats``."""

HOOKS = frozenset({"setup", "before_task", "training_data", "fit_task", "trainable_parameters", "make_optimizer", "loss", "after_step",
                   "after_task", "eval_task_start", "eval_task_end", "telemetry", "state_dict", "load_state_dict"})
"""The hook names the runner calls (see the module docstring)."""

_HOOK_PREFIXES = ("before_", "after_", "eval_", "fit_", "on_")


def check_hook_names(cls: type) -> None:
    """Reject a public method of ``cls`` that looks like a hook but is not one.

    Looks like a hook: starts like one (``before_``, ``after_``, ``eval_``, ``fit_``, ``on_``) or
    is a near-miss spelling of one (``after_tasks``, ``setpu``).

    Raises:
        TypeError: naming the method and the hook it probably meant.
    """
    for name, value in vars(cls).items():
        if name.startswith("_") or name in HOOKS or not callable(value):
            continue
        close = difflib.get_close_matches(name, sorted(HOOKS), n=1, cutoff=0.8)
        if close or name.startswith(_HOOK_PREFIXES):
            hint = f"did you mean {close[0]!r}?" if close else f"hooks: {', '.join(sorted(HOOKS))}"
            raise TypeError(f"strategy {cls.__module__}.{cls.__qualname__} defines {name!r}, which is not a hook the runner calls "
                            f"({hint}); rename a helper with a leading underscore")


class Strategy:
    """Base class with neutral hooks; a strategy overrides only what its method changes.

    Class attributes:
        Config: the strategy's config dataclass (a subclass of :class:`StrategyConfig`).
        backbone_kinds: backbone kinds the strategy supports (``classic``, ``llm``, ``clip``, ``vit``).
        trains: ``False`` for strategies whose model is not updated by the runner's training
            loop (zero-shot; a strategy that runs its own loop in ``before_task``).
        distributed: ``False`` for strategies that cannot run data-parallel under torchrun (their
            own training loop); the run then stops with one line before training.
        fsdp: ``True`` for strategies that run on a causal LM whose frozen weights ``--fsdp``
            shards (:mod:`clbench.fsdp`): they train only new parameters (adapters) and write
            into a frozen weight only through :meth:`clbench.api.AdapterLinear.add_to_base_weight_`.
        fsdp_refusal: why a strategy cannot run sharded, when there is a specific reason (said
            in the one-line refusal of ``--fsdp``).
        evaluates_as_loaded: ``True`` for strategies that never change the model or how it
            scores (zero-shot): the runner then copies row 0 into every later row instead of
            evaluating the same model again.
    """

    Config: ClassVar[type[StrategyConfig]] = StrategyConfig
    backbone_kinds: ClassVar[frozenset[str]] = frozenset({"classic", "llm", "clip", "vit"})
    trains: ClassVar[bool] = True
    distributed: ClassVar[bool] = True
    fsdp: ClassVar[bool] = False
    fsdp_refusal: ClassVar[str | None] = None
    evaluates_as_loaded: ClassVar[bool] = False
    adapter_placement: ClassVar[str] = ALL_LINEAR
    """Adapter strategies: the layers their paper adapts (:mod:`clbench.api.adapters`); each
    backbone says what the placement means on it."""
    adapter_placement_by_kind: ClassVar[Mapping[str, str]] = {}
    """Backbone kinds whose paper default differs from :attr:`adapter_placement`."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check_hook_names(cls)

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

    def resolve_targets(self, configured: Sequence[str] = (), name: str = "") -> tuple[str, ...]:
        """The targets to adapt on the bound backbone: ``configured`` (``-S targets=``, which must
        exist), else this strategy's placement for the backbone's kind as the backbone maps it."""
        backbone = self.backbone
        placement = self.adapter_placement_by_kind.get(backbone.kind, self.adapter_placement)
        return placement_targets(backbone, configured, placement, name or type(self).__name__)

    def before_task(self, experience: Experience) -> None:
        """Called before training on ``experience``."""

    def training_data(self, experience: Experience, seen: Sequence[Experience]) -> Dataset[Any]:
        """The examples to train on for ``experience``; ``seen`` includes it as the last item."""
        return experience.train

    def fit_task(self, data: Dataset[Any], experience: Experience, loop: TaskLoop) -> TaskStats:
        """Train on ``data`` for ``experience`` and say what it cost.

        The default runs the runner's shared loop (``loop(data)``), which calls
        :meth:`make_optimizer`, :meth:`loss` and :meth:`after_step`. Override it only for a
        method with its own training loop (avalanche's strategies) or none (zero-shot); the
        returned :class:`TaskStats` become the task's step and timing record either way.
        """
        return loop(data)

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
