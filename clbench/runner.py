"""The task-stream runner: row 0, then train and evaluate every task, checkpoint, resume.

``run(RunOptions(...))`` is the Python API behind ``clbench run``. For one (benchmark, strategy,
seed) it:

1. checks the options (:func:`clbench.preflight.preflight`), then resolves the benchmark,
   strategy, backbone and data — all before creating the run directory, so bad input or a
   missing asset leaves nothing behind; then locks the run directory and stages an
   ``--overwrite`` (:mod:`clbench.rundir`);
2. evaluates every task before any training (row 0);
3. per task: re-seeds (so a resumed run replays the same randomness), calls the strategy's
   hooks around the shared training loop, evaluates every task (row t), saves a checkpoint
   (with ``examples.npz``, the per-example scores) and rewrites ``results.json`` atomically;
4. writes the metrics and marks the run complete.

A run that stops before its first checkpoint (an error, Ctrl-C, SIGTERM) leaves no folder behind
and puts back the run an ``--overwrite`` was replacing; after that it stays resumable. Every file
is written atomically (:mod:`clbench.safeio`); a full disk stops the run with one line.

The runner reaches strategies only through the registry and knows nothing about any of them.
On several processes (``torch.distributed``) only rank 0 writes files and logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import datetime as dt
import json
import logging
import os
import platform
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

import clbench
from clbench import budget, checkpoint, distributed, fsdp, registry, runconfig, uncertainty
from clbench.api.benchmark import BenchmarkSpec, TrainSettings
from clbench.api.strategy import RunContext, Strategy, StrategyConfig, TaskStats
from clbench.asset_policy import resolve_downloads
from clbench.data import build_stream, check_not_empty
from clbench.errors import ClbenchError, ResultsError, UsageError
from clbench.example_scores import EXAMPLES_FILE, ExampleScores, matches_matrix
from clbench.identity import identity_hash, settings_diff
from clbench.loading import loader_options
from clbench.loggers import LoggerSet, RunInfo, open_loggers, resume_step
from clbench.preflight import RunOptions, check_amp, existing_complete, is_main_process, preflight, resolve_device, warn_emulated_bf16
from clbench.results import RESULTS_FILE, SCHEMA, compute_run_metrics, probe_summary, write_json_atomic
from clbench.rundir import RunDirectory, attach_run_log, detach_run_log
from clbench.safeio import write_text_atomic
from clbench.training import evaluate, peak_memory_mb, train_task
from clbench.validation import check_data_root

log = logging.getLogger("clbench")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def task_seed(seed: int, task_index: int) -> int:
    """The seed each task starts from, so a resumed run replays a task exactly."""
    return (seed * 1_000_003 + 7919 * (task_index + 1)) % 2**31


def resolve_train(spec: BenchmarkSpec, strategy: str, config: StrategyConfig, backbone_kind: str) -> TrainSettings:
    """A run's training settings: the benchmark's ``[train]``, then the strategy's defaults for the
    backbone kind, then the benchmark's ``[strategy_train.<strategy>]``, then explicit ``-S`` values."""
    explicit = {k for k, v in StrategyConfig.train_overrides(config, "").items() if v is not None}
    per_strategy = {k: v for k, v in spec.train_for(strategy).items() if k not in explicit}
    return spec.train.updated(**config.train_overrides(backbone_kind)).updated(**per_strategy)


def environment(device: torch.device) -> dict[str, Any]:
    """Versions and hardware recorded in results."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "clbench": clbench.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    for module in ("transformers", "open_clip", "triton"):
        if module in sys.modules:
            env[module] = getattr(sys.modules[module], "__version__", "unknown")
    return env


class _Run:
    """State of one run while it executes (kept out of the public API)."""

    def __init__(self, options: RunOptions) -> None:
        """Resolve and build everything the run needs; writes nothing (see :func:`run`)."""
        self.options = options
        checked = preflight(options)
        spec, strategy_cls = checked.spec, checked.strategy_cls
        self.spec: BenchmarkSpec = spec
        self.plugin, self.config, self.run_dir = checked.plugin, checked.config, checked.run_dir
        if distributed.world_size_requested() > 1 and not strategy_cls.distributed:
            raise UsageError(f"strategy {self.plugin.name!r} cannot run data-parallel (see docs/running-at-scale.md); run it on one process")
        self.device = distributed.setup(checked.device)
        self.loader = loader_options(options.workers, self.device)
        self.kv_policy = checked.kv_policy
        self.run_identity = checked.identity
        self.directory: RunDirectory | None = None
        seed_everything(options.seed)
        self.stream = build_stream(spec, extra_loaders=checked.loaders, data_root=check_data_root(options.data_root),
                                   allow_download=options.allow_download)
        check_not_empty(spec.name, self.stream)
        # decided once here (--allow-download, else the environment) and passed to the factory
        self.backbone = registry.build_backbone(options.backbone or spec.backbone, allow_download=resolve_downloads(options.allow_download or None))
        if self.backbone.kind not in strategy_cls.backbone_kinds:
            raise UsageError(registry.unsupported_backbone_message(self.plugin.name, strategy_cls.backbone_kinds, self.backbone.kind, self.backbone.spec))
        self._attach_kv_policy()
        with _allocating(f"strategy {self.plugin.name!r} on {self.backbone.spec}"):
            self.backbone.bind(self.stream)
            self.backbone.to(self.device)
            self.train = resolve_train(spec, self.plugin.name, self.config, self.backbone.kind)
            check_amp(self.train, self.device)
            warn_emulated_bf16(self.train, self.device)
            ctx = RunContext(stream=self.stream, train=self.train, device=self.device, seed=options.seed, run_dir=self.run_dir,
                             benchmark=spec.name)
            self.strategy: Strategy = strategy_cls(self.config, ctx)
            self.strategy.setup(self.backbone)
            self.sharding = self._shard() if options.fsdp else None
        self.reference = checkpoint.fingerprints(self.backbone.model)  # of this rank's shards under --fsdp
        self.rows: list[list[float] | None] = [None] * (len(self.stream.tasks) + 1)
        self.task_records: list[dict[str, Any]] = []
        self.telemetry: list[dict[str, Any]] = []
        self.examples = ExampleScores(len(self.stream.tasks) + 1, len(self.stream.experiences))
        self.planned_steps = [budget.steps_per_task(len(e.train), self.train) for e in self.stream.tasks]  # type: ignore[arg-type]
        self.kv_initial: dict[str, Any] = {}
        self.created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.loggers = LoggerSet([])

    def _shard(self) -> dict[str, Any]:
        """Shard the frozen weights over the ranks (``--fsdp``, :mod:`clbench.fsdp`); returns what
        results record of it (rank 0's bytes of parameters before and after)."""
        units = getattr(self.backbone, "fsdp_units", None)
        if not callable(units):
            raise UsageError(f"--fsdp shards causal LMs, not {self.backbone.spec!r} (a {self.backbone.kind} backbone); run it without --fsdp")
        root, layers, keep = units()
        whole = fsdp.local_parameter_bytes(self.backbone.model)
        count = fsdp.shard_model(root, layers, keep)
        return {"units": len(layers) + 1, "sharded_parameters": count, "parameter_bytes": whole,
                "rank0_parameter_bytes": fsdp.local_parameter_bytes(self.backbone.model)}

    def run_config(self) -> dict[str, Any]:
        """The configuration this run runs with, re-runnable as ``clbench run --config RUN_DIR/run.toml``."""
        return runconfig.resolved(self.options, self.backbone.spec, str(self.device), self.config.to_dict(), self.options.strategy)

    def open_loggers(self, done: int) -> None:
        """Start the experiment loggers (rank 0, before training) and replay what a resumed run restored."""
        if not self.options.loggers or not is_main_process():
            return
        info = RunInfo(run_dir=self.run_dir, out=Path(self.options.out), benchmark=self.spec.name, strategy=self.plugin.name,
                       seed=self.options.seed, config=self.run_config(), resumed=bool(done))
        self.loggers = open_loggers(self.options.loggers, info)
        self.loggers.step = resume_step(self.task_records)
        for t in range(done + 1 if self.rows[0] is not None else 0):
            self.log_row(t)

    def log_row(self, t: int) -> None:
        """Row ``t`` of the accuracy matrix and task ``t``'s telemetry and timings to the loggers."""
        if not self.loggers:
            return
        telemetry: dict[str, Any] = {}
        if t:
            record = {k: v for k, v in self.task_records[t - 1].items() if k not in ("task", "loss_curve", "memory_kind")}
            telemetry = {"run": record, "strategy": {k: v for k, v in self.telemetry[t - 1].items() if k != "task"}}
        self.loggers.on_row(t, [e.name for e in self.stream.experiences], self.rows[t] or [], telemetry)

    def close_loggers(self, data: dict[str, Any] | None) -> None:
        """Final metrics and the report figures (a finished run), then end every logger's session."""
        if not self.loggers:
            return
        if data is None:
            self.loggers.close("failed")
            return
        from clbench.loggers.figures import run_figures

        self.loggers.on_end(data.get("metrics") or {}, run_figures(data, self.run_dir), "complete")

    def _attach_kv_policy(self) -> None:
        if self.kv_policy.is_full:
            return
        if not callable(getattr(self.backbone, "set_kv_policy", None)):
            raise UsageError(f"--kv-cache {self.kv_policy.spec} needs a causal LM backbone that generates (hf:...), not {self.backbone.spec!r}")
        if all(e.metric == "exact_match" for e in self.stream.experiences):
            log.warning("--kv-cache %s has no effect on %s: every task is scored teacher-forced (exact_match), nothing is generated",
                        self.kv_policy.spec, self.spec.name)
        self.backbone.set_kv_policy(self.kv_policy)  # type: ignore[attr-defined]

    def identity(self) -> dict[str, Any]:
        """What must match for a checkpoint to be resumed: the run identity and the resolved
        training settings (JSON-normalised, as stored)."""
        return {**self.run_identity, "train": json.loads(json.dumps(dataclasses.asdict(self.train)))}

    def results(self, status: str) -> dict[str, Any]:
        columns = [e.name for e in self.stream.experiences]
        data: dict[str, Any] = {
            "schema": SCHEMA,
            "status": status,
            "identity": self.run_identity,
            "run_id": identity_hash(self.run_identity),
            "benchmark": {**self.spec.to_dict(), "backbone": self.spec.backbone},
            "strategy": {"name": self.plugin.name, "package": self.plugin.dist, "version": self.plugin.version, "config": self.config.to_dict()},
            "backbone": self.backbone.describe(),
            "seed": self.options.seed,
            "train": dataclasses.asdict(self.train),
            "budget": budget.budget_record(self.train, self.spec.train, self.planned_steps, self.task_records, self.strategy.trains),
            "environment": {**environment(self.device), "loader_workers": self.loader.workers, "processes": distributed.world_size(),
                            **({"fsdp": self.sharding} if self.sharding else {})},
            "matrix": {
                "rows": ["init"] + [f"after {e.name}" for e in self.stream.tasks],
                "columns": columns,
                "task_metrics": [e.metric for e in self.stream.experiences],
                "values": self.rows,
            },
            "metrics": {},
            "intervals": {},
            "plasticity": {},
            "probes": {},
            "examples": self.examples.summary() if self.examples.sizes() else None,
            "tasks": self.task_records,
            "telemetry": self.telemetry,
            "created": self.created,
            "updated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        if not self.kv_policy.is_full:
            data["kv_cache"] = {**self.kv_policy.describe(), "initial": self.kv_initial}
        if status == "complete":
            data["metrics"] = compute_run_metrics(data)
            data.update(self.uncertainty())
        data["probes"] = probe_summary(data)
        return data

    def uncertainty(self) -> dict[str, Any]:
        """Bootstrap intervals of the headline metrics and the "did not learn" verdict (this seed)."""
        n_tasks = len(self.stream.tasks)
        matrix = np.array([row[:n_tasks] for row in self.rows], dtype=float)  # type: ignore[index]
        # None when resumed from a checkpoint written before per-example scores were kept: no intervals then.
        columns = self.examples.columns(n_tasks) if self.examples.is_complete() else None
        return uncertainty.run_uncertainty(columns, matrix, seed=self.options.seed)

    def save_examples(self) -> None:
        """Write ``examples.npz`` with row 0 (later rows are written with each checkpoint, see :meth:`save_checkpoint`)."""
        if is_main_process():
            self.examples.save(self.run_dir / EXAMPLES_FILE)

    def restore_examples(self, rows: list[list[float] | None], rows_done: int) -> ExampleScores:
        """The saved per-example scores of the ``rows_done`` rows a resumed run will not re-evaluate.

        A checkpoint written before per-example scores were kept has no file: the run then
        resumes without them (and ends without intervals, saying so).

        Raises:
            ResultsError: ``examples.npz`` is damaged, or does not hold the checkpointed rows'
                scores (naming the file); nothing has been written.
        """
        path = self.run_dir / EXAMPLES_FILE
        fresh = ExampleScores(self.examples.n_rows, self.examples.n_columns)
        if not path.exists():
            log.warning("%s has no per-example scores (%s): the resumed run will have no confidence intervals", self.run_dir, EXAMPLES_FILE)
            return fresh
        hint = "rerun with --overwrite (or delete it to resume without confidence intervals)"
        try:
            saved = ExampleScores.load(path)
        except ResultsError as exc:
            raise ResultsError(f"{exc}; {hint}") from None
        saved.keep_rows(rows_done)  # rows saved after the checkpoint are evaluated again
        if (saved.n_rows, saved.n_columns) != (fresh.n_rows, fresh.n_columns) or not matches_matrix(saved, rows):
            raise ResultsError(f"{path} does not hold the scores of the {rows_done} evaluation(s) the checkpoint recorded; it is damaged or "
                               f"from another run; {hint}")
        return saved

    def write(self, status: str) -> dict[str, Any]:
        data = self.results(status)
        if is_main_process():
            write_json_atomic(self.run_dir / RESULTS_FILE, data)
        data["_path"] = str(self.run_dir / RESULTS_FILE)
        return data

    def resume_from_checkpoint(self) -> int:
        """Restore the last checkpoint; returns how many tasks it had finished (0 if none).

        Raises:
            UsageError: the checkpoint was made with other settings, or is damaged (naming the
                file and the field); nothing is written in either case.
            ResultsError: ``examples.npz`` is damaged or does not match the checkpoint.
        """
        folder = self.run_dir / "checkpoint"
        pointer = checkpoint.read_pointer(folder, len(self.stream.tasks))
        if pointer is None:
            return 0
        saved = pointer["progress"]["identity"]
        mine = self.identity()
        if saved != mine:
            diffs = [k for k in mine if saved.get(k) != mine[k]]
            raise UsageError(f"cannot resume {self.run_dir}: it was started with a different {', '.join(diffs)}; use --overwrite to start again")
        progress = pointer["progress"]
        examples = self.restore_examples(progress["rows"], int(pointer["tasks_done"]) + 1)
        self.restore_state(folder, pointer)
        checkpoint.prune(folder, pointer["file"])
        self.examples = examples
        self.rows = progress["rows"]
        self.task_records = progress["tasks"]
        self.telemetry = progress["telemetry"]
        self.kv_initial = progress.get("kv_initial", {})
        self.created = progress["created"]
        log.info("resumed %s after task %d of %d", self.run_dir, pointer["tasks_done"], len(self.stream.tasks))
        return int(pointer["tasks_done"])

    def restore_state(self, folder: Path, pointer: dict[str, Any]) -> None:
        """Load the checkpoint ``pointer`` names into the strategy and the model (reads only).

        Raises:
            UsageError: the checkpoint is damaged or does not fit the rebuilt run.
        """
        state = checkpoint.load_checkpoint(folder, pointer)
        try:
            self.strategy.load_state_dict(state["strategy"])
            checkpoint.restore_model(self.backbone.model, state["model"])
        except UsageError:
            raise
        except Exception as exc:  # the file loaded but does not fit the rebuilt model or strategy
            raise checkpoint.damaged(folder / pointer["file"], f"it does not fit the rebuilt run: {type(exc).__name__}: {str(exc)[:200]}") from None

    def save_checkpoint(self, tasks_done: int) -> None:
        if not is_main_process() and not self.sharding:
            return
        delta = checkpoint.changed_state(self.backbone.model, self.reference)  # under --fsdp every rank gathers the changed shards
        if not is_main_process():
            return
        progress = {"identity": self.identity(), "rows": self.rows, "tasks": self.task_records, "telemetry": self.telemetry, "created": self.created,
                    "kv_initial": self.kv_initial}
        # examples.npz advances with the checkpoint: written after its tensors and before its pointer (so it
        # always holds the rows the pointer names), and put back if the pointer cannot be written.
        checkpoint.save_checkpoint(self.run_dir / "checkpoint", tasks_done, delta, self.strategy.state_dict(), progress,
                                   companions={self.run_dir / EXAMPLES_FILE: self.examples.to_bytes()})
        if self.directory is not None:
            self.directory.checkpointed()

    def _row0_repeats(self) -> bool:
        """Whether every later row must equal row 0: a strategy that declares it never changes the
        model or its scoring (``Strategy.evaluates_as_loaded``, e.g. zero-shot), generation left
        to the model's own cache (a KV-cache policy may carry state across prompts), and the
        weights checked unchanged since the run started."""
        return (self.strategy.evaluates_as_loaded and self.kv_policy.is_full and self.examples.rows[0] is not None
                and not checkpoint.changed_state(self.backbone.model, self.reference))

    def _train_loop(self, data: Any, experience: Any, generator: torch.Generator, label: str) -> TaskStats:
        """The shared training loop for one task (what :meth:`Strategy.fit_task` runs by default)."""
        return train_task(self.strategy, self.backbone, data, experience, self.train, generator, self.options.progress, label, self.loader,
                          on_step=self.loggers.on_step if self.loggers else None)

    def execute(self) -> dict[str, Any]:
        name = f"{self.plugin.name} s{self.options.seed}"
        done = self.resume_from_checkpoint() if self.options.resume else 0
        if is_main_process() and not (done and (self.run_dir / "config.json").exists()):  # a resumed run keeps the config it started with
            write_json_atomic(self.run_dir / "config.json", {"options": {**dataclasses.asdict(self.options), "out": str(self.options.out),
                                                                         "data_root": str(self.options.data_root) if self.options.data_root else None},
                                                             "settings": settings_diff(self.config), "run_id": identity_hash(self.run_identity),
                                                             **self.identity()})
            write_text_atomic(self.run_dir / runconfig.FILE, runconfig.dump_toml(self.run_config()))
        self.open_loggers(done)
        try:
            data = self._stream(name, done)
        except BaseException:
            self.close_loggers(None)
            raise
        self.close_loggers(data)
        if self.directory is not None:
            self.directory.completed()
        return data

    def _stream(self, name: str, done: int) -> dict[str, Any]:
        """Row 0, then every task from ``done`` on; returns the complete results."""
        tasks = self.stream.tasks
        experiences = self.stream.experiences
        progress = self.options.progress
        log.info("%s: budget %s", name, budget.describe(budget.budget_record(self.train, self.spec.train, self.planned_steps, [], self.strategy.trains)))
        if self.rows[0] is None:
            start = time.perf_counter()
            scores: list[np.ndarray] = []
            self.rows[0] = evaluate(self.backbone, experiences, self.train, progress, f"{name} eval init", self.strategy, per_example=scores,
                                    loader=self.loader)
            self.examples.set_row(0, scores)
            self.kv_initial = self.kv_policy.take_stats()
            log.info("%s: row 0 (before training) %s in %.1fs", name, _fmt(self.rows[0]), time.perf_counter() - start)
            self.save_examples()
            self.write("running")
            self.log_row(0)
        for t in range(done, len(tasks)):
            exp = tasks[t]
            seed_everything(task_seed(self.options.seed, t))
            generator = torch.Generator().manual_seed(task_seed(self.options.seed, t))
            self.strategy.before_task(exp)
            data = self.strategy.training_data(exp, tasks[: t + 1])
            label = f"{name} train {t + 1}/{len(tasks)} {exp.name}"
            stats = self.strategy.fit_task(data, exp, functools.partial(self._train_loop, experience=exp, generator=generator, label=label))
            self.strategy.after_task(exp)
            start = time.perf_counter()
            if self._row0_repeats():  # nothing changed since row 0: the same scores, not a second evaluation
                scores = list(self.examples.rows[0] or [])
                self.rows[t + 1] = list(self.rows[0] or [])
            else:
                scores = []
                self.rows[t + 1] = evaluate(self.backbone, experiences, self.train, progress, f"{name} eval {t + 1}/{len(tasks)}", self.strategy,
                                            per_example=scores, loader=self.loader)
            eval_seconds = time.perf_counter() - start
            self.examples.set_row(t + 1, scores)
            memory, memory_kind = peak_memory_mb(self.device)
            record = {"task": exp.name, "eval_seconds": round(eval_seconds, 4), "peak_memory_mb": round(memory, 1), "memory_kind": memory_kind,
                      "steps": stats.steps, "examples": stats.examples, "train_seconds": round(stats.train_seconds, 4),
                      "final_loss": stats.final_loss, "loss_curve": stats.loss_curve}
            if stats.skipped_steps:
                record["skipped_steps"] = stats.skipped_steps
            self.task_records.append(record)
            kv_stats = self.kv_policy.take_stats()
            self.telemetry.append({"task": exp.name, **self.strategy.telemetry(), **({"kv_cache": kv_stats} if kv_stats else {})})
            log.info("%s: after task %d/%d %s: %s (loss %s, %.1fs train)", name, t + 1, len(tasks), exp.name, _fmt(self.rows[t + 1]),
                     f"{stats.final_loss:.4f}" if stats.final_loss is not None else "-", stats.train_seconds)
            self.save_checkpoint(t + 1)
            self.write("running")
            self.log_row(t + 1)
        return self.write("complete")


def _fmt(row: list[float] | None) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in row or []) + "]"


def _allocating_error(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError | torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("allocate" in text or "out of memory" in text or "numel" in text or "invalid size" in text)


@contextlib.contextmanager
def _allocating(what: str) -> Iterator[None]:
    """Turn a failed allocation while building the model into one line (settings too large)."""
    try:
        yield
    except (MemoryError, RuntimeError) as exc:
        if not _allocating_error(exc):
            raise
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UsageError(f"{what}: not enough memory to build the model with these settings ({detail}); lower the sizes you set with -S") from None


def run(options: RunOptions) -> dict[str, Any]:
    """Run one strategy on one benchmark with one seed; returns the results dict.

    Everything is validated and built before the first file is written; the run directory is
    then locked for the life of the run and an ``--overwrite`` is staged (see
    :mod:`clbench.rundir`). A completed run asked to ``resume`` is returned as it is.

    Raises:
        UsageError, MissingAssetError, DataError: bad input or a missing asset, before any file
            is written.
        RunInUseError: another process is running this run directory.
        StorageError, TrainingError: the run stopped; the message says what was kept.
        KeyboardInterrupt: Ctrl-C or SIGTERM; its message says what was kept.
    """
    if options.resume:
        existing = existing_complete(Path(options.out), options)
        if existing is not None:
            return existing
    try:
        state = _Run(options)
    except KeyboardInterrupt as exc:
        exc.args = ("nothing of this run was written",)
        raise
    if not is_main_process():
        distributed.barrier()  # rank 0 has locked the run directory and put it in order (resume reads it)
        existing = existing_complete(Path(options.out), options) if options.resume else None
        return existing if existing is not None else state.execute()
    mode = "resume" if options.resume else "overwrite" if options.overwrite else "new"
    directory = RunDirectory(state.run_dir, mode)
    try:
        with directory:
            distributed.barrier()
            if options.resume:  # a killed --overwrite may just have been rolled back to a complete run
                existing = existing_complete(Path(options.out), options)
                if existing is not None:
                    return existing
            state.directory = directory
            handler = attach_run_log(state.run_dir, log)
            try:
                return state.execute()
            finally:
                detach_run_log(handler, log)
    except ClbenchError as exc:
        if not directory.outcome:
            raise
        raise type(exc)(f"{exc}; {directory.outcome}") from None
    except KeyboardInterrupt as exc:
        if directory.outcome:
            exc.args = (directory.outcome,)
        raise


__all__ = ["RunOptions", "environment", "is_main_process", "preflight", "resolve_device", "run", "seed_everything", "task_seed"]
