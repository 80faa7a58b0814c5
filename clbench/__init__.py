"""clbench: continual-learning benchmarks for pretrained CLIP and LLM backbones.

The Python API mirrors the CLI: :func:`clbench.run` runs a benchmark with one strategy and seed,
:func:`clbench.report` builds figures from results files, and :mod:`clbench.metrics` holds the
metric formulas. Importing clbench is cheap: heavy modules load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "run": ("clbench.runner", "run"),
    "RunOptions": ("clbench.runner", "RunOptions"),
    "report": ("clbench.report", "build_report"),
    "load_benchmark": ("clbench.registry", "load_benchmark"),
}

__all__ = ["RunOptions", "__version__", "load_benchmark", "report", "run"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(import_module(module), attr)
    raise AttributeError(f"module 'clbench' has no attribute {name!r}")
