"""Field-by-field check of a results file before anything reads it (reports, resume, metrics).

A results file is data from disk: it may be hand-edited, truncated by another tool, written by a
future clbench or simply not a clbench file. :func:`check_results` refuses anything the readers
could trip over, with one line naming the file and the field, so ``clbench report`` never ends in
a traceback (and never writes a half report) because of one bad file.
"""

from __future__ import annotations

import math
from typing import Any

from clbench.errors import ResultsError

STATUSES = ("running", "complete")
# Matrix entries are fractions in [0, 1]; a little slack for float rounding.
SCORE_SLACK = 1e-6


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


class _Checker:
    def __init__(self, file: str, data: dict[str, Any]) -> None:
        self.file = file
        self.data = data

    def fail(self, field: str, problem: str) -> ResultsError:
        return ResultsError(f"{self.file}: field {field!r} {problem}; this is not a usable clbench results file (rerun the run with --overwrite)")

    def table(self, field: str, parent: dict[str, Any], key: str, required: bool = True) -> dict[str, Any]:
        value = parent.get(key, None if required else {})
        if not isinstance(value, dict):
            raise self.fail(field, "is missing" if value is None else f"is {type(value).__name__}, not an object")
        return value

    def text(self, field: str, parent: dict[str, Any], key: str) -> str:
        value = parent.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(field, "is missing or not a non-empty string" if value is None or isinstance(value, str) else f"is {value!r}, not a string")
        return value


def check_results(data: Any, file: str) -> None:
    """Raise :class:`ResultsError` naming the first field of ``data`` a reader could not use.

    Checked: the top-level objects and their types; ``status``; benchmark name, integer version,
    task and probe names; strategy name and config; backbone spec; an integer seed; the matrix
    (row and column labels, one row per task plus row 0, each row ``null`` or a list of scores in
    [0, 1] or ``null``, no ``null`` row once complete); metrics, probes, per-task records and
    telemetry shapes; the budget record, intervals, plasticity verdict, per-example summary and
    KV-cache policy where present (results from before they existed still pass).
    """
    c = _Checker(file, data)
    if data.get("kind", "run") not in ("run", "eval"):
        raise c.fail("kind", f"is {data.get('kind')!r}, not 'run' or 'eval'")
    if data.get("status") not in STATUSES:
        raise c.fail("status", f"is {data.get('status')!r}, not one of {', '.join(STATUSES)}")
    bench = c.table("benchmark", data, "benchmark")
    c.text("benchmark.name", bench, "name")
    if not _is_int(bench.get("version")):
        raise c.fail("benchmark.version", f"is {bench.get('version')!r}, not an integer")
    tasks = bench.get("tasks")
    if not _strings(tasks) or not tasks:
        raise c.fail("benchmark.tasks", "is not a non-empty list of task names")
    probes = bench.get("probes", [])
    if not (_strings(probes) or probes == []):
        raise c.fail("benchmark.probes", "is not a list of probe names")
    for key in ("metrics", "tables"):
        if key in bench and not (_strings(bench[key]) or bench[key] == []):
            raise c.fail(f"benchmark.{key}", "is not a list of names")
    strategy = c.table("strategy", data, "strategy")
    c.text("strategy.name", strategy, "name")
    c.table("strategy.config", strategy, "config")
    backbone = c.table("backbone", data, "backbone")
    c.text("backbone.spec", backbone, "spec")
    if not _is_int(data.get("seed")):
        raise c.fail("seed", f"is {data.get('seed')!r}, not an integer")
    _check_matrix(c, data, len(tasks), len(probes))
    metrics = c.table("metrics", data, "metrics")
    bad = [k for k, v in metrics.items() if v is not None and not _is_number(v)]
    if bad:
        raise c.fail(f"metrics.{bad[0]}", f"is {metrics[bad[0]]!r}, not a number or null")
    for key in ("train", "environment", "probes"):
        c.table(key, data, key, required=False)
    for name, probe in data.get("probes", {}).items():
        if not isinstance(probe, dict) or any(v is not None and not _is_number(v) for v in probe.values()):
            raise c.fail(f"probes.{name}", "is not an object of numbers")
    for key in ("tasks", "telemetry"):
        records = data.get(key, [])
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise c.fail(key, "is not a list of objects (one per task)")
    for t, record in enumerate(data.get("tasks", [])):
        for key in ("train_seconds", "eval_seconds", "peak_memory_mb"):
            if key in record and record[key] is not None and not _is_number(record[key]):
                raise c.fail(f"tasks[{t}].{key}", f"is {record[key]!r}, not a number")
    _check_budget(c, data)
    _check_uncertainty(c, data)
    if "kv_cache" in data:
        kv = c.table("kv_cache", data, "kv_cache")
        c.text("kv_cache.policy", kv, "policy")
    if "identity" in data:  # results written before the run identity was stored have none
        identity = c.table("identity", data, "identity")
        c.text("identity.benchmark.name", c.table("identity.benchmark", identity, "benchmark"), "name")
        c.table("identity.strategy.config", c.table("identity.strategy", identity, "strategy"), "config")
        c.text("identity.backbone", identity, "backbone")
        if not _is_int(identity.get("seed")) or not _is_int(identity["benchmark"].get("version")):
            raise c.fail("identity", "does not hold an integer seed and benchmark version")


def _check_budget(c: _Checker, data: dict[str, Any]) -> None:
    """The ``budget`` record (or, in results written before it existed, ``train``): what the
    report's budget table formats."""
    field = "budget" if "budget" in data else "train"
    record = c.table(field, data, field, required=False)
    if "lr" in record and not _is_number(record["lr"]):
        raise c.fail(f"{field}.lr", f"is {record['lr']!r}, not a number")
    for key in ("epochs", "batch_size", "grad_accum", "examples_per_step"):
        if key in record and not (_is_int(record[key]) and record[key] >= 0):
            raise c.fail(f"{field}.{key}", f"is {record[key]!r}, not a non-negative integer")
    if record.get("iterations") is not None and not (_is_int(record["iterations"]) and record["iterations"] >= 0):
        raise c.fail(f"{field}.iterations", f"is {record['iterations']!r}, not a non-negative integer or null")
    for key in ("optimizer", "scheduler"):
        if key in record and not isinstance(record[key], str):
            raise c.fail(f"{field}.{key}", f"is {record[key]!r}, not a string")
    for key in ("steps_per_task", "planned_steps_per_task"):
        steps = record.get(key, [])
        if not isinstance(steps, list) or not all(_is_int(v) and v >= 0 for v in steps):
            raise c.fail(f"{field}.{key}", "is not a list of step counts")
    overrides = record.get("strategy_overrides", {})
    if not isinstance(overrides, dict) or not all(isinstance(v, dict) and {"benchmark", "run"} <= set(v) for v in overrides.values()):
        raise c.fail(f"{field}.strategy_overrides", "is not an object of {benchmark, run} pairs")


def _check_uncertainty(c: _Checker, data: dict[str, Any]) -> None:
    """``intervals`` ([low, high] or null per metric), the ``plasticity`` verdict and the
    ``examples`` summary (null before the first evaluation)."""
    intervals = c.table("intervals", data, "intervals", required=False)
    for name, pair in intervals.items():
        if pair is not None and not (isinstance(pair, list) and len(pair) == 2 and all(_is_number(v) for v in pair) and pair[0] <= pair[1]):
            raise c.fail(f"intervals.{name}", f"is {pair!r}, not [low, high] or null")
    verdict = c.table("plasticity", data, "plasticity", required=False)
    if verdict:
        if not isinstance(verdict.get("learned"), bool):
            raise c.fail("plasticity.learned", f"is {verdict.get('learned')!r}, not true or false")
        for key in ("tasks_learned", "tasks"):
            if not (_is_int(verdict.get(key)) and verdict[key] >= 0):
                raise c.fail(f"plasticity.{key}", f"is {verdict.get(key)!r}, not a task count")
    if data.get("examples") is not None:
        examples = c.table("examples", data, "examples")
        sizes = examples.get("sizes", [])
        if not isinstance(sizes, list) or not all(_is_int(n) and n >= 0 for n in sizes):
            raise c.fail("examples.sizes", "is not a list of test-set sizes")
        if not (_is_int(examples.get("rows_evaluated")) and examples["rows_evaluated"] >= 0):
            raise c.fail("examples.rows_evaluated", f"is {examples.get('rows_evaluated')!r}, not a row count")


def _check_matrix(c: _Checker, data: dict[str, Any], n_tasks: int, n_probes: int) -> None:
    matrix = c.table("matrix", data, "matrix")
    columns = matrix.get("columns")
    if not _strings(columns) or len(columns) != n_tasks + n_probes:
        raise c.fail("matrix.columns", f"is not a list of {n_tasks + n_probes} column names (the tasks, then the probes)")
    if columns[:n_tasks] != data["benchmark"]["tasks"]:
        raise c.fail("matrix.columns", f"starts with {columns[:n_tasks]}, not the benchmark's tasks {data['benchmark']['tasks']}")
    # An evaluation without training (``clbench eval``, kind "eval") has one row; a run has row 0 and one per task.
    n_rows, what = (1, "the evaluation") if data.get("kind") == "eval" else (n_tasks + 1, "row 0, then one per task")
    rows = matrix.get("rows")
    if not _strings(rows) or len(rows) != n_rows:
        raise c.fail("matrix.rows", f"is not a list of {n_rows} row labels ({what})")
    values = matrix.get("values")
    if not isinstance(values, list) or len(values) != n_rows:
        raise c.fail("matrix.values", f"must have {n_rows} rows ({what})")
    for t, row in enumerate(values):
        if row is None:
            if data["status"] == "complete":
                raise c.fail(f"matrix.values[{t}]", "is null in a complete run")
            continue
        if not isinstance(row, list) or len(row) != len(columns):
            raise c.fail(f"matrix.values[{t}]", f"is not a list of {len(columns)} scores")
        for i, value in enumerate(row):
            if value is None:
                continue
            if not _is_number(value) or not -SCORE_SLACK <= value <= 1 + SCORE_SLACK:
                raise c.fail(f"matrix.values[{t}][{i}]", f"is {value!r}, not a score in [0, 1]")
