"""Continual-learning metrics as pure functions of an accuracy matrix (numpy only).

An accuracy matrix ``R`` has shape ``(T+1, T)``: row 0 is the model before any training,
row ``t`` is the model after training task ``t`` and column ``i-1`` is task ``i``, so the
paper's ``R[t][i]`` is ``R[t, i-1]`` here. Scores may be fractions or percent; every function
is scale-agnostic. A run in progress stores NaN for missing entries: each function checks only
the entries its formula uses and raises ``ValueError`` if one of them is NaN/inf. Metrics that
need T >= 2 (forgetting, BWT, FWT, transfer) return ``float('nan')`` for T = 1.
Each function's docstring names the paper (or library) whose definition it follows.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np

__all__ = [
    "accuracy_after_step", "accuracy_curve", "average_incremental_accuracy", "last_accuracy",
    "micro_accuracy_after_step", "forgetting_chaudhry", "forgetting_first_minus_last",
    "forgetting_max_clipped", "bwt", "fwt", "mtil_transfer", "mtil_avg", "mtil_last",
    "mtil_per_task", "transfer_row_mean_mammoth", "learning_accuracy", "plasticity_gain", "plasticity_gains",
    "complete_rows", "compute_metrics", "METRICS", "HIGHER_IS_BETTER", "METRIC_INFO", "MetricInfo",
    "metric_label", "metric_short",
]

_NAN = float("nan")


def _as_matrix(R) -> np.ndarray:
    """Converts ``R`` to a float array and checks that its shape is (T+1, T) with T >= 1."""
    try:
        arr = np.asarray(R, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"R must be a rectangular numeric array: {exc}") from None
    if arr.ndim != 2:
        raise ValueError(f"R must be 2-D with shape (T+1, T), got {arr.ndim}-D shape {arr.shape}")
    if arr.shape[1] < 1:
        raise ValueError(f"R must have at least one task column (T >= 1), got shape {arr.shape}")
    if arr.shape[0] != arr.shape[1] + 1:
        T = arr.shape[1]
        raise ValueError(f"R must have shape (T+1, T) = ({T + 1}, {T}), got {arr.shape}")
    return arr


def _finite(values: np.ndarray, what: str) -> np.ndarray:
    """Raises ``ValueError`` naming ``what`` if ``values`` holds NaN or inf."""
    if not np.all(np.isfinite(values)):
        raise ValueError(f"R has NaN/inf in {what}, which this metric uses")
    return values


def _step(arr: np.ndarray, t) -> int:
    T = arr.shape[1]
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 1 <= t <= T:
        raise ValueError(f"t must be an integer in 1..{T}, got {t!r}")
    return int(t)


def complete_rows(R) -> int:
    """Number of leading rows of ``R`` that contain no NaN.

    A run in progress stores NaN for rows not yet evaluated, so rows ``0..k-1`` are complete
    when this returns ``k`` (``T+1`` means finished). Every entry of a row counts, including
    not-yet-trained tasks, so a run that never evaluates future tasks returns 0 or 1.
    """
    arr = _as_matrix(R)
    bad = np.flatnonzero(np.isnan(arr).any(axis=1))
    return int(bad[0]) if bad.size else arr.shape[0]


def accuracy_after_step(R, t: int) -> float:
    """Average accuracy over the tasks seen so far after step ``t``.

    A_t = (1/t) Σ_{i≤t} R[t][i]. Lopez-Paz & Ranzato 2017 (GEM, "ACC" for t = T);
    Chaudhry et al. 2018 (RWalk, "average accuracy").
    """
    arr = _as_matrix(R)
    t = _step(arr, t)
    return float(np.mean(_finite(arr[t, :t], f"row {t}, tasks 1..{t}")))


def accuracy_curve(R) -> list[float]:
    """The curve [A_1, ..., A_T] with A_t = (1/t) Σ_{i≤t} R[t][i] (GEM, Lopez-Paz & Ranzato 2017).

    Uses the lower triangle with its diagonal, so every row 1..T must be filled there.
    """
    arr = _as_matrix(R)
    return [accuracy_after_step(arr, t) for t in range(1, arr.shape[1] + 1)]


def average_incremental_accuracy(R) -> float:
    """Average incremental accuracy Ā = (1/T) Σ_{t=1..T} A_t (Rebuffi et al. 2017, iCaRL)."""
    return float(np.mean(accuracy_curve(R)))


def last_accuracy(R) -> float:
    """Final average accuracy A_T = (1/T) Σ_{i≤T} R[T][i] (GEM "ACC", Lopez-Paz & Ranzato 2017)."""
    arr = _as_matrix(R)
    return accuracy_after_step(arr, arr.shape[1])


def micro_accuracy_after_step(R, t: int, sizes: Sequence[float]) -> float:
    """Sample-weighted accuracy after step ``t``.

    A^micro_t = Σ_{i≤t} n_i R[t][i] / Σ_{i≤t} n_i, where n_i is the size of task i's test set
    (``sizes[i-1]``; length T, or at least t). Renate ``micro_average_accuracy``; equals the
    pooled top-1 accuracy of PyCIL/PILOT (Zhou et al. 2023).
    """
    arr = _as_matrix(R)
    t = _step(arr, t)
    n = np.asarray(sizes, dtype=float)
    if n.ndim != 1 or n.shape[0] < t:
        raise ValueError(f"sizes must be 1-D with at least t={t} entries, got shape {n.shape}")
    n = n[:t]
    if not np.all(np.isfinite(n)) or np.any(n < 0) or n.sum() <= 0:
        raise ValueError(f"sizes[:{t}] must be finite, non-negative and not all zero, got {n.tolist()}")
    return float(np.dot(n, _finite(arr[t, :t], f"row {t}, tasks 1..{t}")) / n.sum())


def _diag_and_last(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R[i][i], R[T][i]) for i = 1..T-1."""
    T = arr.shape[1]
    diag = _finite(np.diagonal(arr[1:T, : T - 1]), "the diagonal R[i][i], i < T")
    last = _finite(arr[T, : T - 1], f"row {T} (final), tasks 1..{T - 1}")
    return diag, last


def forgetting_chaudhry(R) -> float:
    """Average forgetting (Chaudhry et al. 2018, RWalk; Continuum's exact definition).

    F = (1/(T-1)) Σ_{i<T} [max_{l∈[i,T-1]} R[l][i] − R[T][i]]. Can be negative when a task
    improves at the end. NaN for T = 1.
    """
    arr = _as_matrix(R)
    T = arr.shape[1]
    if T < 2:
        return _NAN
    terms = [np.max(_finite(arr[i:T, i - 1], f"task {i}, rows {i}..{T - 1}")) for i in range(1, T)]
    return float(np.mean(np.asarray(terms) - _diag_and_last(arr)[1]))


def forgetting_first_minus_last(R) -> float:
    """Forgetting without a max, as Avalanche computes it (Lomonaco et al. 2021).

    F = (1/(T-1)) Σ_{i<T} (R[i][i] − R[T][i]); equals Avalanche's final ``StreamForgetting``
    and −``bwt``. NaN for T = 1.
    """
    arr = _as_matrix(R)
    if arr.shape[1] < 2:
        return _NAN
    diag, last = _diag_and_last(arr)
    return float(np.mean(diag - last))


def forgetting_max_clipped(R) -> float:
    """Forgetting with the max taken over rows i..T, including T, so each term is ≥ 0.

    F = (1/(T-1)) Σ_{i<T} [max_{l∈[i,T]} R[l][i] − R[T][i]]. Mammoth (Boschini et al. 2022)
    and PILOT (Sun et al. 2023). NaN for T = 1.
    """
    arr = _as_matrix(R)
    T = arr.shape[1]
    if T < 2:
        return _NAN
    last = _diag_and_last(arr)[1]
    terms = [np.max(_finite(arr[i:, i - 1], f"task {i}, rows {i}..{T}")) for i in range(1, T)]
    return float(np.mean(np.asarray(terms) - last))


def bwt(R) -> float:
    """Backward transfer (Lopez-Paz & Ranzato 2017, GEM).

    BWT = (1/(T-1)) Σ_{i<T} (R[T][i] − R[i][i]); equals Avalanche's final ``StreamBWT``.
    NaN for T = 1.
    """
    arr = _as_matrix(R)
    if arr.shape[1] < 2:
        return _NAN
    diag, last = _diag_and_last(arr)
    return float(np.mean(last - diag))


def fwt(R) -> float:
    """Forward transfer (Lopez-Paz & Ranzato 2017, GEM) with b_i = R[0][i] (row 0).

    FWT = (1/(T-1)) Σ_{i=2..T} (R[i-1][i] − R[0][i]). NaN for T = 1.
    """
    arr = _as_matrix(R)
    T = arr.shape[1]
    if T < 2:
        return _NAN
    before = _finite(np.diagonal(arr[1:T, 1:T]), "the superdiagonal R[i-1][i]")
    base = _finite(arr[0, 1:T], "row 0 (before training), tasks 2..T")
    return float(np.mean(before - base))


def mtil_per_task(R) -> dict[str, list[Optional[float]]]:
    """Per-task MTIL Transfer, Avg. and Last (Zheng et al. 2023, ZSCL; ``mtil/results.ipynb``).

    Transfer_i = (1/(i-1)) Σ_{t<i} R[t][i] for i ≥ 2 (None for task 1);
    Avg_i = (1/T) Σ_{t=1..T} R[t][i]; Last_i = R[T][i]. Row 0 is not used.

    Returns:
        ``{"transfer": [...], "avg": [...], "last": [...]}``, one entry per task.
    """
    arr = _as_matrix(R)
    rows = _finite(arr[1:], "rows 1..T")
    T = arr.shape[1]
    transfer: list[Optional[float]] = [None]
    transfer += [float(np.mean(rows[: i - 1, i - 1])) for i in range(2, T + 1)]
    return {"transfer": transfer, "avg": [float(v) for v in rows.mean(axis=0)],
            "last": [float(v) for v in rows[-1]]}


def mtil_transfer(R) -> float:
    """MTIL Transfer (ZSCL, Zheng et al. 2023): mean over i = 2..T of (1/(i-1)) Σ_{t<i} R[t][i].

    Column means of the strict upper triangle of rows 1..T; row 0 is not used. NaN for T = 1.
    """
    arr = _as_matrix(R)
    T = arr.shape[1]
    if T < 2:
        return _NAN
    cols = [np.mean(_finite(arr[1:i, i - 1], f"task {i}, rows 1..{i - 1}")) for i in range(2, T + 1)]
    return float(np.mean(cols))


def mtil_avg(R) -> float:
    """MTIL Avg. (ZSCL, Zheng et al. 2023): (1/T) Σ_i (1/T) Σ_{t=1..T} R[t][i].

    Every row 1..T counts, including rows before task i was learned; row 0 is not used.
    """
    return float(np.mean(mtil_per_task(R)["avg"]))


def mtil_last(R) -> float:
    """MTIL Last (ZSCL, Zheng et al. 2023): (1/T) Σ_i R[T][i], the same number as A_T."""
    arr = _as_matrix(R)
    return float(np.mean(_finite(arr[-1], f"row {arr.shape[1]} (final)")))


def transfer_row_mean_mammoth(R) -> float:
    """Mammoth's "AVG Transfer": (1/(T-1)) Σ_{t=1..T-1} mean_{i>t} R[t][i].

    Averages the strict upper triangle of rows 1..T-1 by row, so it differs from
    ``mtil_transfer`` (by column). Mammoth (Boschini et al. 2022). NaN for T = 1.
    """
    arr = _as_matrix(R)
    T = arr.shape[1]
    if T < 2:
        return _NAN
    rows = [np.mean(_finite(arr[t, t:], f"row {t}, tasks {t + 1}..{T}")) for t in range(1, T)]
    return float(np.mean(rows))


def _diagonal(arr: np.ndarray) -> np.ndarray:
    """R[i][i] for i = 1..T (each task right after it was learned)."""
    T = arr.shape[1]
    return _finite(np.diagonal(arr[1:, :T]), "the diagonal R[i][i]")


def learning_accuracy(R) -> float:
    """Learning accuracy LA = (1/T) Σ_{i=1..T} R[i][i]: each task's score right after learning it.

    Riemer et al. 2019 (MER) call it "learning accuracy"; it measures plasticity, so it belongs
    beside forgetting, which is small both for a method that keeps what it learned and for one
    that never learned anything.
    """
    return float(np.mean(_diagonal(_as_matrix(R))))


def plasticity_gains(R) -> list[float]:
    """Per task, how much learning it moved its score: R[i][i] − R[0][i] for i = 1..T."""
    arr = _as_matrix(R)
    base = _finite(arr[0], "row 0 (before training)")
    return [float(v) for v in _diagonal(arr) - base]


def plasticity_gain(R) -> float:
    """Mean gain of learning over the untrained model: (1/T) Σ_{i=1..T} (R[i][i] − R[0][i]).

    Learning accuracy minus the mean of row 0. Zero (or below) means the diagonal never rose above
    what the model scored before training: the strategy did not learn, whatever its forgetting.
    """
    return float(np.mean(plasticity_gains(R)))


class MetricInfo(NamedTuple):
    """A whole-matrix metric with what readers of its number need to know.

    Attributes:
        fn: the formula, a function of the accuracy matrix.
        higher_is_better: the metric's direction (forgetting is lower-is-better).
        label: its name in report tables and captions.
        short: its column name in the terminal summary ``clbench run`` prints.
        measures_keeping: it measures how much of what was learned is kept (forgetting, BWT); such
            a number means nothing for a run that did not learn, and reports mark it so.
    """

    fn: Callable[[np.ndarray], float]
    higher_is_better: bool
    label: str
    short: str
    measures_keeping: bool = False


METRIC_INFO: dict[str, MetricInfo] = {
    "last_accuracy": MetricInfo(last_accuracy, True, "Last", "last"),
    "average_incremental_accuracy": MetricInfo(average_incremental_accuracy, True, "Avg. incr.", "avg-inc"),
    "forgetting_chaudhry": MetricInfo(forgetting_chaudhry, False, "Forgetting", "forget", measures_keeping=True),
    "forgetting_first_minus_last": MetricInfo(forgetting_first_minus_last, False, "Forgetting (first−last)", "forget-fl",
                                              measures_keeping=True),
    "forgetting_max_clipped": MetricInfo(forgetting_max_clipped, False, "Forgetting (clipped)", "forget-clip", measures_keeping=True),
    "bwt": MetricInfo(bwt, True, "BWT", "bwt", measures_keeping=True),
    "fwt": MetricInfo(fwt, True, "FWT", "fwt"),
    "mtil_transfer": MetricInfo(mtil_transfer, True, "Transfer", "transfer"),
    "mtil_avg": MetricInfo(mtil_avg, True, "Avg.", "mtil-avg"),
    "mtil_last": MetricInfo(mtil_last, True, "Last", "mtil-last"),
    "transfer_row_mean_mammoth": MetricInfo(transfer_row_mean_mammoth, True, "Transfer (Mammoth)", "transfer-mammoth"),
    "learning_accuracy": MetricInfo(learning_accuracy, True, "Learning acc.", "learn"),
    "plasticity_gain": MetricInfo(plasticity_gain, True, "Gain over row 0", "gain"),
}
"""Every whole-matrix scalar metric by name, with its direction and display names."""

METRICS: dict[str, Callable[[np.ndarray], float]] = {name: info.fn for name, info in METRIC_INFO.items()}
"""Whole-matrix scalar metrics by name (the formulas of :data:`METRIC_INFO`)."""

HIGHER_IS_BETTER: dict[str, bool] = {name: info.higher_is_better for name, info in METRIC_INFO.items()}
"""Direction of each metric in ``METRICS``."""


def metric_label(name: str) -> str:
    """A metric's report label (the name itself for a metric this module does not define)."""
    info = METRIC_INFO.get(name)
    return info.label if info else name


def metric_short(name: str) -> str:
    """A metric's terminal-summary column name (the name itself for an unknown metric)."""
    info = METRIC_INFO.get(name)
    return info.short if info else name


def compute_metrics(R, names: Optional[Sequence[str]] = None) -> dict[str, float]:
    """Computes the named metrics of ``METRICS`` (all when ``names`` is None).

    Undefined values (T = 1 for the T ≥ 2 metrics) stay ``float('nan')``; the caller decides
    how to serialise them (JSON has no NaN).

    Raises:
        ValueError: on an unknown name or an invalid matrix.
    """
    if isinstance(names, str):
        names = [names]
    selected = list(METRICS) if names is None else list(names)
    unknown = [n for n in selected if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric name(s) {unknown}; known: {sorted(METRICS)}")
    arr = _as_matrix(R)
    return {n: METRICS[n](arr) for n in selected}
