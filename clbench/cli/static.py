"""Facts about clbench's own components read from their source, without importing them (so
without torch): docstrings for ``clbench list``, and the class attributes ``clbench show
STRATEGY`` prints.

A name is followed through ``from X import name`` re-exports and the lazy re-exports of
:func:`clbench.lazy.lazy_exports`; a value is read when it is a literal, ``frozenset(...)``/``set``/
``tuple`` of literals, or a name bound to such a value at the top of its module. Anything else
makes the reader answer ``None``, and the caller imports the component instead.
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_CONTAINERS = {"frozenset": frozenset, "set": set, "tuple": tuple, "list": list, "dict": dict}


class Unknown(Exception):
    """A value the source reader cannot determine without running the code."""


def _source_of(module: str) -> tuple[Path, str] | None:
    """The source file of ``module`` and its package, found without running the module or its
    packages past the top two levels (``find_spec`` of ``a.b`` imports ``a`` only; deeper
    packages, which may import torch, are looked up as folders)."""
    parts = module.split(".")
    spec = importlib.util.find_spec(".".join(parts[:2]))
    if spec is None:
        return None
    origin = Path(spec.origin) if spec.origin else None
    for part in parts[2:]:
        folders = [Path(f) for f in (spec.submodule_search_locations or [])] if origin is None or origin.name == "__init__.py" else []
        folders = folders or ([origin.parent] if origin is not None and origin.name == "__init__.py" else [])
        origin = next((c for f in folders for c in (f / part / "__init__.py", f / f"{part}.py") if c.is_file()), None)
        if origin is None:
            return None
        spec = importlib.util.spec_from_file_location(part, origin, submodule_search_locations=[str(origin.parent)] if origin.name == "__init__.py" else None)
        if spec is None:
            return None
    if origin is None or origin.suffix != ".py":
        return None
    package = module if origin.name == "__init__.py" else module.rpartition(".")[0]
    return origin, package


@functools.cache
def _parsed(module: str) -> tuple[ast.Module, str] | None:
    """The syntax tree of ``module`` and its package."""
    found = _source_of(module)
    return (ast.parse(found[0].read_text(encoding="utf-8")), found[1]) if found else None


@dataclass(frozen=True)
class Definition:
    """Where a name is bound: ``node`` (a class, a function, or an assigned value) in ``module``."""

    module: str
    node: ast.AST


def _lazy_homes(node: ast.stmt, module: str) -> dict[str, str] | None:
    """``{name: submodule}`` of a top-level ``... = lazy_exports(__name__, HOMES)`` in ``module``."""
    call = node.value if isinstance(node, ast.Assign) else None
    if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "lazy_exports" and len(call.args) == 2:
        try:
            homes = value_of(call.args[1], module)
        except Unknown:
            return None
        return homes if isinstance(homes, dict) else None
    return None


def definition(value: str, hops: int = 4) -> Definition | None:
    """Where the object ``module:attr`` is defined, following re-exports; ``None`` when unknown."""
    module, _, attr = value.partition(":")
    parsed = _parsed(module) if attr else None
    if parsed is None:
        return None
    tree, package = parsed
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef) and node.name == attr:
            return Definition(module, node)
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) and node.value else []
        if any(isinstance(t, ast.Name) and t.id == attr for t in targets):
            return Definition(module, node.value)  # type: ignore[union-attr]
    if hops <= 0:
        return None
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == attr:
                    base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level else node.module
                    return definition(f"{base}:{alias.name}", hops - 1)
        homes = _lazy_homes(node, module)
        if homes and homes.get(attr):
            return definition(f"{module}.{homes[attr]}:{attr}", hops - 1)
    return None


def static_docstring(value: str) -> str | None:
    """The docstring of the class or function ``module:attr`` names; ``None`` when not found."""
    found = definition(value)
    return ast.get_docstring(found.node) if found and isinstance(found.node, ast.ClassDef | ast.FunctionDef) else None


def module_docstring(module: str) -> str | None:
    """The raw docstring of ``module`` (as ``module.__doc__``)."""
    parsed = _parsed(module)
    return ast.get_docstring(parsed[0], clean=False) if parsed else None


def reference(module: str, name: str) -> str:
    """``module:attr`` of the object ``name`` refers to at the top of ``module`` (where defined)."""
    found = definition(f"{module}:{name}", hops=0)
    if found is not None:
        return f"{module}:{name}"
    parsed = _parsed(module)
    for node in parsed[0].body if parsed else []:
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return f"{node.module}:{alias.name}"
    raise Unknown(f"{name} in {module}")


def value_of(expr: ast.AST, module: str) -> Any:
    """The value of ``expr`` (written in ``module``), or :class:`Unknown`."""
    if isinstance(expr, ast.Constant):
        return expr.value
    if isinstance(expr, ast.Tuple | ast.List | ast.Set):
        items = [value_of(e, module) for e in expr.elts]
        return tuple(items) if isinstance(expr, ast.Tuple) else items if isinstance(expr, ast.List) else set(items)
    if isinstance(expr, ast.Dict) and None not in expr.keys:
        return {value_of(k, module): value_of(v, module) for k, v in zip(expr.keys, expr.values, strict=True)}  # type: ignore[arg-type]
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id in _CONTAINERS and len(expr.args) <= 1 \
            and not expr.keywords and not _shadowed(expr.func.id, module):
        return _CONTAINERS[expr.func.id](*(value_of(a, module) for a in expr.args))
    if isinstance(expr, ast.Name):
        found = definition(reference(module, expr.id))
        if found is not None and not isinstance(found.node, ast.ClassDef | ast.FunctionDef):
            return value_of(found.node, found.module)
    raise Unknown(ast.dump(expr))


def _shadowed(name: str, module: str) -> bool:
    return hasattr(builtins, name) and definition(f"{module}:{name}", hops=0) is not None


def class_assignment(value: str, attr: str, depth: int = 4) -> tuple[ast.expr, str]:
    """The expression assigned to the class attribute ``attr`` of the class ``module:Class`` and
    the module it is written in, looked up in the class body and then in its only base;
    :class:`Unknown` for a decorated class, a metaclass, several bases or no assignment."""
    found = definition(value)
    if found is None or not isinstance(found.node, ast.ClassDef) or found.node.decorator_list or found.node.keywords or depth <= 0:
        raise Unknown(value)
    klass = found.node
    for node in klass.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) and node.value else []
        if any(isinstance(t, ast.Name) and t.id == attr for t in targets):
            return node.value, found.module  # type: ignore[union-attr]
    if len(klass.bases) != 1 or not isinstance(klass.bases[0], ast.Name):
        raise Unknown(f"{value}.{attr}")
    return class_assignment(reference(found.module, klass.bases[0].id), attr, depth - 1)
