"""The table ``clbench run`` prints at the end: every run's metrics with 95 % intervals and plasticity.

Plasticity (learning accuracy and its gain over row 0) sits beside Last, Avg. and forgetting, and
a run whose gain is not above 0 (by its bootstrap interval) is marked ``DID NOT LEARN``, so that a
strategy that never learned cannot read as one that does not forget.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clbench.metrics import metric_short

ALWAYS = ("last_accuracy", "average_incremental_accuracy", "learning_accuracy", "plasticity_gain", "forgetting_chaudhry", "bwt")
"""Columns every summary has, whatever the benchmark's headline metrics."""


def summary_columns(headline: Sequence[str]) -> list[str]:
    """The always-shown metrics, then the benchmark's other headline metrics."""
    return list(ALWAYS) + [m for m in headline if m not in ALWAYS]


def metric_cell(value: float | None, interval: Sequence[float] | None) -> str:
    """``45.8 [42.1, 49.0]`` in percent (``-`` when undefined)."""
    if value is None:
        return "-"
    if interval is None:
        return f"{100 * value:.1f}"
    return f"{100 * value:.1f} [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


def learned_cell(plasticity: dict[str, Any] | None) -> str:
    """``3/3 tasks``, or ``DID NOT LEARN (0/3)`` by the rule in :mod:`clbench.uncertainty`."""
    if not plasticity:
        return "?"
    counts = f"{plasticity.get('tasks_learned', 0)}/{plasticity.get('tasks', 0)}"
    return f"{counts} tasks" if plasticity.get("learned") else f"DID NOT LEARN ({counts})"


def summary_lines(headline: Sequence[str], runs: Sequence[tuple[str, int, dict[str, Any], float]]) -> list[str]:
    """Aligned lines: a header, one line per (strategy, seed, results, seconds), then a legend."""
    names = summary_columns(headline)
    header = ["strategy", "seed", *(metric_short(m) for m in names), "learned", "probes Δ", "time", "results"]
    table = [header]
    for name, seed, results, seconds in runs:
        metrics = results.get("metrics", {})
        intervals = results.get("intervals") or {}
        probes = results.get("probes", {})
        probe_delta = ", ".join("-" if p.get("delta") is None else f"{100 * p['delta']:+.1f}" for p in probes.values()) or "-"
        where = str(Path(results["_path"]).parent) if "_path" in results else ""
        table.append([name, str(seed), *(metric_cell(metrics.get(m), intervals.get(m)) for m in names),
                      learned_cell(results.get("plasticity")), probe_delta, f"{seconds:.1f}s", where])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    # numbers (seed, metrics, time) are right-aligned so that their digits line up; names and paths left
    right = {1, *range(2, 2 + len(names)), len(header) - 2}
    lines = ["  ".join(cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    from clbench.cli.text import wrap

    lines.append(wrap("(scores in %, [95% bootstrap interval over test examples]; learn = mean accuracy on each task right after "
                      "learning it, gain = learn minus row 0; forget = Chaudhry forgetting, bwt/fwt as in GEM with b_i = row 0; "
                      "DID NOT LEARN = the gain's interval reaches 0, so its forgetting means nothing)"))
    return lines
