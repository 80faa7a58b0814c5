"""``avalanche:<Strategy>``: run any avalanche-lib supervised strategy inside clbench's runner.

``clbench run digits-split -s avalanche:EWC -S ewc_lambda=100`` builds avalanche's ``EWC`` with
the benchmark's training settings (batch size, epochs, optimizer), converts each clbench task
into an avalanche experience, and lets the avalanche strategy train the backbone's own
``nn.Module`` on it. clbench's runner still evaluates every task after every task, so the
avalanche strategy's numbers land in the same accuracy matrix, metrics and reports as clbench's
own strategies. Any class of ``avalanche.training.supervised`` that is a ``SupervisedTemplate``
works (Naive, EWC, LwF, Replay, GEM, AGEM, GDumb, SynapticIntelligence, MAS, ...); the name
after the colon is matched case-insensitively.

Scope: classic (tensor) backbones only; avalanche has no CLIP text heads or LLM answer losses.
Task-incremental benchmarks mask each example's logits to its task's classes, as the classic
backbone does, through a multi-task wrapper that avalanche feeds with the task labels.
avalanche is imported only when such a strategy is built (the import costs seconds).
"""

from __future__ import annotations

import functools
import time
import warnings
from typing import Any, ClassVar

import torch
from torch import nn

from clbench.api import Backbone, Experience, RunContext, Strategy, TaskLoop, TaskStats, TensorTaskDataset
from clbench.api.adapters import unfreeze
from clbench.errors import UsageError
from clbench.strategies.avalanche.config import AvalancheConfig, config_for, constructor_parameters
from clbench.training import build_optimizer, summarise_losses

# A large finite value rather than -inf: avalanche's LwF takes softmaxes over old tasks'
# columns, which would be NaN if every column were -inf.
MASKED_LOGIT = -1e9


def supervised_strategies() -> dict[str, type]:
    """avalanche's supervised strategy classes by name (imports avalanche)."""
    from avalanche.training import supervised
    from avalanche.training.templates import SupervisedTemplate

    found = {}
    for name in getattr(supervised, "__all__", dir(supervised)):
        obj = getattr(supervised, name, None)
        if isinstance(obj, type) and issubclass(obj, SupervisedTemplate) and obj is not SupervisedTemplate:
            found[name] = obj
    return found


def _task_masked(model: nn.Module, label_masks: torch.Tensor) -> nn.Module:
    """Wrap ``model`` as an avalanche multi-task module masking logits by task label."""
    from avalanche.models import MultiTaskModule

    class TaskMaskedClassifier(MultiTaskModule):
        """Logits of the wrapped classifier with other tasks' classes masked out."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = model
            self.register_buffer("label_masks", label_masks.clone(), persistent=False)

        def adaptation(self, experience: Any) -> None:
            """Nothing to grow: the classifier already covers the whole label space."""

        def forward(self, x: torch.Tensor, task_labels: torch.Tensor | int) -> torch.Tensor:
            logits = self.inner(x)
            if isinstance(task_labels, int):
                task_labels = torch.full((len(x),), task_labels, dtype=torch.long, device=x.device)
            return logits.masked_fill(~self.label_masks[task_labels.long()], MASKED_LOGIT)

    return TaskMaskedClassifier()


def _loss_recorder() -> Any:
    """An avalanche plugin keeping each training iteration's loss (one task at a time)."""
    from avalanche.core import SupervisedPlugin

    class LossRecorder(SupervisedPlugin):
        """Appends the mini-batch loss after every training iteration."""

        def __init__(self) -> None:
            super().__init__()
            self.losses: list[float] = []

        def after_training_iteration(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
            self.losses.append(float(strategy.loss))

    return LossRecorder()


class AvalancheStrategy(Strategy):
    """Any avalanche-lib supervised strategy in clbench's runner: use it as avalanche:<Strategy>.

    The bare name resolves to this class; :meth:`for_argument` builds the variant for one avalanche
    strategy (``avalanche:EWC``), whose constructor arguments become its ``-S`` settings.
    """

    Config = AvalancheConfig
    config: AvalancheConfig
    backbone_kinds = frozenset({"classic"})
    distributed = False  # that loop is avalanche's, on one process
    avalanche_name: ClassVar[str] = ""

    def __init__(self, config: AvalancheConfig, ctx: RunContext) -> None:
        if not self.avalanche_name:
            raise UsageError("strategy 'avalanche' needs an avalanche strategy name: avalanche:Naive, avalanche:EWC, avalanche:Replay, ...")
        super().__init__(config, ctx)
        settings = ctx.train
        unsupported = {"iterations": settings.iterations is not None, "grad_accum": settings.grad_accum != 1,
                       "max_grad_norm": settings.max_grad_norm > 0, "amp": settings.amp != "none", "scheduler": settings.scheduler != "constant"}
        bad = [k for k, v in unsupported.items() if v]
        if bad:
            raise UsageError(f"avalanche:{self.avalanche_name} trains with epochs, a constant learning rate and fp32 only; unset {', '.join(bad)}")
        self.tasks_trained = 0
        self.records: dict[str, Any] = {}

    @classmethod
    @functools.cache
    def for_argument(cls, argument: str) -> type[AvalancheStrategy]:
        """The strategy class running avalanche's ``argument`` strategy (case-insensitive).

        Raises:
            UsageError: no such avalanche supervised strategy.
        """
        available = supervised_strategies()
        by_lower = {n.lower(): n for n in available}
        name = by_lower.get(argument.lower().replace("-", "").replace("_", ""))
        if name is None:
            name = by_lower.get(argument.lower())
        if name is None:
            raise UsageError(f"avalanche has no supervised strategy {argument!r}; available: {', '.join(sorted(available))}")
        config_cls = config_for(name, available[name])
        return type(f"Avalanche{name}", (cls,), {"Config": config_cls, "avalanche_name": name, "__doc__": f"avalanche-lib's {name} in clbench's runner."})

    def setup(self, backbone: Backbone) -> None:
        super().setup(backbone)
        unfreeze(backbone.model)
        stream = self.ctx.stream
        if stream.protocol == "task-incremental":
            self.net: nn.Module = _task_masked(backbone.model, stream.label_masks().to(self.ctx.device))
        else:
            self.net = backbone.model
        self.benchmark = self._convert(stream)
        self.avalanche = self._build()
        self.loss_recorder = _loss_recorder()
        self.avalanche.plugins.append(self.loss_recorder)

    def _convert(self, stream: Any) -> Any:
        """The stream's trained tasks as one avalanche benchmark (one experience per task)."""
        from avalanche.benchmarks.scenarios import benchmark_from_datasets
        from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
        from avalanche.benchmarks.scenarios.task_aware import with_task_labels
        from avalanche.benchmarks.utils.classification_dataset import _make_taskaware_tensor_classification_dataset

        task_incremental = stream.protocol == "task-incremental"
        datasets = []
        for exp in stream.tasks:
            data = exp.train
            if not isinstance(data, TensorTaskDataset):
                raise UsageError(f"strategy avalanche:{self.avalanche_name} does not support backbone {self.backbone.spec!r}: avalanche strategies "
                                 f"need tensor inputs, but task {exp.name!r} holds {type(data).__name__}; use clbench's finetune, ewc, lwf, "
                                 "replay or joint instead")
            # Task labels only under the task-incremental protocol: elsewhere avalanche's plugins
            # (LwF, GEM) must treat every task as one growing classification problem.
            labels = exp.index if task_incremental else 0
            datasets.append(_make_taskaware_tensor_classification_dataset(data.x, data.y, targets=data.y.tolist(), task_labels=labels))
        scenario = benchmark_from_datasets(train=datasets)
        if task_incremental:  # experiences need task_labels, or avalanche calls the multi-task model without them
            scenario = with_task_labels(scenario)
        return with_classes_timeline(scenario)

    def _build(self) -> Any:
        from avalanche.training.plugins import EvaluationPlugin

        strategy_cls = supervised_strategies()[self.avalanche_name]
        settings = self.ctx.train
        hyper = {name: getattr(self.config, name) for name in self.Config.avalanche_parameters  # type: ignore[attr-defined]
                 if name in constructor_parameters(strategy_cls)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "No loggers specified": clbench does the logging
            evaluator = EvaluationPlugin(loggers=[])
            return strategy_cls(model=self.net, optimizer=build_optimizer(list(self.net.parameters()), settings),
                                criterion=nn.CrossEntropyLoss(), train_mb_size=settings.batch_size, train_epochs=settings.epochs,
                                eval_mb_size=settings.eval_batch_size, device=self.ctx.device, evaluator=evaluator, eval_every=-1, **hyper)

    def fit_task(self, data: Any, experience: Experience, loop: TaskLoop) -> TaskStats:
        """Train with the avalanche strategy's own loop on ``experience``; steps and losses are recorded."""
        position = [e.index for e in self.ctx.stream.tasks].index(experience.index)
        avalanche_exp = self.benchmark.train_stream[position]
        if self.config.reset_optimizer:
            self.avalanche.optimizer = build_optimizer(list(self.net.parameters()), self.ctx.train)
            self.avalanche.optimized_param_id = None  # avalanche re-registers (and resets) it
        self.loss_recorder.losses.clear()
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.avalanche.train(avalanche_exp, eval_streams=[])
        seconds = time.perf_counter() - start
        losses = list(self.loss_recorder.losses)
        self.records = {"avalanche_strategy": self.avalanche_name, "avalanche_train_seconds": round(seconds, 4),
                        "avalanche_last_loss": losses[-1] if losses else None}
        self.tasks_trained += 1
        final, curve = summarise_losses(losses)
        return TaskStats(steps=self.avalanche.clock.train_exp_iterations, examples=len(experience.train), train_seconds=seconds,  # type: ignore[arg-type]
                         final_loss=final, loss_curve=curve)

    def telemetry(self) -> dict[str, Any]:
        """The avalanche strategy's training time and last mini-batch loss for the task."""
        return dict(self.records)

    def _stateful(self) -> bool:
        """Whether the avalanche strategy keeps state beyond the model (its CL plugins)."""
        from avalanche.training.plugins import EvaluationPlugin

        return any(not isinstance(p, EvaluationPlugin) and p is not self.loss_recorder for p in getattr(self.avalanche, "plugins", []))

    def state_dict(self) -> dict[str, Any]:
        return {"tasks_trained": self.tasks_trained}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        done = int(state.get("tasks_trained", 0))
        if done and self._stateful():
            raise UsageError(f"avalanche:{self.avalanche_name} keeps plugin state that clbench checkpoints cannot hold (weights only); "
                             "rerun with --overwrite instead of --resume")
        self.tasks_trained = done
