"""The results file: a versioned JSON schema, atomic writes and validated reads (no torch).

One run directory per (benchmark, strategy, seed) holds ``results.json``::

    schema            "clbench.results/1"
    kind              "run" (absent in runs) | "eval": one row scored without training (clbench eval),
                      with ``source`` naming the run, export or backbone spec evaluated
    status            "running" | "complete"
    benchmark         {name, version, protocol, backbone, tasks, probes, metrics}
    strategy          {name, package, version, config}
    backbone          {spec, kind, parameters, trainable_parameters}
    seed, train       the run seed and resolved training settings
    budget            steps per task (planned and actual), batch, lr, optimizer, schedule, and the
                      settings the strategy changed from the benchmark's (clbench.budget)
    environment       {python, platform, clbench, torch, device, ...}
    matrix            {rows, columns, task_metrics, values}: values[t][i] = score on column i
                      after training task t (row 0 = before training); rows not yet run are null;
                      columns are the trained tasks, then eval-only probes
    metrics           {name: value} over the trained-task columns (null where undefined), with
                      learning_accuracy (mean R[i][i]) and plasticity_gain (mean R[i][i] - R[0][i])
    intervals         {metric: [low, high]}: 95 % bootstrap intervals over test examples (complete runs)
    plasticity        {learned, tasks_learned, tasks, judged_by, rule}: the "did not learn" verdict
    examples          {file, format, rows_evaluated, sizes, encodings}: per-example scores of every
                      evaluation in ``examples.npz`` beside this file (clbench.example_scores)
    probes            {name: {initial, final, delta}} for eval-only columns
    tasks             per trained task: train_seconds, eval_seconds, steps, final_loss, peak_memory_mb
    telemetry         per trained task: the strategy's numbers after that task
    created, updated  ISO timestamps

Reports and metrics are functions of this file alone.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from clbench import metrics as metric_formulas
from clbench import safeio
from clbench.errors import ResultsError
from clbench.results_check import check_results
from clbench.safeio import make_dirs

SCHEMA = "clbench.results/1"
RESULTS_FILE = "results.json"
REQUIRED_KEYS = ("schema", "status", "benchmark", "strategy", "backbone", "seed", "matrix", "metrics")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` atomically (temp file in the same folder, fsync, rename).

    Raises:
        StorageError: the disk is full or the write failed; ``path`` keeps its old content.
    """
    make_dirs(path.parent)
    safeio.write_json_atomic(path, _json_safe(data))


def _json_safe(value: Any) -> Any:
    """Replace NaN/inf floats by ``None`` (JSON has no NaN) and tuples by lists, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def trained_matrix(results: dict[str, Any]) -> list[list[float]]:
    """The (T+1) x T matrix over trained-task columns, with ``nan`` for rows not yet run."""
    matrix = results["matrix"]
    n_tasks = len(results["benchmark"]["tasks"])
    nan = float("nan")
    return [[nan if v is None else float(v) for v in (row or [None] * len(matrix["columns"]))[:n_tasks]] for row in matrix["values"]]


def compute_run_metrics(results: dict[str, Any]) -> dict[str, float | None]:
    """Every whole-matrix metric of :mod:`clbench.metrics` over the trained-task columns."""
    values = metric_formulas.compute_metrics(trained_matrix(results))
    return {k: (v if v is not None and math.isfinite(v) else None) for k, v in values.items()}


def probe_summary(results: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """For each eval-only probe: score before training, after the last finished task, and delta."""
    matrix = results["matrix"]
    n_tasks = len(results["benchmark"]["tasks"])
    finished = [row for row in matrix["values"] if row is not None]
    summary = {}
    for offset, name in enumerate(results["benchmark"].get("probes", [])):
        column = n_tasks + offset
        initial = finished[0][column] if finished else None
        final = finished[-1][column] if finished else None
        delta = final - initial if initial is not None and final is not None else None
        summary[name] = {"initial": initial, "final": final, "delta": delta}
    return summary


def load_results(path: Path) -> dict[str, Any]:
    """Read and validate a results file (or a run directory holding one).

    Raises:
        ResultsError: unreadable file, wrong schema, missing keys or a field of the wrong type
            or shape (see :mod:`clbench.results_check`), naming the file and the field.
    """
    file = path
    try:
        file = path / RESULTS_FILE if path.is_dir() else path
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsError(f"{file}: no such results file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ResultsError(f"{path}: not a readable results file ({str(exc)[:200]})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ResultsError(f"{file}: schema {found!r} is not {SCHEMA!r}")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ResultsError(f"{file}: missing key(s) {', '.join(missing)}")
    check_results(data, str(file))
    data["_path"] = str(file)
    return data
