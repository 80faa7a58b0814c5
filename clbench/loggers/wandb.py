"""Weights & Biases logger: one W&B run per clbench run, files under ``RUN_DIR/wandb``.

Project ``$WANDB_PROJECT`` (default ``clbench``), group = benchmark, name = ``STRATEGY-seedN``.
``WANDB_MODE=offline`` keeps everything on disk (``wandb sync RUN_DIR/wandb/offline-run-*``
uploads it later). Training scalars use ``train/step`` as their x-axis and accuracy rows and
telemetry use ``task`` (``define_metric``), so both axes stay monotonic in one W&B run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from clbench.loggers.base import Axis, RunInfo, RunLogger

STEP_KEY = {"step": "train/step", "task": "task"}


class WandbLogger(RunLogger):
    """Logs to Weights & Biases (online, or offline with ``WANDB_MODE=offline``)."""

    extra: ClassVar[str | None] = "wandb"
    requires: ClassVar[str | None] = "wandb"

    def __init__(self, info: RunInfo) -> None:
        super().__init__(info)
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "clbench"), group=info.benchmark, name=info.name, dir=str(info.run_dir),
                              config=info.config, job_type="resume" if info.resumed else "train",
                              tags=[info.benchmark, info.strategy.replace("/", "-")[:64]], reinit="create_new")
        self.run.define_metric("train/step")
        self.run.define_metric("train/*", step_metric="train/step")
        self.run.define_metric("task")
        for pattern in ("accuracy/*", "telemetry/*"):
            self.run.define_metric(pattern, step_metric="task")

    def log_config(self, config: dict[str, Any]) -> None:
        self.run.config.update(config, allow_val_change=True)

    def log_scalars(self, scalars: dict[str, float], step: int, axis: Axis) -> None:
        self.run.log({**scalars, STEP_KEY[axis]: step})

    def log_summary(self, metrics: dict[str, float]) -> None:
        self.run.summary.update(metrics)

    def log_artifact(self, path: Path) -> None:
        self.run.save(str(path), base_path=str(path.parent.parent), policy="now")

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "complete" else 1)
