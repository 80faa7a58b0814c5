"""Experiment loggers (TensorBoard, Weights & Biases, MLflow, third-party) as plugins.

``clbench run ... --logger tensorboard,wandb,mlflow`` selects loggers registered in the
entry-point group ``clbench.loggers`` (the built-ins are registered in clbench's own
``pyproject.toml`` like any third party's). :func:`check_loggers` runs before the first run
starts and refuses, in one line naming the extra to install, a logger whose library is missing;
:func:`open_loggers` starts each logger's session at the start of a run, before training, and
turns a failure there (bad credentials, unreachable server) into one line as well.

What every logger receives (:class:`LoggerSet`): the resolved run configuration; per optimizer
step the training loss and learning rate (``train/loss``, ``train/lr``, buffered so that
training is not synchronised every step); after each task the accuracy-matrix row
(``accuracy/TASK``) and telemetry scalars (``telemetry/...``, ``task/train_seconds`` ...); at the
end the run's metrics and the report figures as artifacts. Only rank 0 of a distributed run logs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from clbench import registry
from clbench.errors import UsageError
from clbench.loggers.base import RunInfo, RunLogger

__all__ = ["LoggerSet", "RunInfo", "RunLogger", "check_loggers", "flatten_scalars", "open_loggers", "parse_logger_names", "resume_step"]

log = logging.getLogger("clbench")

FLUSH_EVERY = 32
"""Optimizer steps buffered before their losses are read back (one device synchronisation)."""
MAX_TELEMETRY_SCALARS = 2000
"""Per task; a strategy reporting per-layer statistics of a large model stays readable."""


def parse_logger_names(text: str | Sequence[str] | None) -> list[str]:
    """``tensorboard,wandb`` (or a list from a config file) as normalised names; ``[]`` for none."""
    if text is None:
        return []
    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else [str(p).strip() for p in text]
    if not all(parts):
        raise UsageError(f"--logger {text!r} has an empty item; give comma-separated names, e.g. --logger tensorboard,mlflow")
    names = [registry.normalize(p) for p in parts]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UsageError(f"--logger names {', '.join(repeated)} twice")
    return names


def _install_hint(plugin: registry.Plugin, cls: type[RunLogger]) -> str:
    if cls.extra:
        return f"pip install clbench[{cls.extra}]"
    return f"install {cls.requires} (needed by {plugin.dist})"


def check_loggers(names: Sequence[str]) -> list[type[RunLogger]]:
    """Resolve each name and import its library; nothing is started or written.

    Raises:
        UsageError: an unknown logger, or one whose library is not installed (one line naming
            the extra, e.g. ``pip install clbench[mlflow]``).
    """
    import importlib

    classes = []
    for name in names:
        plugin = registry.resolve("loggers", name)
        cls = plugin.load()
        if not (isinstance(cls, type) and issubclass(cls, RunLogger)):
            raise UsageError(f"logger {plugin.name!r} from {plugin.dist} ({plugin.value}) is not a clbench.loggers.RunLogger subclass")
        if cls.requires:
            try:
                importlib.import_module(cls.requires)
            except ImportError as exc:
                raise UsageError(f"logger {plugin.name!r} needs the {cls.requires} package, which is not installed "
                                 f"({type(exc).__name__}: {str(exc)[:120]}); {_install_hint(plugin, cls)}") from None
        classes.append(cls)
    return classes


def open_loggers(names: Sequence[str], info: RunInfo) -> LoggerSet:
    """Start every selected logger's session for one run (call before training).

    Raises:
        UsageError: a logger failed to start (one line naming it); the ones already started are
            closed first.
    """
    started: list[RunLogger] = []
    for name, cls in zip(names, check_loggers(names), strict=True):
        try:
            logger = cls(info)
            logger.log_config(info.config)
        except Exception as exc:  # any library's failure to start (credentials, server, disk) is one line
            for other in started:
                _quietly(other.close, "failed")
            detail = " ".join(str(exc).split())[:240]
            raise UsageError(f"logger {name!r} failed to start: {type(exc).__name__}: {detail}") from None
        started.append(logger)
    return LoggerSet(started)


def _quietly(call: Any, *args: Any, warned: set[str] | None = None) -> None:
    """Call a logger method; a failure is a warning (once per method), never the end of the run."""
    try:
        call(*args)
    except Exception as exc:  # a logger failing mid-run (server gone, disk full) must not stop the run
        name = getattr(call, "__qualname__", str(call))
        if warned is None or name not in warned:
            log.warning("logger call %s failed (later failures of it are not repeated): %s: %s", name, type(exc).__name__,
                        " ".join(str(exc).split())[:200])
        if warned is not None:
            warned.add(name)


def flatten_scalars(value: Any, prefix: str, out: dict[str, float] | None = None) -> dict[str, float]:
    """Finite numeric leaves of nested dicts/lists as ``prefix/key/sub`` scalars (bools are skipped)."""
    out = {} if out is None else out
    if isinstance(value, bool) or value is None:
        return out
    if isinstance(value, int | float):
        if math.isfinite(value) and len(out) < MAX_TELEMETRY_SCALARS:
            out[prefix] = float(value)
    elif isinstance(value, Mapping):
        for key, sub in value.items():
            flatten_scalars(sub, f"{prefix}/{key}", out)
    elif isinstance(value, list | tuple):
        for i, sub in enumerate(value):
            flatten_scalars(sub, f"{prefix}/{i}", out)
    return out


class LoggerSet:
    """Fans the runner's events out to every logger; never lets a logger stop the run.

    The runner calls :meth:`on_step` every optimizer step with the loss tensor (still on the
    device) and the learning rate; losses are read back every :data:`FLUSH_EVERY` steps.
    """

    def __init__(self, loggers: Sequence[RunLogger]) -> None:
        self.loggers = list(loggers)
        self.step = 0
        self._pending: list[tuple[int, Any, float]] = []
        self._warned: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self.loggers)

    def _each(self, method: str, *args: Any) -> None:
        for logger in self.loggers:
            _quietly(getattr(logger, method), *args, warned=self._warned)

    def on_step(self, loss: Any, lr: float) -> None:
        self.step += 1
        self._pending.append((self.step, loss.detach(), lr))
        if len(self._pending) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        import torch

        values = torch.stack([loss.float().reshape(()) for _, loss, _ in self._pending]).cpu().tolist()
        for (step, _, lr), value in zip(self._pending, values, strict=True):
            self._each("log_scalars", {"train/loss": value, "train/lr": lr}, step, "step")
        self._pending.clear()

    def on_row(self, task: int, columns: Sequence[str], row: Sequence[float], telemetry: Mapping[str, Any] | None = None) -> None:
        """The accuracy-matrix row after ``task`` tasks (0 = before training) and that task's
        telemetry (strategy statistics, timings, memory) as ``telemetry/...`` scalars."""
        self.flush()
        scalars = {f"accuracy/{name}": float(v) for name, v in zip(columns, row, strict=True) if math.isfinite(v)}
        if telemetry:
            flatten_scalars(dict(telemetry), "telemetry", scalars)
        self._each("log_scalars", scalars, task, "task")

    def on_end(self, metrics: Mapping[str, Any], artifacts: Sequence[Path], status: str) -> None:
        self.flush()
        self._each("log_summary", flatten_scalars(dict(metrics), "metrics"))
        for path in artifacts:
            self._each("log_artifact", path)
        self.close(status)

    def close(self, status: str) -> None:
        self._each("close", status)
        self.loggers = []


def resume_step(task_records: Sequence[Mapping[str, Any]]) -> int:
    """Optimizer steps already taken by the tasks a resumed run will not train again."""
    return sum(int(r.get("steps", 0)) for r in task_records)
