"""The contracts third-party strategies, backbones and benchmarks code against.

Names are imported on first use (PEP 562), so that ``from clbench.api.benchmark import ...``
does not import torch: ``clbench list`` and ``clbench show BENCHMARK`` start without it.
"""

from clbench.lazy import lazy_exports

_HOME = {
    "Backbone": "backbone", "Batch": "backbone", "TaskHeads": "backbone", "inject_adapters": "adapters", "AdapterLinear": "adapters", "adapters": "",
    "PROTOCOLS": "benchmark", "BenchmarkSpec": "benchmark", "TaskSpec": "benchmark", "TrainSettings": "benchmark",
    "HOOKS": "strategy", "FullModelConfig": "strategy_config", "RunContext": "strategy", "Strategy": "strategy", "StrategyConfig": "strategy_config",
    "TaskLoop": "strategy", "TaskStats": "strategy",
    "ExampleListDataset": "stream", "Experience": "stream", "Stream": "stream", "TensorTaskDataset": "stream", "concat_datasets": "stream",
}

__all__ = sorted(_HOME)


__getattr__, __dir__ = lazy_exports(__name__, _HOME)
