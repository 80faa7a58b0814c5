"""The contracts third-party strategies, backbones and benchmarks code against."""

from clbench.api import adapters
from clbench.api.adapters import inject_adapters
from clbench.api.backbone import Backbone, Batch, TaskHeads
from clbench.api.benchmark import PROTOCOLS, BenchmarkSpec, TaskSpec, TrainSettings
from clbench.api.strategy import HOOKS, FullModelConfig, RunContext, Strategy, StrategyConfig, TaskLoop, TaskStats
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
    "FullModelConfig",
    "HOOKS",
    "RunContext",
    "Strategy",
    "StrategyConfig",
    "Stream",
    "TaskHeads",
    "TaskLoop",
    "TaskSpec",
    "TaskStats",
    "TensorTaskDataset",
    "TrainSettings",
    "adapters",
    "concat_datasets",
    "inject_adapters",
]
