"""Uncertainty in reports: per-strategy bootstrap intervals, "did not learn" verdicts, paired comparisons.

Each run directory may hold ``examples.npz`` (per-example scores of every evaluation, see
:mod:`clbench.example_scores`). For a strategy whose every seed has a complete file that agrees
with its accuracy matrix, the report resamples test examples and seeds
(:mod:`clbench.uncertainty`) for 95 % intervals of the headline metrics and judges plasticity by
the interval of the gain over row 0. Results written before these files existed (or whose file is
stale: readable, but not the scores behind this results file's matrix) still load: their
intervals read "n/a" and the point estimate judges plasticity. A file that is present but
damaged (truncated, not a zip, arrays of the wrong shape) is refused with one line naming it.

Resampling is seeded from the benchmark and strategy labels, so a strategy's intervals do not
depend on which other strategies share the report and the same inputs give the same bytes.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clbench import metrics as formulas
from clbench import uncertainty
from clbench.errors import ResultsError, UsageError
from clbench.example_scores import EXAMPLES_FILE, ExampleScores, matches_matrix
from clbench.report.aggregate import BenchmarkGroup, StrategyRuns, mean_std
from clbench.report.document import Table
from clbench.results import trained_matrix

COMPARED = ("last_accuracy", "average_incremental_accuracy", "learning_accuracy", "plasticity_gain", "forgetting_chaudhry")
"""Metrics of the paired comparison table."""


@dataclass
class StrategyUncertainty:
    """Intervals and the plasticity verdict of one strategy (all its seeds)."""

    label: str
    intervals: dict[str, tuple[float, float] | None]
    verdict: dict[str, Any]
    scores: list[list[np.ndarray]] | None  # per seed, per trained column (T+1, n); None if unavailable
    missing: str = ""  # why intervals are unavailable

    @property
    def available(self) -> bool:
        return self.scores is not None


def _stable_seed(*parts: str) -> int:
    return zlib.crc32("|".join(parts).encode("utf-8"))


def run_scores(results: dict[str, Any]) -> tuple[list[np.ndarray] | None, str]:
    """A run's per-example scores of its trained-task columns, or ``None`` and the reason.

    Raises:
        ResultsError: the run's ``examples.npz`` exists but cannot be read (naming it).
    """
    path = Path(results["_path"]).parent / EXAMPLES_FILE
    if not path.is_file():
        return None, "no per-example scores"
    try:
        scores = ExampleScores.load(path)
    except ResultsError as exc:  # present but unreadable: refused, so damage never passes for "no intervals"
        raise ResultsError(f"{exc}; rerun that run with --overwrite, or delete the file to report it without intervals") from None
    if not scores.is_complete() or not matches_matrix(scores, results["matrix"]["values"]):
        return None, f"{path} does not match its results.json"
    return scores.columns(len(results["benchmark"]["tasks"])), ""


def strategy_uncertainty(group: BenchmarkGroup, strategy: StrategyRuns) -> StrategyUncertainty:
    """Intervals of :data:`clbench.uncertainty.INTERVAL_METRICS` (examples and seeds resampled) and the verdict."""
    n_tasks = len(group.first["benchmark"]["tasks"])
    per_seed, reasons = [], {}
    for run in strategy.runs:
        columns, reason = run_scores(run)
        per_seed.append(columns)
        if columns is None:
            reasons.setdefault(reason, []).append(str(run["seed"]))
    if reasons:
        missing = "; ".join(why if len(seeds) == len(strategy.runs) else f"seed {', '.join(seeds)}: {why}" for why, seeds in reasons.items())
    matrices = [np.asarray(trained_matrix(r), dtype=float) for r in strategy.runs]
    gain = float(np.mean([formulas.plasticity_gain(m) for m in matrices]))
    task_gains = list(np.mean([formulas.plasticity_gains(m) for m in matrices], axis=0))
    if reasons:
        verdict = uncertainty.plasticity_verdict(gain, None, task_gains)
        return StrategyUncertainty(strategy.label, dict.fromkeys(interval_metric_names(group)), verdict, None, missing)
    scores = [c for c in per_seed if c is not None]
    names = interval_metric_names(group)
    metrics = {**uncertainty.named_metrics(names), **uncertainty.task_gain_metrics(n_tasks)}
    found = uncertainty.bootstrap_intervals(scores, metrics, seed=_stable_seed(group.name, str(group.version), strategy.label))
    verdict = uncertainty.plasticity_verdict(gain, found["plasticity_gain"], task_gains,
                                             [found[f"gain_task_{i}"] for i in range(1, n_tasks + 1)])
    return StrategyUncertainty(strategy.label, {m: found[m] for m in names}, verdict, scores)


def interval_metric_names(group: BenchmarkGroup) -> list[str]:
    """The interval metrics plus the benchmark's other headline metrics (every metric the tables print)."""
    headline = [m for m in group.first["benchmark"].get("metrics", []) if m in formulas.METRICS]
    return list(uncertainty.INTERVAL_METRICS) + [m for m in headline if m not in uncertainty.INTERVAL_METRICS]


def group_uncertainty(group: BenchmarkGroup) -> dict[str, StrategyUncertainty]:
    return {label: strategy_uncertainty(group, strategy) for label, strategy in group.strategies.items()}


def metric_cell(values: list[float], interval: tuple[float, float] | None) -> str:
    """``mean [low, high]`` in percent with an interval, else ``mean ± std`` over seeds (see :func:`mean_std`)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if interval is None or not finite:
        return mean_std(values)
    return f"{100 * float(np.mean(finite)):.1f} [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


def learned_cell(verdict: dict[str, Any]) -> str:
    counts = f"{verdict['tasks_learned']}/{verdict['tasks']}"
    return f"yes ({counts} tasks)" if verdict["learned"] else f"did not learn ({counts})"


def resolve_label(groups: list[BenchmarkGroup], name: str) -> None:
    """Check that ``--compare NAME`` names a strategy (label or plain name) of at least one benchmark,
    and one configuration only in each (every benchmark is checked: nothing may fail after writing)."""
    labels = sorted({label for g in groups for label in g.strategies})
    if not [g for g in groups if reference_label(g, name)]:
        raise UsageError(f"--compare {name!r}: no such strategy in these results; strategies: {', '.join(labels)}")


def reference_label(group: BenchmarkGroup, name: str) -> str | None:
    """The label of ``name`` in ``group``: the exact label, or the one configuration of that strategy."""
    if name in group.strategies:
        return name
    matches = [label for label in group.strategies if label.split("@", 1)[0] == name]
    if len(matches) > 1:
        raise UsageError(f"--compare {name!r} is ambiguous on {group.name}: it ran with several configurations ({', '.join(matches)}); name one")
    return matches[0] if matches else None


def comparison_table(group: BenchmarkGroup, reference: str, found: dict[str, StrategyUncertainty]) -> Table:
    """Each other strategy minus ``reference`` per metric, with the paired-bootstrap interval and a mark when significant."""
    base = found[reference]
    base_runs = group.strategies[reference]
    rows = []
    for label, other in found.items():
        if label == reference:
            continue
        if not (base.available and other.available):
            rows.append((label, *("n/a" for _ in COMPARED)))
            continue
        pair_seeds = group.strategies[label].seeds == base_runs.seeds
        paired = uncertainty.paired_comparison(other.scores, base.scores, uncertainty.named_metrics(COMPARED),  # type: ignore[arg-type]
                                               seed=_stable_seed(group.name, str(group.version), label, reference), pair_seeds=pair_seeds)
        cells = []
        for name in COMPARED:
            result = paired[name]
            if result is None:
                cells.append("–")
                continue
            mark = " *" if result.significant else ""
            cells.append(f"{100 * result.difference:+.1f} [{100 * result.low:+.1f}, {100 * result.high:+.1f}]{mark} p={result.p_value:.3f}")
        rows.append((label, *cells))
    caption = (f"Paired comparison against {reference}: each strategy's metric minus {reference}'s, in points, with the 95% paired-bootstrap "
               "interval (the same resampled test examples for both, seeds paired when both ran the same seeds) and the bootstrap p-value; "
               "* = significant (the interval excludes 0). Higher is better except for Forgetting. Not corrected for multiple comparisons; "
               "n/a = no per-example scores.")
    return Table(("strategy", *(f"Δ {formulas.metric_label(m)}" for m in COMPARED)), tuple(rows), caption)
