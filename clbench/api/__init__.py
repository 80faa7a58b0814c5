"""The contracts third-party strategies, backbones and benchmarks code against.

Names are imported on first use (PEP 562), so that ``from clbench.api.benchmark import ...``
does not import torch: ``clbench list`` and ``clbench show BENCHMARK`` start without it.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_HOME = {
    "Backbone": "backbone", "Batch": "backbone",
    "PROTOCOLS": "benchmark", "BenchmarkSpec": "benchmark", "TaskSpec": "benchmark", "TrainSettings": "benchmark",
    "RunContext": "strategy", "Strategy": "strategy", "StrategyConfig": "strategy",
    "ExampleListDataset": "stream", "Experience": "stream", "Stream": "stream", "TensorTaskDataset": "stream", "concat_datasets": "stream",
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'clbench.api' has no attribute {name!r}")
    value = getattr(import_module(f"clbench.api.{_HOME[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
