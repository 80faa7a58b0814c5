"""Reports from results files alone: forgetting curves, heat maps, tables and telemetry plots.

``build_report(inputs, out, formats, compare)`` (and ``clbench report``) reads ``results.json``
files — given directly, as run directories, or found under folders — groups them by benchmark
version and strategy configuration, aggregates seeds (means with 95 % bootstrap intervals from the
runs' per-example scores, or mean ± std where those are missing), marks strategies that did not
learn, optionally compares every strategy with one named strategy (paired bootstrap), and writes,
per benchmark, PNG and SVG figures plus ``report.md`` and a self-contained ``report.html`` under
``out/<benchmark>/``. It never imports torch and never re-runs anything; resampling is seeded, so
the same inputs give byte-identical files. Every input (results files and their ``examples.npz``)
is read and checked before the first file is written; each file is written atomically, and the
benchmark folder name (read from results files) is sanitised so nothing is written outside ``out``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clbench import metrics as formulas
from clbench.errors import UsageError
from clbench.report.aggregate import BenchmarkGroup, find_results, load_groups
from clbench.report.document import Document, Figure, Heading, Paragraph, render_html, render_markdown
from clbench.report.intervals import StrategyUncertainty, comparison_table, group_uncertainty, reference_label, resolve_label
from clbench.report.tables import budget_table, cost_table, declared_tables, evaluation_table, final_row_table, metrics_table, mtil_table, trace_table
from clbench.results import trained_matrix
from clbench.safeio import check_output_folder, make_dirs, remove_empty_dirs, remove_tree, write_text_atomic
from clbench.validation import confined, safe_folder_name

FORMATS = ("md", "html")

__all__ = ["FORMATS", "build_report", "find_results"]


def _slug(label: str) -> str:
    """A file-name part from a strategy label (``lora@1a2b3c4d``, ``lora rank=4,lr=0.001``)."""
    return "".join(c if c.isalnum() or c in "._" else "-" for c in label)


def _overview_points(group: BenchmarkGroup, found: dict[str, StrategyUncertainty]) -> list[dict[str, object]]:
    """Learning accuracy, forgetting and Last per strategy with their intervals (± std over seeds without them)."""
    points = []
    for label, strategy in group.strategies.items():
        info = found[label]
        point: dict[str, object] = {"label": label, "learned": info.verdict["learned"]}
        for key, metric in (("x", "learning_accuracy"), ("forgetting", "forgetting_chaudhry"), ("last", "last_accuracy")):
            values = [v for v in strategy.metric_values(metric) if np.isfinite(v)]
            mean = float(np.mean(values)) if values else float("nan")
            spread = info.intervals.get(metric)
            if spread is None and len(values) > 1:
                std = float(np.std(values, ddof=1))
                spread = (mean - std, mean + std)
            point[key], point[f"{key}_err"] = mean, spread
        points.append(point)
    return points


def _benchmark_document(group: BenchmarkGroup, folder: Path, found: dict[str, StrategyUncertainty], compare: str | None = None) -> Document:
    from clbench.report.figures import accuracy_heatmap, average_accuracy_curves, forgetting_curves, plasticity_overview
    from clbench.report.telemetry import telemetry_figures

    if not group.strategies:  # only evaluations without training (clbench eval)
        doc = Document(f"clbench report: {group.name} v{group.version}")
        doc.add(Heading(f"{group.name} (benchmark version {group.version})"), Heading("Evaluated without training", 2), evaluation_table(group))
        return doc
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
    doc.add(Heading("Metrics", 2), metrics_table(group, found))
    not_learned = [label for label, info in found.items() if not info.verdict["learned"]]
    if not_learned:
        by_point = [label for label in not_learned if not found[label].available]
        doc.add(Paragraph(f"Did not learn: {', '.join(not_learned)}. The 95% bootstrap interval of the gain over row 0 (mean of R[i][i] − R[0][i]) "
                          "reaches 0" + (f" (for {', '.join(by_point)}, without per-example scores: the point estimate is ≤ 0)" if by_point else "")
                          + ": learning never measurably raised a task above its score before training, so low forgetting here is no "
                          "evidence of keeping anything."))
    missing = [f"{label} ({info.missing})" for label, info in found.items() if not info.available]
    if missing:
        doc.add(Paragraph(f"Intervals unavailable (mean ± std over seeds shown instead) for: {'; '.join(missing)}."))
    any_interval = any(info.available for info in found.values())
    plasticity_overview(_overview_points(group, found), folder / "plasticity-overview",
                        f"{group.name}: who keeps what while still learning")
    doc.add(Figure("plasticity-overview", "Each strategy's learning accuracy (plasticity) against its forgetting (left) and its final accuracy "
                   f"(right); error bars: {'95% bootstrap intervals' if any_interval else 'sample std over seeds'}"
                   f"{' (std over seeds where no per-example scores exist)' if any_interval and missing else ''}; hollow markers: did not learn."))
    if compare is not None:
        reference = reference_label(group, compare)
        doc.add(Heading(f"Paired comparison against {compare}", 2))
        if reference is None:
            doc.add(Paragraph(f"No runs of {compare} on {group.name}; nothing to compare."))
        else:
            doc.add(comparison_table(group, reference, found))
    tables = declared_tables(first)
    if "mtil" in tables:
        doc.add(Heading("MTIL-style table", 2), mtil_table(group))
    if "trace" in tables:
        doc.add(Heading("TRACE-style table", 2), trace_table(group, found))
    doc.add(final_row_table(group))
    if group.evaluations:
        doc.add(Heading("Evaluated without training", 2), evaluation_table(group))

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

    doc.add(Heading("Budget", 2), budget_table(group))
    doc.add(Heading("Runs", 2), cost_table(group))
    for label in labels:
        run = group.strategies[label].runs[0]
        settings = {k: v for k, v in run["strategy"]["config"].items() if v is not None}
        training = ", ".join(f"{k}={v}" for k, v in sorted(run.get("train", {}).items()))
        doc.add(Paragraph(f"{label}: {run['strategy'].get('package')} {run['strategy'].get('version')}; seeds "
                          f"{', '.join(map(str, group.strategies[label].seeds))}; settings `{settings}`; training: {training}."))
    return doc


def build_report(inputs: Sequence[Path | str], out: Path | str = Path("reports"), formats: Sequence[str] = FORMATS,
                 compare: str | None = None) -> list[Path]:
    """Write figures and reports for every benchmark found in ``inputs``; returns the written files.

    Args:
        compare: a strategy (label or name) every other strategy is compared with (paired bootstrap).

    Raises:
        ResultsError: an unreadable, partial or incompatible results file (naming it).
        UsageError: an unknown output format, or a ``compare`` strategy found in no benchmark.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise UsageError(f"unknown report format(s) {', '.join(unknown) or '(none)'}; valid: {', '.join(FORMATS)}")
    check_output_folder(Path(out), "--out")
    groups = load_groups([Path(p) for p in inputs])  # every input is read and checked before anything is written
    written: list[Path] = []
    if compare is not None:
        resolve_label(groups, compare)
    # Per-example scores are inputs too: read (a damaged examples.npz is refused) before any file is written.
    uncertain = [group_uncertainty(group) for group in groups]
    for group, found in zip(groups, uncertain, strict=True):
        # The folder name comes from a results file: sanitised, and checked to stay under --out.
        folder = confined(Path(out), Path(out) / safe_folder_name(group.name), f"report of benchmark {group.name!r}:")
        created = make_dirs(folder)
        before = {p.name for p in folder.iterdir()}
        try:
            doc = _benchmark_document(group, folder, found, compare)
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
