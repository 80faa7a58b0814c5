"""The contracts third-party strategies, backbones and benchmarks code against."""

from clbench.api.backbone import Backbone, Batch
from clbench.api.benchmark import PROTOCOLS, BenchmarkSpec, TaskSpec, TrainSettings
from clbench.api.strategy import HOOKS, RunContext, Strategy, StrategyConfig, TaskLoop, TaskStats
from clbench.api.stream import (
    ExampleListDataset,
    Experience,
    Stream,
    TensorTaskDataset,
    concat_datasets,
)

__all__ = [
    "PROTOCOLS",
    "Backbone",
    "Batch",
    "BenchmarkSpec",
    "ExampleListDataset",
    "Experience",
    "HOOKS",
    "RunContext",
    "Strategy",
    "StrategyConfig",
    "Stream",
    "TaskLoop",
    "TaskSpec",
    "TaskStats",
    "TensorTaskDataset",
    "TrainSettings",
    "concat_datasets",
]
