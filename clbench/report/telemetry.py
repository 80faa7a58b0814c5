"""Telemetry figures: whatever numbers strategies record after each task, plotted by shape.

Strategies return JSON from ``telemetry()`` (MoRA's bank size, active experts and routing matrix;
CoDyRA's effective rank per module and ΔW drift; CoSO's subspace size and captured energy; ...).
The report does not know any strategy: it walks each task's record and plots by shape —

- a number per task → a curve over tasks, one line per strategy (mean over seeds);
- a mapping of four or more names to numbers (per module, per layer) → a heat map of names × tasks;
- a matrix (list of equal-length numeric lists) → a heat map of the last task's matrix, labelled by
  the sibling ``…rows`` / ``…columns`` lists when the strategy provides them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clbench.report.aggregate import BenchmarkGroup, StrategyRuns

MIN_MAP_ENTRIES = 4
MAX_SCALAR_PANELS = 12


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_matrix(value: Any) -> bool:
    return (isinstance(value, list) and len(value) > 0 and all(isinstance(r, list) and r for r in value)
            and len({len(r) for r in value}) == 1 and all(_is_number(v) or v is None for r in value for v in r))


def walk(record: Any, prefix: str = "") -> Iterator[tuple[str, str, Any]]:
    """``(dotted path, kind, value)`` for every plottable entry of one task's telemetry."""
    if _is_number(record):
        yield prefix, "scalar", float(record)
    elif isinstance(record, dict):
        if len(record) >= MIN_MAP_ENTRIES and all(_is_number(v) for v in record.values()):
            yield prefix, "map", {str(k): float(v) for k, v in record.items()}
            return
        for key, value in record.items():
            if key == "task":
                continue
            yield from walk(value, f"{prefix}.{key}" if prefix else str(key))
    elif _is_matrix(record):
        yield prefix, "matrix", record


@dataclass
class Series:
    """One telemetry entry across tasks for one strategy (values per seed, per task)."""

    kind: str
    per_seed: list[list[Any]]


def collect(strategy: StrategyRuns, n_tasks: int) -> dict[str, Series]:
    """Every telemetry path of a strategy's runs, aligned by task index (``None`` where absent)."""
    found: dict[str, Series] = {}
    for seed_index, run in enumerate(strategy.runs):
        for t, record in enumerate(run.get("telemetry", [])[:n_tasks]):
            for path, kind, value in walk(record):
                series = found.setdefault(path, Series(kind, [[None] * n_tasks for _ in strategy.runs]))
                if series.kind == kind:
                    series.per_seed[seed_index][t] = value
    return found


def _sibling_labels(path: str, record_paths: dict[str, Any], axis: str) -> list[str] | None:
    head, _, leaf = path.rpartition(".")
    for candidate in (leaf.replace("matrix", axis), f"{leaf}_{axis}", axis):
        labels = record_paths.get(f"{head}.{candidate}" if head else candidate)
        if isinstance(labels, list):
            return [str(v) for v in labels]
    return None


def _raw_paths(record: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(record, dict):
        for key, value in record.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            out[path] = value
            out.update(_raw_paths(value, path))
    return out


def telemetry_figures(group: BenchmarkGroup, folder: Path) -> list[tuple[str, str]]:
    """Draw every telemetry figure of ``group`` into ``folder``; returns ``(stem, caption)`` pairs."""
    from clbench.report.figures import heatmap, telemetry_curves

    tasks = list(group.first["benchmark"]["tasks"])
    n_tasks = len(tasks)
    collected = {label: collect(strategy, n_tasks) for label, strategy in group.strategies.items()}
    figures: list[tuple[str, str]] = []

    scalars: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for label, paths in collected.items():
        for path, series in paths.items():
            if series.kind == "scalar":
                values = np.array([[np.nan if v is None else v for v in seed] for seed in series.per_seed], dtype=float)
                if np.isfinite(values).any():
                    scalars[path][label] = _nanmean_columns(values)
    namespaces: dict[str, list[str]] = defaultdict(list)
    for path in sorted(scalars):
        namespaces[path.split(".")[0]].append(path)
    for namespace, paths in sorted(namespaces.items()):
        for part, start in enumerate(range(0, len(paths), MAX_SCALAR_PANELS)):
            chunk = paths[start:start + MAX_SCALAR_PANELS]
            stem = f"telemetry-{_slug(namespace)}" + (f"-{part + 1}" if len(paths) > MAX_SCALAR_PANELS else "")
            telemetry_curves({p: scalars[p] for p in chunk}, tasks, folder / stem, f"{group.name}: {namespace} telemetry after each task")
            figures.append((stem, f"Telemetry ({namespace}): values recorded after each task, mean over seeds."))

    for label, paths in collected.items():
        runs = group.strategies[label].runs
        last_record = _raw_paths(runs[0]["telemetry"][-1]) if runs[0].get("telemetry") else {}
        for path, series in sorted(paths.items()):
            if series.kind == "map":
                names = sorted({k for seed in series.per_seed for m in seed if m for k in m})
                data = np.full((len(names), n_tasks), np.nan)
                for t in range(n_tasks):
                    for i, name in enumerate(names):
                        values = [m[name] for seed in series.per_seed if (m := seed[t]) and name in m]
                        if values:
                            data[i, t] = float(np.mean(values))
                stem = f"telemetry-{_slug(label)}-{_slug(path)}"
                heatmap(data, names, tasks, folder / stem, f"{label}: {path}", xlabel="after training task", ylabel="", value_format=_format_for(data))
                figures.append((stem, f"{label}: {path} per entry (rows) after each task (columns), mean over seeds."))
            elif series.kind == "matrix":
                finals = [seed[-1] for seed in series.per_seed if seed[-1] is not None]
                if not finals:
                    continue
                data = np.mean([np.array([[np.nan if v is None else v for v in row] for row in m], dtype=float) for m in finals], axis=0)
                rows = _sibling_labels(path, last_record, "rows") or [str(i) for i in range(data.shape[0])]
                cols = _sibling_labels(path, last_record, "columns") or [str(i) for i in range(data.shape[1])]
                stem = f"telemetry-{_slug(label)}-{_slug(path)}"
                heatmap(data, rows, cols, folder / stem, f"{label}: {path} after the last task", xlabel="", ylabel="", value_format=_format_for(data))
                figures.append((stem, f"{label}: {path} after the last task (mean over seeds)."))
    return figures


def _nanmean_columns(values: np.ndarray) -> list[float]:
    """Mean over seeds per task, NaN where no seed recorded the value (without numpy's warning)."""
    counts = np.isfinite(values).sum(axis=0)
    sums = np.where(np.isfinite(values), values, 0.0).sum(axis=0)
    return [float(s / c) if c else float("nan") for s, c in zip(sums, counts, strict=True)]


def _format_for(data: np.ndarray) -> str:
    finite = data[np.isfinite(data)]
    if finite.size and np.all(np.abs(finite - np.round(finite)) < 1e-9):
        return "{:.0f}"
    return "{:.2f}" if finite.size and np.nanmax(np.abs(finite)) < 100 else "{:.0f}"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower()
