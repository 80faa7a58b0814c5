"""Report tables: per-strategy metrics, MTIL-style Transfer/Avg/Last, TRACE-style OP/BWT, cost.

Every cell is a mean over seeds with its sample standard deviation (``mean ± std``) and the seed
count is a column, so a single-seed number is never mistaken for an average.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clbench import metrics as formulas
from clbench.report.aggregate import BenchmarkGroup, mean_std
from clbench.report.document import Table
from clbench.results import trained_matrix

HEADLINE = ("last_accuracy", "average_incremental_accuracy", "forgetting_chaudhry", "bwt", "fwt")
SHORT = {
    "last_accuracy": "Last", "average_incremental_accuracy": "Avg. incr.", "forgetting_chaudhry": "Forgetting",
    "forgetting_first_minus_last": "Forgetting (first−last)", "forgetting_max_clipped": "Forgetting (clipped)",
    "bwt": "BWT", "fwt": "FWT", "mtil_transfer": "Transfer", "mtil_avg": "Avg.", "mtil_last": "Last",
    "transfer_row_mean_mammoth": "Transfer (Mammoth)",
}
MTIL_METRICS = ("mtil_transfer", "mtil_avg", "mtil_last")


def declared_tables(results: dict[str, Any]) -> list[str]:
    """Table styles a benchmark asks for: its ``tables`` list, plus ``mtil`` when it reports MTIL metrics."""
    bench = results["benchmark"]
    tables = list(bench.get("tables") or [])
    if "mtil" not in tables and set(MTIL_METRICS) & set(bench.get("metrics") or []):
        tables.append("mtil")
    return tables


def metrics_table(group: BenchmarkGroup) -> Table:
    """One row per strategy: seeds, the standard metrics (and the benchmark's headline ones), probe deltas."""
    first = group.first
    names = list(HEADLINE) + [m for m in first["benchmark"].get("metrics", []) if m not in HEADLINE and m in formulas.METRICS]
    probes = first["benchmark"].get("probes", [])
    header = ("strategy", "seeds", *(SHORT.get(m, m) for m in names), *(f"{p} Δ" for p in probes))
    rows = []
    for label, strategy in group.strategies.items():
        cells = [mean_std(strategy.metric_values(m)) for m in names]
        deltas = [mean_std([r["probes"].get(p, {}).get("delta") for r in strategy.runs]) for p in probes]
        rows.append((label, str(len(strategy.runs)), *cells, *deltas))
    caption = ("Scores in %, mean ± sample std over seeds. Last = A_T; Avg. incr. = mean of A_t; Forgetting = Chaudhry et al. 2018; "
               "BWT and FWT as in GEM with b_i = row 0 (before training).")
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
    caption = ("MTIL-style table (ZSCL): Transfer = mean of each column's strict upper triangle (zero-shot on tasks not yet learned), "
               "Avg. = mean of each column over all rows after training, Last = final row. In %, mean over seeds.")
    return Table(("method", *tasks, "Average"), tuple(rows), caption)


def trace_table(group: BenchmarkGroup) -> Table:
    """OP and BWT per strategy as TRACE reports them, plus forgetting printed as a positive number."""
    rows = []
    for label, strategy in group.strategies.items():
        bwt = strategy.metric_values("bwt")
        rows.append((label, str(len(strategy.runs)), mean_std(strategy.metric_values("last_accuracy")), mean_std(bwt),
                     mean_std([-v for v in bwt])))
    caption = ("TRACE-style table: OP = mean final score over tasks (A_T); BWT as in GEM (negative = forgetting); "
               "the MoRAM and CoDyRA pages print −BWT as a positive forgetting number (lower is better).")
    return Table(("strategy", "seeds", "OP", "BWT", "−BWT (forgetting)"), tuple(rows), caption)


def final_row_table(group: BenchmarkGroup) -> Table:
    """Row 0 and the final row per task (and probe) for each strategy: where the numbers come from."""
    columns = list(group.first["matrix"]["columns"])
    rows = []
    for label, strategy in group.strategies.items():
        mean = strategy.mean_matrix()
        rows.append((f"{label} (row 0)", *(f"{100 * v:.1f}" if np.isfinite(v) else "–" for v in mean[0])))
        rows.append((f"{label} (final)", *(f"{100 * v:.1f}" if np.isfinite(v) else "–" for v in mean[-1])))
    return Table(("strategy", *columns), tuple(rows), "Per-task scores before training (row 0) and after the last task, in %, mean over seeds.")


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
