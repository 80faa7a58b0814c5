"""Names a package re-exports, imported on first use (PEP 562).

A package ``__init__`` that re-exports from its submodules declares where each name lives; the
submodule is imported only when the name is first read. ``clbench.api`` and every built-in
strategy package use it, so that importing one light submodule (a strategy's ``config.py``, for
``clbench show``) does not import torch through its package. clbench's source readers
(:mod:`clbench.cli.static`) follow these declarations as they follow ``from X import name``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from importlib.util import find_spec
from typing import Any


def lazy_exports(package: str, homes: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, whose name ``N`` lives in submodule ``homes[N]``
    (``""``: ``N`` is itself a submodule). Other submodules are imported when read as attributes,
    as an eager ``__init__`` that imported them would have allowed."""

    def __getattr__(name: str) -> Any:
        if name in homes:
            value = import_module(f"{package}.{homes[name] or name}")
            value = getattr(value, name) if homes[name] else value
        elif not name.startswith("__") and find_spec(f"{package}.{name}") is not None:
            value = import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(import_module(package), name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(import_module(package))) | set(homes))

    return __getattr__, __dir__
