"""Bootstrap confidence intervals, paired comparisons and the "did not learn" rule (numpy only).

Every number clbench prints is a mean over a finite test set (and over a few seeds), so it comes
with a 95 % percentile-bootstrap interval:

* **Resampling.** A replicate draws, for every task column, ``n_c`` of its ``n_c`` test examples
  with replacement and recomputes every entry of the accuracy matrix from the drawn examples. The
  same draw serves every row (a row is the same examples scored by a later model, so the rows'
  correlation, which forgetting depends on, is kept), every seed (all seeds of a benchmark score
  the same examples) and, in a paired comparison, both strategies. With several seeds a replicate
  also draws the seeds with replacement and averages the metric over the drawn seeds. The metric
  is the unchanged pure function of :mod:`clbench.metrics`, applied to each replicate matrix.
* **Intervals** are the 2.5th and 97.5th percentiles of the replicate values (Efron & Tibshirani
  1993, percentile method), from :data:`REPLICATES` replicates of a seeded generator, so the same
  inputs always give the same interval.
* **Paired comparison** of strategies A and B on the same examples: the replicate difference
  ``metric(A*) − metric(B*)`` under the shared draw (paired bootstrap; Koehn 2004 uses the same
  scheme for MT). The difference is *significant* when its 95 % interval excludes 0; the two-sided
  bootstrap p-value ``2·min(P(d* ≤ 0), P(d* ≥ 0))`` is reported beside it. Seeds are paired too
  when both strategies ran the same seeds. No correction for multiple comparisons is applied.
* **Did not learn** (:func:`plasticity_verdict`): a run or strategy *did not learn* when the 95 %
  interval of its plasticity gain ``mean_i(R[i][i] − R[0][i])`` reaches 0 or below, i.e. there
  is no evidence that learning raised any task's score above row 0. Without per-example scores
  the point estimate decides (gain ≤ 0). A task counts as learned when its own gain's interval
  lies above 0 (point estimate > 0 without intervals).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clbench import metrics as formulas

LEVEL = 0.95
REPLICATES = 2000
_CHUNK = 200  # replicates drawn at once: bounds memory at CHUNK x (test examples) counts per column
INTERVAL_METRICS = ("last_accuracy", "average_incremental_accuracy", "learning_accuracy", "plasticity_gain", "forgetting_chaudhry", "bwt",
                    "fwt")
"""Metrics that get intervals in results files, summaries and reports."""

LEARNED_RULE = ("did not learn = the 95% bootstrap interval of the plasticity gain mean_i(R[i][i] - R[0][i]) reaches 0 or below "
                "(no evidence the diagonal rose above row 0); judged on the point estimate (gain <= 0) when no per-example scores exist")
"""The "did not learn" rule in one line (results files and reports quote it)."""

Runs = Sequence[Sequence[np.ndarray]]
"""One strategy's per-example scores: ``runs[seed][column]`` is an array ``(T+1, n_column)``."""

Metric = Callable[[np.ndarray], float]


@dataclass(frozen=True)
class Paired:
    """A paired difference A − B: point estimate, interval, p-value and significance."""

    difference: float
    low: float
    high: float
    p_value: float

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return self.low > 0 or self.high < 0


def task_gain_metrics(n_tasks: int) -> dict[str, Metric]:
    """``gain_task_i``: R[i][i] − R[0][i] for each task i = 1..T, as metrics of the matrix."""
    out: dict[str, Metric] = {}
    for i in range(1, n_tasks + 1):
        def gain(R, i: int = i) -> float:
            return float(R[i][i - 1] - R[0][i - 1])
        gain._task_gain = True  # type: ignore[attr-defined]
        out[f"gain_task_{i}"] = gain
    return out


def named_metrics(names: Sequence[str]) -> dict[str, Metric]:
    """Metric functions by name from :data:`clbench.metrics.METRICS`."""
    return {name: formulas.METRICS[name] for name in names}


# ---- the interval metrics over a stack of matrices ---------------------------------------------
# A bootstrap evaluates each metric on thousands of replicate matrices. These evaluate a stack
# (..., T+1, T) at once with the formulas of :mod:`clbench.metrics` (the reference: the tests check
# that both agree on random matrices); any other metric falls back to one call per matrix.
def _diag(m: np.ndarray) -> np.ndarray:
    return np.diagonal(m[..., 1:, :], axis1=-2, axis2=-1)


def _avg_incremental(m: np.ndarray) -> np.ndarray:
    n_tasks = m.shape[-1]
    return np.mean([m[..., t, :t].mean(axis=-1) for t in range(1, n_tasks + 1)], axis=0)


def _forgetting_chaudhry(m: np.ndarray) -> np.ndarray:
    n_tasks = m.shape[-1]
    if n_tasks < 2:
        return np.full(m.shape[:-2], np.nan)
    return np.mean([m[..., i:n_tasks, i - 1].max(axis=-1) - m[..., n_tasks, i - 1] for i in range(1, n_tasks)], axis=0)


def _bwt(m: np.ndarray) -> np.ndarray:
    n_tasks = m.shape[-1]
    if n_tasks < 2:
        return np.full(m.shape[:-2], np.nan)
    return (m[..., n_tasks, : n_tasks - 1] - _diag(m)[..., : n_tasks - 1]).mean(axis=-1)


def _fwt(m: np.ndarray) -> np.ndarray:
    n_tasks = m.shape[-1]
    if n_tasks < 2:
        return np.full(m.shape[:-2], np.nan)
    before = np.diagonal(m[..., 1:n_tasks, 1:n_tasks], axis1=-2, axis2=-1)
    return (before - m[..., 0, 1:n_tasks]).mean(axis=-1)


STACKED: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "last_accuracy": lambda m: m[..., -1, :].mean(axis=-1),
    "average_incremental_accuracy": _avg_incremental,
    "learning_accuracy": lambda m: _diag(m).mean(axis=-1),
    "plasticity_gain": lambda m: (_diag(m) - m[..., 0, :]).mean(axis=-1),
    "forgetting_chaudhry": _forgetting_chaudhry,
    "bwt": _bwt,
    "fwt": _fwt,
}
"""Stacked versions of the :data:`INTERVAL_METRICS` (same formulas, evaluated over leading axes)."""


def _stacked(name: str, fn: Metric) -> Callable[[np.ndarray], np.ndarray]:
    if fn is formulas.METRICS.get(name) and name in STACKED:
        return STACKED[name]
    task = name.removeprefix("gain_task_")
    if name.startswith("gain_task_") and task.isdigit() and getattr(fn, "_task_gain", False):
        i = int(task)
        return lambda m: m[..., i, i - 1] - m[..., 0, i - 1]
    return lambda m: np.array([fn(x) for x in m.reshape(-1, *m.shape[-2:])]).reshape(m.shape[:-2])


def _check(samples: Sequence[Runs]) -> list[int]:
    """Column sizes shared by every run of every sample; raises ``ValueError`` otherwise."""
    sizes: list[int] | None = None
    rows: int | None = None
    for runs in samples:
        if not runs:
            raise ValueError("a sample needs at least one run")
        for columns in runs:
            shape = [np.shape(c) for c in columns]
            if any(len(s) != 2 for s in shape):
                raise ValueError("per-example scores must be (T+1, n) arrays per column")
            if sizes is None:
                sizes, rows = [s[1] for s in shape], shape[0][0]
            if [s[1] for s in shape] != sizes or any(s[0] != rows for s in shape):
                raise ValueError(f"runs do not score the same examples: column sizes {[s[1] for s in shape]} vs {sizes}")
    if not sizes or min(sizes) < 1:
        raise ValueError("every column needs at least one example")
    return sizes


def _example_counts(rng: np.random.Generator, n: int, count: int) -> np.ndarray:
    """``count`` bootstrap resamples of ``n`` examples, as draw counts per example, shape (count, n)."""
    draws = rng.integers(0, n, size=(count, n))
    flat = (draws + n * np.arange(count)[:, None]).reshape(-1)
    return np.bincount(flat, minlength=count * n).reshape(count, n).astype(np.float64)


def replicate_values(samples: Sequence[Runs], metrics: Mapping[str, Metric], *, replicates: int = REPLICATES, seed: int = 0,
                     pair_seeds: bool = False) -> np.ndarray:
    """Bootstrap replicates of each metric for each sample, under one shared example draw.

    Args:
        samples: per strategy, its runs (seeds), each a list of ``(T+1, n_c)`` score arrays.
        metrics: name → function of a ``(T+1, C)`` matrix.
        replicates: number of bootstrap replicates B.
        seed: seed of the generator (the same seed gives the same replicates).
        pair_seeds: draw the same seed indices for every sample (they must have as many runs).

    Returns:
        Array ``(len(samples), len(metrics), B)``; NaN where a metric is undefined (T = 1).
    """
    sizes = _check(samples)
    if pair_seeds and len({len(runs) for runs in samples}) != 1:
        raise ValueError("pair_seeds needs the same number of runs in every sample")
    rng = np.random.default_rng(seed)
    functions = [_stacked(name, fn) for name, fn in metrics.items()]
    out = np.empty((len(samples), len(functions), replicates))
    for start in range(0, replicates, _CHUNK):
        count = min(_CHUNK, replicates - start)
        counts = [_example_counts(rng, n, count) for n in sizes]
        shared = rng.integers(0, len(samples[0]), size=(count, len(samples[0]))) if pair_seeds else None
        for k, runs in enumerate(samples):
            values = np.empty((len(runs), len(functions), count))
            for s, columns in enumerate(runs):
                # (count, T+1, C): each replicate's accuracy matrix.
                matrices = np.stack([(w @ np.asarray(col, dtype=np.float64).T) / n for w, col, n in zip(counts, columns, sizes, strict=True)],
                                    axis=-1)
                for m, fn in enumerate(functions):
                    values[s, m] = fn(matrices)
            draws = shared if shared is not None else rng.integers(0, len(runs), size=(count, len(runs)))
            # Mean over the drawn seeds, per replicate: values[draws[j, :], m, j].
            picked = values[draws.T, :, np.arange(count)[None, :]]  # (S, count, M)
            out[k, :, start:start + count] = picked.mean(axis=0).T
    return out


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float] | None:
    """The central ``level`` percentile interval of replicate values (``None`` if any is NaN)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0 or not np.all(np.isfinite(values)):
        return None
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def bootstrap_intervals(runs: Runs, metrics: Mapping[str, Metric], *, replicates: int = REPLICATES, seed: int = 0,
                        level: float = LEVEL) -> dict[str, tuple[float, float] | None]:
    """95 % (``level``) percentile-bootstrap interval of each metric for one strategy's runs."""
    values = replicate_values([runs], metrics, replicates=replicates, seed=seed)[0]
    return {name: percentile_interval(values[m], level) for m, name in enumerate(metrics)}


def paired_comparison(runs_a: Runs, runs_b: Runs, metrics: Mapping[str, Metric], *, replicates: int = REPLICATES, seed: int = 0,
                      level: float = LEVEL, pair_seeds: bool = False) -> dict[str, Paired | None]:
    """Paired bootstrap of ``metric(A) − metric(B)`` on the same test examples.

    The point difference is the mean over A's runs minus the mean over B's runs of each metric
    on the per-example means; ``None`` where the metric is undefined.
    """
    values = replicate_values([runs_a, runs_b], metrics, replicates=replicates, seed=seed, pair_seeds=pair_seeds)
    out: dict[str, Paired | None] = {}
    for m, (name, fn) in enumerate(metrics.items()):
        diff = values[0, m] - values[1, m]
        interval = percentile_interval(diff, level)
        estimate = _mean_metric(runs_a, fn) - _mean_metric(runs_b, fn)
        if interval is None or not math.isfinite(estimate):
            out[name] = None
            continue
        p = min(1.0, 2 * min(float(np.mean(diff <= 0)), float(np.mean(diff >= 0))))
        out[name] = Paired(estimate, interval[0], interval[1], p)
    return out


def _mean_metric(runs: Runs, fn: Metric) -> float:
    return float(np.mean([fn(np.stack([np.asarray(c, dtype=np.float64).mean(axis=1) for c in columns], axis=-1)) for columns in runs]))


def plasticity_verdict(gain: float, gain_interval: tuple[float, float] | None, task_gains: Sequence[float],
                       task_intervals: Sequence[tuple[float, float] | None] | None = None) -> dict[str, Any]:
    """Whether a run (or a strategy over seeds) learned, by :data:`LEARNED_RULE`.

    Args:
        gain: the plasticity gain's point estimate.
        gain_interval: its bootstrap interval, or ``None`` when there are no per-example scores.
        task_gains: per-task gains R[i][i] − R[0][i] (point estimates).
        task_intervals: per-task intervals (``None`` entries or argument: point estimates decide).
    """
    if gain_interval is not None:
        learned = gain_interval[0] > 0
    else:
        learned = math.isfinite(gain) and gain > 0
    intervals = list(task_intervals) if task_intervals is not None else [None] * len(task_gains)
    tasks = sum(1 for g, ci in zip(task_gains, intervals, strict=True) if (ci[0] > 0 if ci is not None else g > 0))
    return {"learned": bool(learned), "tasks_learned": tasks, "tasks": len(task_gains),
            "judged_by": "95% bootstrap interval" if gain_interval is not None else "point estimate"}


def run_uncertainty(columns: Sequence[np.ndarray] | None, matrix: np.ndarray, *, replicates: int = REPLICATES, seed: int = 0) -> dict[str, Any]:
    """Intervals of :data:`INTERVAL_METRICS` and the plasticity verdict for one finished run.

    Args:
        columns: the run's per-example scores of its trained-task columns, ``(T+1, n_c)`` each;
            ``None`` when they are not available (intervals ``None``, verdict on the point estimate).
        matrix: the trained-task accuracy matrix ``(T+1, T)`` (point estimates).

    Returns:
        ``{"intervals": {metric: [low, high] | None}, "plasticity": {...verdict, "rule"}}``.
    """
    n_tasks = matrix.shape[1]
    metrics = {**named_metrics(INTERVAL_METRICS), **task_gain_metrics(n_tasks)}
    if columns is None:
        found: dict[str, tuple[float, float] | None] = dict.fromkeys(metrics)
    else:
        found = bootstrap_intervals([list(columns)], metrics, replicates=replicates, seed=seed)
    intervals = {name: (list(found[name]) if found[name] is not None else None) for name in INTERVAL_METRICS}
    verdict = plasticity_verdict(formulas.plasticity_gain(matrix), found["plasticity_gain"], formulas.plasticity_gains(matrix),
                                 [found[f"gain_task_{i}"] for i in range(1, n_tasks + 1)])
    return {"intervals": intervals, "plasticity": {**verdict, "rule": LEARNED_RULE}}
