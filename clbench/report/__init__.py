"""Reports from results files alone: forgetting curves, heat maps, tables and telemetry plots.

``build_report(inputs, out, formats)`` (and ``clbench report``) reads ``results.json`` files —
given directly, as run directories, or found under folders — groups them by benchmark version
and strategy configuration, aggregates seeds (mean ± std) and writes, per benchmark, PNG and
SVG figures plus ``report.md`` and a self-contained ``report.html`` under ``out/<benchmark>/``.
It never imports torch and never re-runs anything; the same inputs give byte-identical files.
Every input is read and checked before the first file is written; each file is written
atomically, and the benchmark folder name (read from results files) is sanitised so nothing is
written outside ``out``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clbench import metrics as formulas
from clbench.errors import UsageError
from clbench.report.aggregate import BenchmarkGroup, find_results, load_groups
from clbench.report.document import Document, Figure, Heading, Paragraph, render_html, render_markdown
from clbench.report.tables import cost_table, declared_tables, final_row_table, metrics_table, mtil_table, trace_table
from clbench.results import trained_matrix
from clbench.safeio import check_output_folder, make_dirs, remove_empty_dirs, remove_tree, write_text_atomic
from clbench.validation import confined, safe_folder_name

FORMATS = ("md", "html")

__all__ = ["FORMATS", "build_report", "find_results"]


def _slug(label: str) -> str:
    return label.replace("@", "-").replace("/", "-").replace(":", "-")


def _benchmark_document(group: BenchmarkGroup, folder: Path) -> Document:
    from clbench.report.figures import accuracy_heatmap, average_accuracy_curves, forgetting_curves
    from clbench.report.telemetry import telemetry_figures

    first = group.first
    columns = first["matrix"]["columns"]
    rows = first["matrix"]["rows"]
    n_tasks = len(first["benchmark"]["tasks"])
    row0 = "init" if first["backbone"].get("kind") == "classic" else "zero-shot"
    labels = list(group.strategies)
    doc = Document(f"clbench report: {group.name} v{group.version}")
    doc.add(Heading(f"{group.name} (benchmark version {group.version})"),
            Paragraph(f"Protocol: {first['benchmark']['protocol']}; {n_tasks} tasks; backbone `{first['backbone']['spec']}`; "
                      f"strategies: {', '.join(labels)}. Row 0 is the model before any training ({row0})."))
    for note in group.notes:
        doc.add(Paragraph(f"Note: {note}"))
    doc.add(Heading("Metrics", 2), metrics_table(group))
    tables = declared_tables(first)
    if "mtil" in tables:
        doc.add(Heading("MTIL-style table", 2), mtil_table(group))
    if "trace" in tables:
        doc.add(Heading("TRACE-style table", 2), trace_table(group))
    doc.add(final_row_table(group))

    forgetting_curves([(label, group.strategies[label].mean_matrix()) for label in labels], columns, n_tasks, folder / "forgetting-curves",
                      f"{group.name} v{group.version}: accuracy on each task as tasks are learned", row0_label=row0)
    curves = []
    for label in labels:
        per_seed = [formulas.accuracy_curve(trained_matrix(r)) for r in group.strategies[label].runs]
        start = float(np.mean([np.mean(trained_matrix(r)[0]) for r in group.strategies[label].runs]))
        curves.append((label, list(np.mean(per_seed, axis=0)), start))
    average_accuracy_curves(curves, n_tasks, folder / "average-accuracy", f"{group.name}: mean accuracy over the tasks seen so far", row0)
    doc.add(Heading("Forgetting curves", 2),
            Figure("forgetting-curves", "Accuracy on each task (lines) after each task is learned; hollow markers are row 0, probes dotted grey."),
            Figure("average-accuracy", "A_t, the mean accuracy over tasks 1..t after learning task t, per strategy; hollow markers: row 0."))

    doc.add(Heading("Accuracy matrices", 2))
    for label in labels:
        strategy = group.strategies[label]
        stem = f"matrix-{_slug(label)}"
        accuracy_heatmap(strategy.mean_matrix(), rows, columns, folder / stem, f"{group.name}: {label} (mean of {len(strategy.runs)} seed(s))")
        doc.add(Figure(stem, f"{label}: accuracy matrix (row t = after training task t), mean over seeds {', '.join(map(str, strategy.seeds))}."))

    telemetry = telemetry_figures(group, folder)
    if telemetry:
        doc.add(Heading("Strategy telemetry", 2))
        doc.add(*(Figure(stem, caption) for stem, caption in telemetry))

    doc.add(Heading("Runs", 2), cost_table(group))
    for label in labels:
        run = group.strategies[label].runs[0]
        settings = {k: v for k, v in run["strategy"]["config"].items() if v is not None}
        training = ", ".join(f"{k}={v}" for k, v in sorted(run.get("train", {}).items()))
        doc.add(Paragraph(f"{label}: {run['strategy'].get('package')} {run['strategy'].get('version')}; seeds "
                          f"{', '.join(map(str, group.strategies[label].seeds))}; settings `{settings}`; training: {training}."))
    return doc


def build_report(inputs: Sequence[Path | str], out: Path | str = Path("reports"), formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write figures and reports for every benchmark found in ``inputs``; returns the written files.

    Raises:
        ResultsError: an unreadable, partial or incompatible results file (naming it).
        UsageError: an unknown output format.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise UsageError(f"unknown report format(s) {', '.join(unknown) or '(none)'}; valid: {', '.join(FORMATS)}")
    check_output_folder(Path(out), "--out")
    groups = load_groups([Path(p) for p in inputs])  # every input is read and checked before anything is written
    written: list[Path] = []
    for group in groups:
        # The folder name comes from a results file: sanitised, and checked to stay under --out.
        folder = confined(Path(out), Path(out) / safe_folder_name(group.name), f"report of benchmark {group.name!r}:")
        created = make_dirs(folder)
        before = {p.name for p in folder.iterdir()}
        try:
            doc = _benchmark_document(group, folder)
            if "md" in formats:
                write_text_atomic(folder / "report.md", render_markdown(doc))
            if "html" in formats:
                write_text_atomic(folder / "report.html", render_html(doc, folder))
        except BaseException:  # a failed report leaves no new file behind (rewritten ones are atomic)
            for path in folder.iterdir():
                if path.name not in before:
                    remove_tree(path)
            remove_empty_dirs(created)
            raise
        written += sorted(p for p in folder.iterdir() if p.suffix in {".png", ".svg", ".md", ".html"})
    return written
