"""The contracts third-party strategies, backbones and benchmarks code against."""

from clbench.api.backbone import Backbone, Batch
from clbench.api.benchmark import PROTOCOLS, BenchmarkSpec, TaskSpec, TrainSettings
from clbench.api.strategy import RunContext, Strategy, StrategyConfig
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
    "RunContext",
    "Strategy",
    "StrategyConfig",
    "Stream",
    "TaskSpec",
    "TensorTaskDataset",
    "TrainSettings",
    "concat_datasets",
]
