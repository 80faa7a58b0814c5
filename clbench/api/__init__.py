"""The contracts third-party strategies, backbones and benchmarks code against.

Names are imported on first use (PEP 562), so that ``from clbench.api.benchmark import ...``
does not import torch: ``clbench list`` and ``clbench show BENCHMARK`` start without it.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_HOME = {
    "Backbone": "backbone", "Batch": "backbone", "TaskHeads": "backbone", "inject_adapters": "adapters", "adapters": "",
    "PROTOCOLS": "benchmark", "BenchmarkSpec": "benchmark", "TaskSpec": "benchmark", "TrainSettings": "benchmark",
    "HOOKS": "strategy", "FullModelConfig": "strategy", "RunContext": "strategy", "Strategy": "strategy", "StrategyConfig": "strategy",
    "TaskLoop": "strategy", "TaskStats": "strategy",
    "ExampleListDataset": "stream", "Experience": "stream", "Stream": "stream", "TensorTaskDataset": "stream", "concat_datasets": "stream",
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'clbench.api' has no attribute {name!r}")
    module = import_module(f"clbench.api.{_HOME[name] or name}")  # "": the name is a submodule
    value = getattr(module, name) if _HOME[name] else module
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
