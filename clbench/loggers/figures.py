"""The report figures of one finished run, drawn for the loggers to attach as artifacts.

The same figures ``clbench report`` draws for a benchmark (:mod:`clbench.report.figures`), for
this run alone: the accuracy matrix as a heat map and the forgetting curves. They are written to
``RUN_DIR/figures`` (PNG and SVG) and kept there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

FOLDER = "figures"


def run_figures(results: dict[str, Any], run_dir: Path) -> list[Path]:
    """Draw the run's figures; returns the written files (PNG first, then SVG)."""
    from clbench.report.figures import accuracy_heatmap, forgetting_curves

    matrix = results["matrix"]
    values = np.array([[np.nan if v is None else v for v in row] for row in matrix["values"]], dtype=float)
    columns = list(matrix["columns"])
    n_tasks = len(matrix["rows"]) - 1
    label = f"{results['strategy']['name']} seed {results['seed']}"
    folder = run_dir / FOLDER
    written = accuracy_heatmap(values, list(matrix["rows"]), columns, folder / "accuracy-matrix", f"{results['benchmark']['name']}: {label}")
    written += forgetting_curves([(label, values)], columns, n_tasks, folder / "forgetting-curves", f"{results['benchmark']['name']}: {label}")
    return sorted(written, key=lambda p: (p.suffix != ".png", p.name))
