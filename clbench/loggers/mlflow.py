"""MLflow logger: one MLflow run per clbench run, in the experiment named after the benchmark.

The tracking store is ``$MLFLOW_TRACKING_URI`` when set (a tracking server, a database, ...);
otherwise ``OUT/mlruns``, MLflow's file store (``mlflow ui --backend-store-uri runs/mlruns``).
The file store is in maintenance mode upstream but needs no database; clbench opts in to it
(``MLFLOW_ALLOW_FILE_STORE=true``) only for that default (ours: a database backend costs ~15 s
of migrations on the first run). Works through ``MlflowClient`` with explicit run ids, so
several runs in one process never share MLflow's global "active run".
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, ClassVar

from clbench.loggers.base import Axis, RunInfo, RunLogger

MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call
MAX_PARAM = 6000  # and of a parameter value's length


def _key(name: str) -> str:
    """MLflow metric/param names allow alphanumerics, ``_ - . / :`` and spaces."""
    return re.sub(r"[^\w\-./: ]", "_", name)


def _params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_params(value, f"{name}."))
        elif value is not None:
            out[_key(name)] = str(value)[:MAX_PARAM]
    return out


def tracking_uri(out: Path) -> str:
    """``$MLFLOW_TRACKING_URI``, else the file store ``OUT/mlruns``."""
    configured = os.environ.get("MLFLOW_TRACKING_URI")
    if configured:
        return configured
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return (out / "mlruns").resolve().as_uri()


class MLflowLogger(RunLogger):
    """Logs to an MLflow tracking store (a file store under ``--out`` by default)."""

    extra: ClassVar[str | None] = "mlflow"
    requires: ClassVar[str | None] = "mlflow"

    def __init__(self, info: RunInfo) -> None:
        super().__init__(info)
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri(info.out))
        experiment = self.client.get_experiment_by_name(info.benchmark)
        experiment_id = experiment.experiment_id if experiment is not None else self.client.create_experiment(info.benchmark)
        tags = {"clbench.benchmark": info.benchmark, "clbench.strategy": info.strategy, "clbench.seed": str(info.seed),
                "clbench.run_dir": str(info.run_dir), "clbench.resumed": str(info.resumed).lower()}
        self.run_id = self.client.create_run(experiment_id, run_name=info.name, tags=tags).info.run_id

    def log_config(self, config: dict[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in _params(config).items()]
        for start in range(0, len(params), 100):  # MLflow's limit of params per batch
            self.client.log_batch(self.run_id, params=params[start:start + 100])
        self.client.log_dict(self.run_id, config, "config.json")

    def _metrics(self, scalars: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(_key(k), v, now, step) for k, v in scalars.items()]
        for start in range(0, len(metrics), MAX_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[start:start + MAX_BATCH])

    def log_scalars(self, scalars: dict[str, float], step: int, axis: Axis) -> None:
        self._metrics(scalars, step)

    def log_summary(self, metrics: dict[str, float]) -> None:
        self._metrics(metrics, 0)

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path), "figures")

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if status == "complete" else "FAILED")
