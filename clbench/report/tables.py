"""Report tables: per-strategy metrics, MTIL-style Transfer/Avg/Last, TRACE-style OP/BWT, budget, cost.

Metric cells are a mean over seeds with its 95 % bootstrap interval (``mean [low, high]``, test
examples and seeds resampled, :mod:`clbench.report.intervals`), or, for results without
per-example scores, with the sample standard deviation over seeds (``mean ± std``). The seed count
is a column, so a single-seed number is never mistaken for an average, and plasticity (learning
accuracy, its gain over row 0 and the "did not learn" verdict) sits beside forgetting in every
metric table.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clbench import budget as budgets
from clbench import metrics as formulas
from clbench.report.aggregate import BenchmarkGroup, mean_std
from clbench.report.document import Table
from clbench.report.intervals import StrategyUncertainty, learned_cell, metric_cell
from clbench.results import trained_matrix

HEADLINE = ("last_accuracy", "average_incremental_accuracy", "learning_accuracy", "plasticity_gain", "forgetting_chaudhry", "bwt", "fwt")
NOT_LEARNED_MARK = " †"
MTIL_METRICS = ("mtil_transfer", "mtil_avg", "mtil_last")


def declared_tables(results: dict[str, Any]) -> list[str]:
    """Table styles a benchmark asks for: its ``tables`` list, plus ``mtil`` when it reports MTIL metrics."""
    bench = results["benchmark"]
    tables = list(bench.get("tables") or [])
    if "mtil" not in tables and set(MTIL_METRICS) & set(bench.get("metrics") or []):
        tables.append("mtil")
    return tables


def metrics_table(group: BenchmarkGroup, found: dict[str, StrategyUncertainty]) -> Table:
    """One row per strategy: seeds, the standard metrics with plasticity and its verdict beside forgetting, probe deltas."""
    first = group.first
    names = list(HEADLINE) + [m for m in first["benchmark"].get("metrics", []) if m not in HEADLINE and m in formulas.METRICS]
    probes = first["benchmark"].get("probes", [])
    at = names.index("forgetting_chaudhry")
    header = ("strategy", "seeds", *(formulas.metric_label(m) for m in names[:at]), "learned", *(formulas.metric_label(m) for m in names[at:]),
              *(f"{p} Δ" for p in probes))
    rows = []
    for label, strategy in group.strategies.items():
        info = found[label]
        cells = [metric_cell(strategy.metric_values(m), info.intervals.get(m)) for m in names]
        if not info.verdict["learned"]:  # forgetting of a strategy that did not learn means nothing
            cells = [c + NOT_LEARNED_MARK if formulas.METRIC_INFO[m].measures_keeping else c for c, m in zip(cells, names, strict=True)]
        deltas = [mean_std([r["probes"].get(p, {}).get("delta") for r in strategy.runs]) for p in probes]
        rows.append((label, str(len(strategy.runs)), *cells[:at], learned_cell(info.verdict), *cells[at:], *deltas))
    caption = ("Scores in %: mean over seeds [95% bootstrap interval, test examples and seeds resampled] (mean ± sample std over seeds where "
               "no per-example scores exist). Last = A_T; Avg. incr. = mean of A_t; Learning acc. = mean of R[i][i], each task right after "
               "learning it; Gain over row 0 = mean of R[i][i] − R[0][i]; Forgetting = Chaudhry et al. 2018; BWT and FWT as in GEM with "
               "b_i = row 0. learned: tasks whose own gain's interval is above 0; did not learn = the interval of the gain over row 0 "
               "reaches 0 (point estimate ≤ 0 without per-example scores); † = forgetting or BWT of a strategy that did not learn, "
               "which says nothing about keeping what was learned.")
    return Table(header, tuple(rows), caption)


def mtil_table(group: BenchmarkGroup) -> Table:
    """Transfer / Avg. / Last rows per strategy, one column per task plus the average (ZSCL's layout)."""
    first = group.first
    tasks = list(first["benchmark"]["tasks"])
    rows = []
    for label, strategy in group.strategies.items():
        per_run = [formulas.mtil_per_task(trained_matrix(r)) for r in strategy.runs]
        for key, title, metric in (("transfer", "Transfer", "mtil_transfer"), ("avg", "Avg.", "mtil_avg"), ("last", "Last", "mtil_last")):
            cells = []
            for i in range(len(tasks)):
                values = [p[key][i] for p in per_run]
                cells.append("–" if all(v is None for v in values) else mean_std(values, digits=1))
            rows.append((f"{label} {title}", *cells, mean_std(strategy.metric_values(metric), digits=1)))
        diagonals = [list(np.diagonal(np.asarray(trained_matrix(r))[1:])) for r in strategy.runs]
        rows.append((f"{label} Learning", *(mean_std([d[i] for d in diagonals], digits=1) for i in range(len(tasks))),
                     mean_std(strategy.metric_values("learning_accuracy"), digits=1)))
    caption = ("MTIL-style table (ZSCL): Transfer = mean of each column's strict upper triangle (zero-shot on tasks not yet learned), "
               "Avg. = mean of each column over all rows after training, Last = final row, Learning = each task right after learning it "
               "(R[i][i], the plasticity the other rows should be read against). In %, mean over seeds.")
    return Table(("method", *tasks, "Average"), tuple(rows), caption)


def trace_table(group: BenchmarkGroup, found: dict[str, StrategyUncertainty]) -> Table:
    """OP and BWT per strategy as TRACE reports them, forgetting as a positive number, and plasticity beside them."""
    rows = []
    for label, strategy in group.strategies.items():
        bwt = strategy.metric_values("bwt")
        info = found[label]
        mark = "" if info.verdict["learned"] else NOT_LEARNED_MARK
        rows.append((label, str(len(strategy.runs)), mean_std(strategy.metric_values("last_accuracy")),
                     mean_std(strategy.metric_values("learning_accuracy")), learned_cell(info.verdict), mean_std(bwt) + mark,
                     mean_std([-v for v in bwt]) + mark))
    caption = ("TRACE-style table: OP = mean final score over tasks (A_T); Learning acc. = mean score right after learning each task; "
               "BWT as in GEM (negative = forgetting); the MoRAM and CoDyRA pages print −BWT as a positive forgetting number "
               "(lower is better). Mean ± std over seeds; † = the strategy did not learn, so its BWT says nothing about keeping.")
    return Table(("strategy", "seeds", "OP", "Learning acc.", "learned", "BWT", "−BWT (forgetting)"), tuple(rows), caption)


def final_row_table(group: BenchmarkGroup) -> Table:
    """Row 0 and the final row per task (and probe) for each strategy: where the numbers come from."""
    columns = list(group.first["matrix"]["columns"])
    rows = []
    for label, strategy in group.strategies.items():
        mean = strategy.mean_matrix()
        n_tasks = mean.shape[0] - 1
        learned = [mean[i + 1, i] if i < n_tasks else np.nan for i in range(mean.shape[1])]
        rows.append((f"{label} (row 0)", *(f"{100 * v:.1f}" if np.isfinite(v) else "–" for v in mean[0])))
        rows.append((f"{label} (just learned)", *(f"{100 * v:.1f}" if np.isfinite(v) else "–" for v in learned)))
        rows.append((f"{label} (final)", *(f"{100 * v:.1f}" if np.isfinite(v) else "–" for v in mean[-1])))
    return Table(("strategy", *columns), tuple(rows), "Per-task scores before training (row 0), right after learning the task (R[i][i]) "
                 "and after the last task, in %, mean over seeds.")


def budget_table(group: BenchmarkGroup) -> Table:
    """Steps, batch, learning rate, optimizer and schedule per task for each strategy (first seed's record)."""
    rows = []
    for label, strategy in group.strategies.items():
        run = strategy.runs[0]
        record = run.get("budget") or _legacy_budget(run)
        steps = record.get("steps_per_task") or record.get("planned_steps_per_task") or []
        changed = record.get("strategy_overrides") or {}
        rows.append((label, ", ".join(map(str, steps)) or "–", str(record.get("batch_size", "–")), f"{record['lr']:g}" if "lr" in record else "–",
                     str(record.get("optimizer", "–")), str(record.get("scheduler", "–")),
                     f"{record['iterations']} iterations" if record.get("iterations") is not None else f"{record.get('epochs', '–')} epochs",
                     ", ".join(f"{k} {v['benchmark']}→{v['run']}" for k, v in changed.items()) or "none"))
    return Table(("strategy", "steps per task", "batch", "lr", "optimizer", "schedule", "budget", "changed from the benchmark's"), tuple(rows),
                 "Training budget as each run recorded it: optimizer steps taken on each task, examples per step, peak learning rate; "
                 "strategies may override the benchmark's defaults (last column).")


def _legacy_budget(run: dict[str, Any]) -> dict[str, Any]:
    """A budget record rebuilt from ``train`` and per-task steps (results written before ``budget`` existed)."""
    train = dict(run.get("train") or {})
    record = {k: train[k] for k in budgets.BUDGET_KEYS if k in train}
    record["steps_per_task"] = [t.get("steps", 0) for t in run.get("tasks", [])]
    return record


def cost_table(group: BenchmarkGroup) -> Table:
    """Training and evaluation time and peak memory per strategy (mean over seeds)."""
    rows = []
    for label, strategy in group.strategies.items():
        train = [sum(t.get("train_seconds", 0.0) for t in r.get("tasks", [])) for r in strategy.runs]
        evals = [sum(t.get("eval_seconds", 0.0) for t in r.get("tasks", [])) for r in strategy.runs]
        memory = [max((t.get("peak_memory_mb", 0.0) for t in r.get("tasks", [])), default=0.0) for r in strategy.runs]
        params = strategy.runs[0]["backbone"].get("trainable_parameters")
        rows.append((label, mean_std(train, scale=1, digits=1), mean_std(evals, scale=1, digits=1), mean_std(memory, scale=1, digits=0),
                     f"{params:,}" if isinstance(params, int) else "–"))
    device = group.first.get("environment", {}).get("device", "?")
    return Table(("strategy", "train s", "eval s", "peak MB", "trainable params at start"), tuple(rows),
                 f"Cost per run on {device} (train and eval seconds summed over tasks; peak memory as the run recorded it).")


def evaluation_table(group: BenchmarkGroup) -> Table:
    """One row per ``clbench eval`` result: the model evaluated and its score on every column."""
    columns = list(group.evaluations[0]["matrix"]["columns"])
    rows = []
    for data in group.evaluations:
        source = data.get("source", {})
        what = source.get("path") or source.get("spec") or data["strategy"]["name"]
        if source.get("type") == "run":
            what = f"{source.get('strategy')} run on {source.get('benchmark')} (seed {source.get('seed')}): {what}"
        rows.append((what, data["backbone"]["spec"], *(f"{100 * v:.1f}" if v is not None else "–" for v in data["matrix"]["values"][0])))
    return Table(("model", "backbone", *columns), tuple(rows), "Scores (in %) of models evaluated on this benchmark without training "
                 "(clbench eval): a finished run's final model, an export or a backbone as it loads.")
